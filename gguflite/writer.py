"""Write GGUF files: ``GGUFWriter``.

Streaming: all metadata and the tensor *descriptions* (name, numpy-order shape, ggml type)
are added first; ``write()`` then emits the header, the KV pairs and the tensor infos, and
afterwards the tensors one at a time, each from a numpy array, bytes, or a callable that
is called once, in order, so that at most one tensor's data is in memory.

Atomic: nothing touches ``path`` before ``write()``, which writes a temporary file in the
same folder (``.<name>.<pid>.<random>.gguflite-tmp``), fsyncs it and renames it over
``path``.  An exception or a KeyboardInterrupt at any point leaves an existing ``path``
untouched and no temp file.  A SIGKILL or a power cut cannot clean up after itself; the
temp file's name records its target and owning process so that the next write to the same
target removes it once that process is gone (``remove_stale_temps``).

Value types (explicit on request, inferred otherwise):

    Python value                    inferred ValueType
    bool / numpy.bool_              BOOL
    int                             INT32 if it fits, else INT64, else UINT64, else error
    float                           FLOAT32  (pass type=ValueType.FLOAT64 to keep all digits)
    str                             STRING   (bytes only with type=ValueType.STRING)
    numpy scalar                    its own dtype (int8 -> INT8, float64 -> FLOAT64, ...)
    numpy 1-D array                 ARRAY of its dtype
    bytes / bytearray               ARRAY of UINT8 (as gguf-py does)
    list / tuple                    ARRAY; element type inferred the same way over all
                                    elements (ints: INT32 if all fit, else INT64/UINT64;
                                    ints mixed with floats: FLOAT32); an empty list needs
                                    an explicit type
    list of lists                   nested ARRAY, refused unless allow_nested=True
                                    (llama.cpp cannot read nested arrays)

``type=`` forces a type: a ``ValueType`` for a scalar, or ``(ValueType.ARRAY, elem)`` for
an array (a bare element type is also accepted for a list or array value).  Values are
range-checked against the chosen type and never silently wrapped or truncated; floats are
refused for integer types.  ``general.alignment`` is always written as UINT32.
"""
from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from .errors import BadAlignment, DuplicateKey, DuplicateTensor, WriteError
from .reader import MAX_NESTING, FileRange, NestedArray, StringArray
from .types import (
    GGML_MAX_DIMS,
    GGML_MAX_NAME,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_MAX_ARRAY_ELEMENTS,
    GGUF_MAX_STRING_LENGTH,
    INT_RANGES,
    TYPE_TRAITS,
    VALUE_DTYPES,
    GGMLType,
    ValueType,
    align_up,
    parse_type,
    tensor_nbytes,
)

__all__ = ["GGUFWriter", "infer_type", "encode_kv", "TensorSource", "AtomicFile", "remove_stale_temps"]

V = ValueType
TensorSource = Union[np.ndarray, bytes, bytearray, memoryview, Callable[[], Any]]

# numpy (kind, itemsize) -> ValueType
_DTYPE_TO_VTYPE = {(VALUE_DTYPES[t].kind, VALUE_DTYPES[t].itemsize): t for t in VALUE_DTYPES if t != V.BOOL}
_SCALAR_FMT = {
    V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I", V.INT32: "i",
    V.FLOAT32: "f", V.BOOL: "B", V.UINT64: "Q", V.INT64: "q", V.FLOAT64: "d",
}
_INT_TYPES = set(INT_RANGES)
_FLOAT_TYPES = {V.FLOAT32, V.FLOAT64}


# --------------------------------------------------------------------------- type inference


def _vtype_of_dtype(dt: np.dtype, key: str) -> ValueType:
    if dt.kind == "b":
        return V.BOOL
    t = _DTYPE_TO_VTYPE.get((dt.kind, dt.itemsize))
    if t is None:
        raise WriteError(f"numpy dtype {dt} has no GGUF value type", key=key)
    return t


