"""A strict, lazy safetensors reader (no dependency on the ``safetensors`` package).

File layout: ``u64 little-endian N`` | ``N bytes of JSON header`` | byte buffer.  The header
maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the byte buffer) plus an optional ``"__metadata__"`` dict of strings.

One validation pass (after safetensors' ``Metadata::validate``), all in Python ints: the
header size is capped and inside the file, the JSON is an object without duplicate names,
every dtype is known, shapes are lists of non-negative ints, ``end - begin`` equals the
element count times the item size, and the sorted ranges tile the buffer exactly from 0 to
its end (no gaps, no overlaps, nothing past the file).  The file is memory-mapped read-only;
``load()`` returns a zero-copy read-only numpy view.  BF16 has no numpy dtype and comes back
as raw ``uint16`` bits (``CheckpointTensor.dtype`` says "BF16").
"""
from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError

MAX_HEADER_SIZE = 100_000_000  # safetensors' own cap

# safetensors dtype -> numpy dtype of one element (BF16 as raw bits)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
}


@dataclass(frozen=True)
class SafetensorsTensor:
    """One tensor of an open safetensors file; ``load()`` maps nothing new, it slices."""

    name: str
    dtype: str  # safetensors name: "F16", "BF16", ...
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    nbytes: int
    _file: "SafetensorsFile"

    def load(self) -> np.ndarray:
        return self._file._view(self)


class SafetensorsFile:
    """``SafetensorsFile(path)``: ``.tensors`` (name -> SafetensorsTensor), ``.metadata``."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise CheckpointError(f"not a safetensors file: {size} bytes", path=self.path, offset=0)
            n = int.from_bytes(f.read(8), "little")
            if n > MAX_HEADER_SIZE:
                raise CheckpointError(f"header size {n} exceeds the {MAX_HEADER_SIZE} cap", path=self.path, offset=0)
            if 8 + n > size:
                raise CheckpointError(f"header size {n} runs past the end of the {size}-byte file", path=self.path, offset=0)
            raw = f.read(n)
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        self.data_start = 8 + n
        self.size = size
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError) as e:
            self.close()
            raise CheckpointError(f"header is not valid JSON: {e}", path=self.path, offset=8) from None
        try:
            self.metadata, self.tensors = self._validate(header)
        except CheckpointError:
            self.close()
            raise

    def _validate(self, header):
        def bad(msg, name=None):
            return CheckpointError(msg, path=self.path, offset=8, tensor=name)

        if not isinstance(header, dict):
            raise bad("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise bad("__metadata__ must map strings to strings")
        tensors: dict[str, SafetensorsTensor] = {}
        ranges = []
        for name, info in header.items():
            if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
                raise bad(f"malformed entry {info!r}", name)
            dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            if dtype not in DTYPES:
                raise bad(f"unknown dtype {dtype!r}", name)
            if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
                raise bad(f"shape must be a list of non-negative ints, got {shape!r}", name)
            if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
                raise bad(f"data_offsets must be [begin, end], got {offs!r}", name)
            begin, end = offs
            count = 1
            for d in shape:
                count *= d
            if not 0 <= begin <= end or end - begin != count * DTYPES[dtype].itemsize:
                raise bad(f"data_offsets {offs} do not hold {count} x {dtype}", name)
            ranges.append((begin, end, name))
            tensors[name] = SafetensorsTensor(name, dtype, tuple(shape), self.data_start + begin, end - begin, self)
        pos = 0
        for begin, end, name in sorted(ranges):
            if begin != pos:
                raise bad(f"data_offsets start at {begin}, expected {pos} (gap or overlap)", name)
            pos = end
        if self.data_start + pos != self.size:
            raise CheckpointError(
                f"tensor data ends at {self.data_start + pos} but the file has {self.size} bytes",
                path=self.path, offset=self.data_start + pos)
        return meta, tensors

    def _view(self, t: SafetensorsTensor) -> np.ndarray:
        if self._map is None or self._map.closed:
            raise CheckpointError("file is closed", path=self.path, tensor=t.name)
        if t.nbytes == 0:
            empty = np.zeros(t.shape, DTYPES[t.dtype])
            empty.flags.writeable = False
            return empty
        # bounds were checked against the file size in _validate
        arr = np.frombuffer(self._map, DTYPES[t.dtype], count=t.nbytes // DTYPES[t.dtype].itemsize, offset=t.begin)
        return arr.reshape(t.shape)

    def close(self):
        # views handed out keep the mmap alive (BufferError); then the GC closes it later
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate name {k!r}")
        out[k] = v
    return out
