"""gguflite: a strict, fast GGUF reader, writer and editor in pure Python + numpy."""
from .errors import *  # noqa: F401,F403  (the exception hierarchy is part of the API)
from .reader import Field, GGUFFile, NestedArray, StringArray, TensorInfo, open, validate  # noqa: F401,A004
from .types import GGMLType, TYPE_TRAITS, ValueType  # noqa: F401
from .writer import GGUFWriter, infer_type  # noqa: F401
from .edit import Editor  # noqa: F401
from .split import SplitModel, merge_files, split_file  # noqa: F401

__version__ = "0.1.0"

# ``from gguflite import *`` leaves out ``open`` so that it cannot shadow the builtin.
__all__ = [
    "GGUFFile", "Field", "TensorInfo", "StringArray", "NestedArray", "validate", "GGUFWriter", "infer_type", "Editor",
    "SplitModel", "split_file", "merge_files", "GGMLType", "TYPE_TRAITS", "ValueType",
    "GGUFError", "TruncatedFile", "BadMagic", "BadVersion", "BadValue", "DuplicateKey", "BadAlignment",
    "BadTensorInfo", "DuplicateTensor", "TensorOutOfBounds", "BadSplit", "WriteError", "CheckpointError",
]