def _int_type(lo: int, hi: int, key: str) -> ValueType:
    for t in (V.INT32, V.INT64, V.UINT64):
        a, b = INT_RANGES[t]
        if a <= lo and hi <= b:
            return t
    raise WriteError(f"integer {lo if lo < 0 else hi} does not fit in 64 bits", key=key)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def infer_type(value, key: str = "") -> tuple[ValueType, ValueType | None]:
    """The (type, element type) ``add`` would choose for ``value``; see the module docstring."""
    if isinstance(value, (bool, np.bool_)):
        return V.BOOL, None
    if isinstance(value, np.generic):
        return _vtype_of_dtype(value.dtype, key), None
    if isinstance(value, int):
        return _int_type(value, value, key), None
    if isinstance(value, float):
        return V.FLOAT32, None
    if isinstance(value, str):
        return V.STRING, None
    if isinstance(value, (bytes, bytearray)):
        return V.ARRAY, V.UINT8
    if isinstance(value, StringArray):
        return V.ARRAY, V.STRING
    if isinstance(value, NestedArray):
        return V.ARRAY, V.ARRAY
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _vtype_of_dtype(value.dtype, key), None
        if value.ndim != 1:
            raise WriteError(f"array values must be 1-D, got shape {value.shape}", key=key)
        return V.ARRAY, _vtype_of_dtype(value.dtype, key)
    if isinstance(value, (list, tuple)):
        return V.ARRAY, _infer_elem(value, key)
    raise WriteError(f"cannot infer a GGUF type for {type(value).__name__}", key=key)


def _infer_elem(items, key: str) -> ValueType:
    if len(items) == 0:
        raise WriteError("empty array: give its element type, e.g. type=(ValueType.ARRAY, ValueType.INT32)", key=key)
    if all(isinstance(x, (str, bytes)) for x in items):
        return V.STRING
    if all(isinstance(x, (bool, np.bool_)) for x in items):
        return V.BOOL
    if all(isinstance(x, (list, tuple, np.ndarray, StringArray, NestedArray, bytes)) for x in items):
        return V.ARRAY
    if all(_is_int(x) for x in items):
        if all(isinstance(x, np.generic) for x in items) and len({x.dtype for x in items}) == 1:
            return _vtype_of_dtype(items[0].dtype, key)
        return _int_type(min(int(x) for x in items), max(int(x) for x in items), key)
    if all(_is_int(x) or isinstance(x, (float, np.floating)) for x in items):
        if all(isinstance(x, np.floating) for x in items) and len({x.dtype for x in items}) == 1:
            return _vtype_of_dtype(items[0].dtype, key)
        return V.FLOAT32
    kinds = sorted({type(x).__name__ for x in items})
    raise WriteError(f"cannot infer one element type for a list of {', '.join(kinds)}", key=key)


# --------------------------------------------------------------------------- normalization


def _check_scalar(value, vtype: ValueType, key: str):
    """Return ``value`` as the Python object to pack for ``vtype``, or raise."""
    if vtype == V.STRING:
        if isinstance(value, str):
            raw = value.encode("utf-8", "surrogateescape")
        elif isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
        else:
            raise WriteError(f"STRING needs str, got {type(value).__name__}", key=key)
        if len(raw) > GGUF_MAX_STRING_LENGTH:
            raise WriteError(f"string of {len(raw)} bytes exceeds 1 GiB", key=key)
        return raw
    if vtype == V.BOOL:
        if isinstance(value, (bool, np.bool_)) or (_is_int(value) and int(value) in (0, 1)):
            return bool(value)
        raise WriteError(f"BOOL needs True/False, got {value!r}", key=key)
    if vtype in _INT_TYPES:
        if not (_is_int(value) or isinstance(value, (bool, np.bool_))):
            raise WriteError(f"{vtype.name} needs an integer, got {value!r}", key=key)
        v = int(value)
        lo, hi = INT_RANGES[vtype]
        if not lo <= v <= hi:
            raise WriteError(f"{v} is out of range for {vtype.name} [{lo}, {hi}]", key=key)
        return v
    if vtype in _FLOAT_TYPES:
        if not (_is_int(value) or isinstance(value, (float, np.floating))):
            raise WriteError(f"{vtype.name} needs a number, got {value!r}", key=key)
        try:
            v = float(value)
            struct.pack("<f" if vtype == V.FLOAT32 else "<d", v)
        except OverflowError:
            raise WriteError(f"{value!r} is out of range for {vtype.name}", key=key) from None
        return v
    raise WriteError(f"{vtype!r} is not a scalar type", key=key)


