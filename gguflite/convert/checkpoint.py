"""One view over a checkpoint folder, whatever its weight format:
``Checkpoint(folder)`` → ``.tensors`` (name → lazy tensor with ``name``, ``shape``,
``dtype``, ``load()`` (a read-only view over the memory-mapped file) and ``release()`` (drop
its pages from the process's resident set once used; the page cache keeps them)),
``.config`` (config.json), ``.files`` (the weight files read).

Which files hold the weights, in order of preference:

- ``model.safetensors.index.json`` (``weight_map``: name → shard) or ``model.safetensors``
- ``pytorch_model.bin.index.json`` or ``pytorch_model.bin``

Shard names in an index must be plain file names inside the folder; a shard that is
missing, a tensor the index promises but the shard lacks, or a tensor in two shards is a
``CheckpointError``.  Nothing is ever opened for writing.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..errors import CheckpointError
from .safetensors import SafetensorsFile
from .torchbin import TorchBinFile

FORMATS = (
    ("model.safetensors.index.json", "model.safetensors", SafetensorsFile),
    ("pytorch_model.bin.index.json", "pytorch_model.bin", TorchBinFile),
)


def read_json(path) -> dict:
    """A JSON object from ``path``, or a CheckpointError naming the file."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError("file not found", path=path) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"not valid JSON: {e}", path=path) from None
    if not isinstance(obj, dict):
        raise CheckpointError("expected a JSON object", path=path)
    return obj


class Checkpoint:
    """The weights and config of one Hugging Face style model folder."""

    def __init__(self, folder, *, need_config: bool = True):
        self.folder = os.fspath(folder)
        if not os.path.isdir(self.folder):
            raise CheckpointError("not a directory", path=self.folder)
        cfg = os.path.join(self.folder, "config.json")
        self.config = read_json(cfg) if need_config or os.path.exists(cfg) else {}
        self._open_files = []
        self.tensors: dict = {}
        for index_name, single_name, cls in FORMATS:
            index = os.path.join(self.folder, index_name)
            single = os.path.join(self.folder, single_name)
            if os.path.exists(index):
                self._load_index(index, cls)
                break
            if os.path.exists(single):
                self._add(cls, single, expect=None)
                break
        else:
            raise CheckpointError(
                "no weights found (model.safetensors[.index.json] or pytorch_model.bin[.index.json])",
                path=self.folder)

    @property
    def files(self) -> list[str]:
        return [f.path for f in self._open_files]

    def _load_index(self, index_path, cls):
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError("index has no weight_map", path=index_path, key="weight_map")
        by_shard: dict[str, set] = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or os.path.basename(shard) != shard or shard in ("", ".", ".."):
                raise CheckpointError(f"shard {shard!r} is not a plain file name", path=index_path, tensor=name)
            by_shard.setdefault(shard, set()).add(name)
        for shard in sorted(by_shard):
            path = os.path.join(self.folder, shard)
            if not os.path.isfile(path):
                raise CheckpointError(f"shard {shard} listed in {os.path.basename(index_path)} is missing", path=path)
        for shard in sorted(by_shard):
            self._add(cls, os.path.join(self.folder, shard), expect=by_shard[shard])

    def _add(self, cls, path, expect):
        f = cls(path)
        self._open_files.append(f)
        if expect is not None:
            missing = expect - set(f.tensors)
            if missing:
                raise CheckpointError(f"index promises {sorted(missing)[:5]} but the shard lacks them", path=path)
        for name, t in f.tensors.items():
            if name in self.tensors:
                raise CheckpointError("tensor appears in two shards", path=path, tensor=name)
            self.tensors[name] = t

    def close(self):
        for f in self._open_files:
            f.close()
        self._open_files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def as_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    """A float32 copy of a loaded tensor; ``dtype`` is its checkpoint dtype ("BF16" arrays
    hold raw bits and are widened by a 16-bit shift)."""
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    if dtype not in ("F32", "F16", "F64"):
        raise CheckpointError(f"expected a floating-point tensor, got {dtype}")
    return np.asarray(array, dtype=np.float32).copy() if array.dtype == np.float32 else array.astype(np.float32)
