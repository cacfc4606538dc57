"""gguflite: a strict, fast GGUF reader, writer and editor in pure Python + numpy."""
from .errors import *  # noqa: F401,F403  (the exception hierarchy is part of the API)
from .reader import Field, GGUFFile, StringArray, TensorInfo, open, validate  # noqa: F401,A004
from .types import GGMLType, TYPE_TRAITS, ValueType  # noqa: F401
from .writer import GGUFWriter, infer_type  # noqa: F401
from .edit import Editor  # noqa: F401
from .split import SplitModel, merge_files, split_file  # noqa: F401

__version__ = "0.1.0"