def _numeric_array(value, etype: ValueType, key: str) -> np.ndarray:
    """1-D numpy array of ``etype`` (little-endian), range-checked."""
    target = VALUE_DTYPES[etype]
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = np.frombuffer(value, dtype=np.uint8)
    if isinstance(value, (list, tuple)) and etype in _INT_TYPES and all(_is_int(x) for x in value):
        # Python ints exactly (numpy would turn [0, 2**63] into float64)
        vals = [int(x) for x in value]
        lo, hi = INT_RANGES[etype]
        if vals and not (lo <= min(vals) and max(vals) <= hi):
            raise WriteError(f"values [{min(vals)}, {max(vals)}] out of range for {etype.name}", key=key)
        return np.array(vals, dtype=target)
    arr = np.asarray(value) if isinstance(value, np.ndarray) else None
    if arr is None:
        try:
            arr = np.asarray(value)
        except (OverflowError, ValueError) as e:
            raise WriteError(f"cannot make an array of {etype.name}: {e}", key=key) from None
    if arr.ndim != 1:
        raise WriteError(f"array values must be 1-D, got shape {arr.shape}", key=key)
    if arr.size == 0:
        return np.zeros(0, dtype=target)
    if arr.dtype == object:  # Python ints beyond int64
        if not all(_is_int(x) for x in arr.tolist()) or etype not in _INT_TYPES:
            raise WriteError(f"cannot store these values as {etype.name}", key=key)
        vals = [int(x) for x in arr.tolist()]
        lo, hi = INT_RANGES[etype]
        if vals and not (lo <= min(vals) and max(vals) <= hi):
            raise WriteError(f"values [{min(vals)}, {max(vals)}] out of range for {etype.name}", key=key)
        return np.array(vals, dtype=target)
    k = arr.dtype.kind
    if etype == V.BOOL:
        if k == "b":
            return arr.astype(np.uint8)
        if k in "iu" and (arr.size == 0 or (int(arr.min()) >= 0 and int(arr.max()) <= 1)):
            return arr.astype(np.uint8)
        raise WriteError(f"BOOL array needs booleans, got {arr.dtype}", key=key)
    if etype in _INT_TYPES:
        if k not in "iub":
            raise WriteError(f"{etype.name} array needs integers, got {arr.dtype}", key=key)
        if arr.size:
            lo, hi = INT_RANGES[etype]
            amin, amax = int(arr.min()), int(arr.max())
            if amin < lo or amax > hi:
                raise WriteError(f"values [{amin}, {amax}] out of range for {etype.name}", key=key)
        return arr.astype(target)
    if k not in "iubf":
        raise WriteError(f"{etype.name} array needs numbers, got {arr.dtype}", key=key)
    with np.errstate(over="ignore"):
        out = arr.astype(target)
    if etype == V.FLOAT32 and arr.size and np.isinf(out).any() and not np.isinf(arr[np.isinf(out)]).all():
        raise WriteError("values out of range for FLOAT32 (they would become inf)", key=key)
    return out


def _normalize(key: str, value, vtype: ValueType, etype: ValueType | None, allow_nested: bool, depth: int = 0):
    """Validate ``value`` against (vtype, etype); return the stored form:
    scalar -> packable Python object; ARRAY -> ndarray | list[bytes] | StringArray |
    list[(etype, value)] for nested arrays."""
    if vtype != V.ARRAY:
        if isinstance(value, (list, tuple, np.ndarray)) and not (isinstance(value, np.ndarray) and value.ndim == 0):
            raise WriteError(f"a {vtype.name} value cannot be a sequence", key=key)
        return _check_scalar(value, vtype, key)
    if not isinstance(value, (list, tuple, np.ndarray, bytes, bytearray, StringArray, NestedArray)) or (
            isinstance(value, np.ndarray) and value.ndim != 1):
        raise WriteError(f"ARRAY needs a sequence, got {type(value).__name__}", key=key)
    if etype is None:
        etype = infer_type(value, key)[1]
    if len(value) > GGUF_MAX_ARRAY_ELEMENTS:
        raise WriteError(f"array of {len(value)} elements exceeds 2^30", key=key)
    if etype == V.STRING:
        if isinstance(value, StringArray):
            return value
        if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS":
            raise WriteError(f"STRING array needs strings, got {value.dtype}", key=key)
        return [_check_scalar(s.item() if isinstance(s, np.generic) else s, V.STRING, key) for s in value]
    if etype == V.ARRAY:
        if not allow_nested:
            raise WriteError("nested arrays are refused (llama.cpp cannot read them); "
                             "pass allow_nested=True to write them anyway", key=key)
        if depth + 1 >= MAX_NESTING:
            raise WriteError(f"arrays nested deeper than {MAX_NESTING}", key=key)
        out = []
        for item in value:
            vt, inner = infer_type(item, key)
            if vt != V.ARRAY:
                raise WriteError(f"elements of a nested array must be arrays, got {type(item).__name__}", key=key)
            out.append((inner, _normalize(key, item, V.ARRAY, inner, allow_nested, depth + 1)))
        return out
    return _numeric_array(value, etype, key)


def _resolve_type(value, type_, key: str) -> tuple[ValueType, ValueType | None]:
    if type_ is None:
        vtype, etype = infer_type(value, key)
        if key == "general.alignment" and vtype in _INT_TYPES:
            vtype = V.UINT32
        return vtype, etype
    if isinstance(type_, tuple):
        if len(type_) != 2 or ValueType(type_[0]) != V.ARRAY:
            raise WriteError(f"type tuple must be (ValueType.ARRAY, elem), got {type_!r}", key=key)
        return V.ARRAY, None if type_[1] is None else ValueType(type_[1])
    vtype = ValueType(type_)
    is_seq = isinstance(value, (list, tuple, StringArray, bytes, bytearray)) or (
        isinstance(value, np.ndarray) and value.ndim == 1)
    if vtype == V.ARRAY:
        return V.ARRAY, None
    if is_seq and not (vtype == V.STRING and isinstance(value, (bytes, bytearray))):
        return V.ARRAY, vtype  # a bare element type for a sequence
    return vtype, None


# --------------------------------------------------------------------------- encoding


class _Enc:
    """Serializes values for one byte order and GGUF version."""

    def __init__(self, endian: str, version: int):
        self.endian = endian
        self.len_fmt = "I" if version == 1 else "Q"
        self.len_size = 4 if version == 1 else 8

    def pack(self, fmt: str, *v) -> bytes:
        return struct.pack(self.endian + fmt, *v)

    def length(self, n: int) -> bytes:
        return struct.pack(self.endian + self.len_fmt, n)

    def string(self, raw: bytes) -> bytes:
        return self.length(len(raw)) + raw

    def value(self, vtype: ValueType, etype, value, out: list) -> None:
        if vtype == V.STRING:
            out.append(self.string(value))
        elif vtype == V.ARRAY:
            out.append(self.pack("I", etype))
            out.append(self.length(len(value)))
            if etype == V.STRING:
                if isinstance(value, StringArray) and value.endian == self.endian and value.len_size == self.len_size:
                    out.append(value.raw_bytes())
                else:
                    items = [s.encode("utf-8", "surrogateescape") for s in value] if isinstance(value, StringArray) else value
                    out.extend(self.string(s) for s in items)
            elif etype == V.ARRAY:
                for inner_t, inner_v in value:
                    self.value(V.ARRAY, inner_t, inner_v, out)
            else:
                out.append(value.astype(VALUE_DTYPES[etype].newbyteorder(self.endian), copy=False).tobytes())
        else:
            out.append(self.pack(_SCALAR_FMT[vtype], value))


def encode_kv(key: str, vtype: ValueType, etype, value, endian: str = "<", version: int = 3) -> bytes:
    """The serialized bytes of one KV pair; ``value`` in the writer's normalized form."""
    enc = _Enc(endian, version)
    out = [enc.string(key.encode("utf-8")), enc.pack("I", vtype)]
    enc.value(vtype, etype, value, out)
    return b"".join(out)


# --------------------------------------------------------------------------- writer


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]  # numpy order
    type: int
    nbytes: int
    source: Any
    offset: int = 0


class GGUFWriter:
    """Streaming, atomic GGUF writer.  See the module docstring for the value types.

    ``alignment``: None means ``general.alignment`` if added, else 32.  A non-default
    alignment not added as a key is appended as ``general.alignment`` (UINT32).
    ``endian``: ``"<"`` or ``">"`` (everything after the magic, tensor data included).
    ``version``: 3 (default), 2, or 1 (u32 counts and lengths; for tests and old tools).
    ``fsync``: fsync the file before the rename (default True).
    """

    def __init__(self, path, alignment: int | None = None, endian: str = "<", version: int = 3,
                 *, allow_nested: bool = False, fsync: bool = True):
        if endian not in ("<", ">"):
            raise WriteError(f"endian must be '<' or '>', not {endian!r}")
        if version not in (1, 2, 3):
            raise WriteError(f"version must be 1, 2 or 3, not {version!r}")
        if alignment is not None:
            _check_alignment(alignment)
        self.path = os.fspath(path)
        self._alignment = alignment
        self.endian = endian
        self.version = version
        self.allow_nested = allow_nested
        self.fsync = fsync
        self._kv: dict[str, tuple[ValueType, ValueType | None, Any]] = {}
        self._tensors: dict[str, _Tensor] = {}
        self._written = False

    # ------------------------------------------------------------------ building

    @property
    def alignment(self) -> int:
        if self._alignment is not None:
            return self._alignment
        kv = self._kv.get("general.alignment")
        return kv[2] if kv else GGUF_DEFAULT_ALIGNMENT

    def add(self, key: str, value, type=None) -> None:  # noqa: A002  (contract name)
        """Add one metadata entry; refuses duplicates, nested arrays (unless allowed) and
        values that do not fit the (given or inferred) type."""
        self._add(key, value, type, self.allow_nested)

    def add_field(self, field, key: str | None = None) -> None:
        """Add a ``Field`` read by ``gguflite.open`` with its stored type, unchanged
        (nested arrays included: they exist already); ``key`` renames it."""
        t = (V.ARRAY, field.elem_type) if field.type == V.ARRAY else field.type
        self._add(field.key if key is None else key, field.value, t, True)

    def add_tensor_from(self, info, name: str | None = None) -> None:
        """Add a tensor read by ``gguflite.open``, streamed from its file at write time.
        Raw bytes are copied when the byte orders agree; plain types are converted when
        they differ; block types in another byte order are refused (use convert-endian)."""
        name = info.name if name is None else name
        traits = TYPE_TRAITS.get(info.type)
        if info.file.endian == self.endian:
            src = info.file_range()
        elif traits is not None and traits.dtype is not None:
            src = lambda: info.data  # noqa: E731  (the writer swaps typed data)
        else:
            raise WriteError(f"{info.type_name} data cannot change byte order here; use convert-endian", tensor=name)
        self.add_tensor(name, info.shape, info.type, src, nbytes=None if traits else info.nbytes)

    def _add(self, key: str, value, type, allow_nested: bool) -> None:  # noqa: A002
        self._check_open()
        if not isinstance(key, str) or not key:
            raise WriteError(f"key must be a non-empty str, got {key!r}")
        if len(_utf8(key, "key")) > GGUF_MAX_STRING_LENGTH:
            raise WriteError("key longer than 1 GiB", key=key[:64])
        if key in self._kv:
            raise DuplicateKey("key added twice", key=key)
        try:
            vtype, etype = _resolve_type(value, type, key)
        except ValueError as e:  # not a ValueType id
            raise WriteError(f"bad type {type!r}: {e}", key=key) from None
        stored = _normalize(key, value, vtype, etype, allow_nested)
        if vtype == V.ARRAY and etype is None:
            etype = infer_type(value, key)[1]
        if key == "general.alignment":
            if vtype != V.UINT32:
                raise BadAlignment(f"general.alignment must be UINT32, not {vtype.name}", key=key)
            _check_alignment(stored)
            if self._alignment is not None and stored != self._alignment:
                raise BadAlignment(f"general.alignment {stored} != writer alignment {self._alignment}", key=key)
        self._kv[key] = (vtype, etype, stored)

    def add_tensor(self, name: str, shape, ggml_type, source: TensorSource, *, nbytes: int | None = None) -> None:
        """Describe one tensor.  ``shape`` is numpy order, in elements.  ``source``: an
        ndarray (plain types: matching dtype and shape, any byte order; any type: uint8
        raw bytes), bytes, or a callable returning one of those, called once at write
        time.  Unknown type ids are accepted as raw bytes with an explicit size
        (``nbytes``, or the length of a bytes/ndarray source)."""
        self._check_open()
        if not isinstance(name, str):
            raise WriteError(f"tensor name must be a str, got {name!r}")
        if len(_utf8(name, "tensor name")) >= GGML_MAX_NAME:
            raise WriteError(f"tensor name is {len(name.encode())} bytes; at most {GGML_MAX_NAME - 1} allowed", tensor=name)
        if name in self._tensors:
            raise DuplicateTensor("tensor added twice", tensor=name)
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise WriteError(f"shape must be a tuple of ints, got {shape!r}", tensor=name) from None
        if len(shape) > GGML_MAX_DIMS or any(not 0 <= d < 1 << 63 for d in shape):
            raise WriteError(f"shape {shape}: at most {GGML_MAX_DIMS} dims in [0, 2^63)", tensor=name)
        if isinstance(ggml_type, str):
            try:
                ggml_type = parse_type(ggml_type)
            except ValueError as e:
                raise WriteError(str(e), tensor=name) from None
        ttype = int(ggml_type)
        if not 0 <= ttype < 1 << 31:
            raise WriteError(f"ggml type id {ttype} out of range", tensor=name)
        if nbytes is not None and nbytes < 0:
            raise WriteError(f"nbytes {nbytes} is negative", tensor=name)
        if ttype in TYPE_TRAITS:
            try:
                size = tensor_nbytes(ttype, shape)
            except ValueError as e:
                raise WriteError(str(e), tensor=name) from None
            if nbytes is not None and nbytes != size:
                raise WriteError(f"nbytes {nbytes} != {size} for {GGMLType(ttype).name} {shape}", tensor=name)
        elif nbytes is not None:
            size = int(nbytes)
        elif isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
            size = source.nbytes if isinstance(source, (memoryview, np.ndarray)) else len(source)
        else:
            raise WriteError(f"unknown ggml type {ttype}: give nbytes= or the bytes themselves", tensor=name)
        t = _Tensor(name, shape, ttype, size, source)
        if not callable(source):
            t.source = self._tensor_buffer(t, source)  # check now, fail early
        self._tensors[name] = t

    # ------------------------------------------------------------------ writing

    def _tensor_buffer(self, t: _Tensor, src) -> np.ndarray | bytes | memoryview:
        """``src`` as exactly ``t.nbytes`` bytes in the output byte order."""
        if isinstance(src, FileRange):
            if src.nbytes != t.nbytes:
                raise WriteError(f"{src.nbytes} bytes given, {t.nbytes} needed", tensor=t.name)
            return src
        if isinstance(src, (bytes, bytearray, memoryview)):
            n = src.nbytes if isinstance(src, memoryview) else len(src)
            if n != t.nbytes:
                raise WriteError(f"{n} bytes given, {t.nbytes} needed", tensor=t.name)
            return src
        if not isinstance(src, np.ndarray):
            raise WriteError(f"tensor source must be an ndarray, bytes or a callable, got {type(src).__name__}",
                             tensor=t.name)
        traits = TYPE_TRAITS.get(t.type)
        dt = traits.dtype if traits else None
        if dt is not None and src.dtype.kind == dt.kind and src.dtype.itemsize == dt.itemsize:
            if src.shape != t.shape and not (t.shape == () and src.size == 1):
                raise WriteError(f"array shape {src.shape} != declared shape {t.shape}", tensor=t.name)
            out = np.ascontiguousarray(src).astype(dt.newbyteorder(self.endian), copy=False)
            return out.reshape(-1).view(np.uint8)
        if src.dtype == np.uint8:
            if src.nbytes != t.nbytes:
                raise WriteError(f"{src.nbytes} raw bytes given, {t.nbytes} needed", tensor=t.name)
            return np.ascontiguousarray(src).reshape(-1)
        want = f"{dt} or raw uint8" if dt is not None else "raw uint8 bytes"
        raise WriteError(f"{t.type} tensor data must be {want}, got {src.dtype}", tensor=t.name)

    def _layout(self) -> list[tuple[str, tuple, Any]]:
        kv = dict(self._kv)
        alignment = self.alignment
        if alignment != GGUF_DEFAULT_ALIGNMENT and "general.alignment" not in kv:
            kv["general.alignment"] = (V.UINT32, None, alignment)
        offset = 0
        for t in self._tensors.values():
            t.offset = offset
            offset += align_up(t.nbytes, alignment)
        return kv

    def header_bytes(self) -> bytes:
        """Header, KV pairs, tensor infos and the padding up to the data section."""
        enc = _Enc(self.endian, self.version)
        kv = self._layout()
        out = [GGUF_MAGIC, enc.pack("I", self.version), enc.length(len(self._tensors)), enc.length(len(kv))]
        for key, (vtype, etype, value) in kv.items():
            out.append(enc.string(key.encode("utf-8")))
            out.append(enc.pack("I", vtype))
            enc.value(vtype, etype, value, out)
        for t in self._tensors.values():
            out.append(enc.string(t.name.encode("utf-8")))
            ne = tuple(reversed(t.shape))
            out.append(enc.pack("I", len(ne)))
            out.extend(enc.length(d) for d in ne)
            out.append(enc.pack("I", t.type))
            out.append(enc.pack("Q", t.offset))
        head = b"".join(out)
        return head + b"\0" * (align_up(len(head), self.alignment) - len(head))

    def write(self, progress: Callable[[int, int], None] | None = None) -> str:
        """Write the file atomically; returns its path.  ``progress(done, total)`` is
        called with tensor-data bytes after each tensor."""
        self._check_open()
        with AtomicFile(self.path, fsync=self.fsync) as fh:
            self.write_to(fh, progress)
        return self.path

    def write_to(self, fh, progress: Callable[[int, int], None] | None = None) -> None:
        """Stream the whole file into ``fh``, a binary file opened for writing at offset 0
        (a real file: tensors copied from other files use its descriptor).  Atomicity is
        the caller's business; ``write()`` wraps this in an ``AtomicFile``."""
        self._check_open()
        self._written = True
        header = self.header_bytes()
        total = sum(align_up(t.nbytes, self.alignment) for t in self._tensors.values())
        fh.write(header)
        done = 0
        for t in self._tensors.values():
            src = t.source
            if callable(src):
                src = src()
                t.source = None
                buf = self._tensor_buffer(t, src)
            else:
                buf = src
            if isinstance(buf, FileRange):
                _copy_range(buf, fh)
            else:
                fh.write(buf)
            del src, buf
            pad = align_up(t.nbytes, self.alignment) - t.nbytes
            if pad:
                fh.write(b"\0" * pad)
            done += t.nbytes + pad
            if progress is not None:
                progress(done, total)
        for t in self._tensors.values():
            t.source = None  # release the data

    def _check_open(self) -> None:
        if self._written:
            raise WriteError("writer already wrote its file", path=self.path)

    def __enter__(self) -> "GGUFWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._written:
            self.write()


def _copy_range(src: FileRange, fh) -> None:
    """Append ``src`` to the buffered file ``fh``: in-kernel with copy_file_range where
    the OS allows it (what ``cp`` does), else through the source's memory map."""
    fh.flush()
    out = fh.fileno()
    off, left = src.offset, src.nbytes
    try:
        fd = src.fileno()
        while left:
            n = os.copy_file_range(fd, out, min(left, 1 << 30), off)
            if n <= 0:
                break
            off += n
            left -= n
    except (AttributeError, OSError):
        pass  # no copy_file_range here (other OS, filesystem or kernel): copy below
    fh.seek(0, os.SEEK_END)
    if left:
        fh.write(src.view()[off - src.offset :])


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise WriteError(f"{what} {text!r} is not valid UTF-8 text: {e.reason}") from None


def _check_alignment(a) -> None:
    if not _is_int(a) or a <= 0 or a & (a - 1) or a > 0xFFFFFFFF:
        raise BadAlignment(f"alignment must be a power of two UINT32, got {a!r}")


TEMP_SUFFIX = ".gguflite-tmp"


def _temp_pattern(target: str) -> re.Pattern:
    """``.<target name>.<pid>.<12 hex digits>.gguflite-tmp``: the only names we ever remove."""
    name = re.escape(os.path.basename(target))
    return re.compile(rf"\.{name}\.(?P<pid>[1-9][0-9]*)\.[0-9a-f]{{12}}{re.escape(TEMP_SUFFIX)}")


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (as far as this machine can tell)."""
    if pid == os.getpid():
        return True  # another writer of this process (a thread) may own it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or a pid we cannot ask about: keep the file
    return True


def remove_stale_temps(target) -> list[str]:
    """Remove the temp files that writes to ``target`` left behind when their process was
    killed: names matching ``.<target name>.<pid>.<random>.gguflite-tmp`` in the target's
    folder, plain files only, whose pid no longer runs.  Temp files of live processes
    (concurrent writers) stay, and so does every other name.  Returns the removed paths.

    A pid reused by a new process keeps its old temp file until that process ends too
    (the safe side).  Writers of one target on several machines sharing a folder are not
    told apart (a pid is per machine)."""
    target = os.fspath(target)
    folder = os.path.dirname(os.path.abspath(target))
    pattern = _temp_pattern(target)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or _pid_alive(int(m["pid"])):
            continue
        path = os.path.join(folder, name)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue  # not a file we made: never follow or remove links, folders, ...
            os.unlink(path)
        except OSError:
            continue  # gone already (another cleaner) or not ours to remove
        removed.append(path)
    return removed


def create_temp(target) -> tuple[int, str]:
    """Create (exclusively, mode 0600) a new temp file for ``target`` in its folder, named
    ``.<target name>.<our pid>.<random>.gguflite-tmp``; returns (fd, path)."""
    target = os.fspath(target)
    folder = os.path.dirname(os.path.abspath(target))
    base = f".{os.path.basename(target)}.{os.getpid()}."
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(folder, base + os.urandom(6).hex() + TEMP_SUFFIX)
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name in {folder}")


class AtomicFile:
    """``with AtomicFile(path) as fh:`` writes a temp file in the same folder (see
    ``create_temp``) and, on a clean exit, fsyncs it and renames it over ``path``; on any
    exception (KeyboardInterrupt included) the temp file is removed and ``path`` is
    untouched.  Entering first removes stale temp files of ``path`` (``remove_stale_temps``).

    ``defer_rename=True`` stops after the fsync: the complete temp file stays at ``self.tmp``
    until ``commit()`` renames it (or ``discard()`` removes it), so that a caller can check
    several files before any of them replaces its target."""

    def __init__(self, path, fsync: bool = True, buffer_size: int = 1 << 20, *, defer_rename: bool = False):
        self.path = os.fspath(path)
        self.fsync = fsync
        self.buffer_size = buffer_size
        self.defer_rename = defer_rename
        self.tmp: str | None = None

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        remove_stale_temps(self.path)
        try:
            fd, self.tmp = create_temp(self.path)
        except OSError as e:
            raise WriteError(f"cannot create a temp file in {folder}: {e.strerror or e}", path=self.path) from e
        self.fh = os.fdopen(fd, "wb", buffering=self.buffer_size)
        return self.fh

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.fh.flush()
                if self.fsync:
                    os.fsync(self.fh.fileno())
                os.fchmod(self.fh.fileno(), _mode_for(self.path))
                self.fh.close()
                if not self.defer_rename:
                    self._rename()
                return False
        except BaseException as e:
            self.discard()
            if isinstance(e, OSError):
                raise WriteError(f"cannot write: {e.strerror or e}", path=self.path) from e
            raise
        self.discard()
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write: {exc.strerror or exc}", path=self.path) from exc
        return False

    def commit(self) -> None:
        """Rename the finished temp file over the target (``defer_rename=True`` only)."""
        try:
            self._rename()
        except OSError as e:
            self.discard()
            raise WriteError(f"cannot write: {e.strerror or e}", path=self.path) from e

    def _rename(self) -> None:
        os.replace(self.tmp, self.path)
        self.tmp = None
        if self.fsync:
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def discard(self) -> None:
        """Close and remove the temp file, if it is still there."""
        try:
            self.fh.close()
        except (OSError, AttributeError):
            pass
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None


def _mode_for(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
