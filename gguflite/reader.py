"""Read GGUF files: ``gguflite.open(path)`` -> ``GGUFFile``.

The whole file is memory-mapped read-only and parsed once, eagerly, with the C reader's
validation rules (ggml ``gguf.cpp``), computed in plain Python ints:

    header    magic "GGUF" (always these bytes), u32 version, n_tensors, n_kv
              (u64 each; u32 in version 1)
    KV pairs  key string, u32 value type, value
    infos     name string, u32 n_dims, ne[n_dims] (u64; u32 in v1), u32 ggml type, u64 offset
    padding   to ``alignment``
    data      tensors at ``data_offset + offset``, each padded to ``alignment``

Nothing large is copied: fixed-size arrays become read-only numpy views over the map,
string arrays become a ``StringArray`` that only remembers where it starts (its per-string
offsets are found on first access), and tensor data is a zero-copy view.

Endianness: there is no flag.  A version that, read little-endian, has its low 16 bits
zero is byte-swapped, so the whole file (everything after the magic, tensor data
included) is big-endian.  ``GGUFFile.endian`` is then ``">"``.

Unknown tensor type ids (a newer ggml, or a removed id) do not make the file unreadable:
such a tensor is exposed as raw bytes.  Its byte size cannot be computed, so it is taken
to be the gap up to the next tensor's offset (or to the end of the file for the last
one), trailing alignment padding included.

Where this differs from ggml's C reader (tests/test_gguf_compat.py checks both ways):
it also reads GGUF v1, big-endian files, unknown tensor types and nested arrays (kept
lazily, at most ``MAX_NESTING`` deep); it is stricter in refusing keys and tensor names
that are not UTF-8 and BOOL values other than 0 and 1, and in checking at open that every
tensor's bytes are inside the file (the last tensor's trailing padding may be missing).
String values are decoded with ``surrogateescape`` so that invalid UTF-8 survives a round
trip; ``validate()`` reports it.  With no tensors, ``data_offset`` is the end of the
header, unpadded, as in ggml.
"""
from __future__ import annotations

import array
import builtins
import itertools
import mmap
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .errors import (
    BadAlignment,
    BadMagic,
    BadTensorInfo,
    BadValue,
    BadVersion,
    DuplicateKey,
    DuplicateTensor,
    GGUFError,
    TensorOutOfBounds,
    TruncatedFile,
)
from .types import (
    GGML_MAX_DIMS,
    GGML_MAX_NAME,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_MAX_ARRAY_ELEMENTS,
    GGUF_MAX_STRING_LENGTH,
    TYPE_TRAITS,
    VALUE_DTYPES,
    ValueType,
    align_up,
    type_name,
)

__all__ = ["open", "validate", "GGUFFile", "Field", "TensorInfo", "FileRange", "StringArray", "NestedArray", "MAX_NESTING"]

# Nested arrays (which llama.cpp rejects) are read, but only this deep, so that a hostile
# file cannot exhaust the Python stack.
MAX_NESTING = 8
INT64_MAX = (1 << 63) - 1
SIZE_MAX = (1 << 64) - 1
NATIVE = "<" if sys.byteorder == "little" else ">"

# struct format characters of the fixed-size value types
_SCALAR_FMT = {
    ValueType.UINT8: "B", ValueType.INT8: "b", ValueType.UINT16: "H", ValueType.INT16: "h",
    ValueType.UINT32: "I", ValueType.INT32: "i", ValueType.FLOAT32: "f", ValueType.BOOL: "B",
    ValueType.UINT64: "Q", ValueType.INT64: "q", ValueType.FLOAT64: "d",
}


# element width of the fixed-size types whose bytes need no checking (BOOL is checked)
_FIXED_WIDTHS = {int(t): VALUE_DTYPES[t].itemsize for t in VALUE_DTYPES if t != ValueType.BOOL}


def decode_str(raw: bytes) -> str:
    """Decode a GGUF string value.  Invalid UTF-8 bytes survive as lone surrogates
    (``surrogateescape``) and the writer encodes them back to the same bytes."""
    return raw.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- values


def _checked_index(i, count: int, what: str) -> int:
    """A Python index into ``count`` items (negative counts from the end), or IndexError."""
    j = int(i)
    if j < 0:
        j += count
    if not 0 <= j < count:
        raise IndexError(f"index {i} out of range for {count} {what}")
    return j


class StringArray(Sequence):
    """A lazy, read-only sequence of the ``count`` strings stored from byte ``start`` of
    a file.  Parsing only skips over them; the offset of each string is found on first
    access (one pass) and each item is decoded when asked for."""

    def __init__(self, buf, start: int, end: int, count: int, len_size: int, endian: str):
        self._buf = buf
        self.start = start  # absolute byte offset of the first string's length prefix
        self.end = end  # one past the last string's bytes
        self._count = count
        self.len_size = len_size  # 8, or 4 in GGUF v1
        self.endian = endian
        # int64 [count + 1]: where each string's length prefix starts, then the end
        self._bounds: np.ndarray | None = None

    def _index(self) -> np.ndarray:
        """The string boundaries, found by one walk on first use: 8 bytes per string and
        no Python object per string (string ``i`` is ``[bounds[i] + len_size, bounds[i+1])``)."""
        if getattr(self._buf, "closed", False):
            raise GGUFError("file is closed")
        if self._bounds is None:
            unpack = struct.Struct(self.endian + ("Q" if self.len_size == 8 else "I")).unpack_from
            buf, pos, lw = self._buf, self.start, self.len_size
            bounds = array.array("q", bytes(8 * (self._count + 1)))
            for i in range(self._count):
                bounds[i] = pos
                pos += unpack(buf, pos)[0] + lw
            bounds[self._count] = pos
            b = np.frombuffer(bounds, dtype=np.int64)
            for j in range(0, self._count, 1 << 16):  # the 1 GiB rule, in chunks (no big temporaries)
                lens = np.diff(b[j : j + (1 << 16) + 1]) - lw
                if int(lens.max()) > GGUF_MAX_STRING_LENGTH:
                    i = j + int(np.argmax(lens > GGUF_MAX_STRING_LENGTH))
                    raise BadValue(f"string {i} is longer than 1 GiB", offset=int(b[i]), key=None)
            self._bounds = b
        return self._bounds

    def offset_of(self, i: int) -> int:
        """Absolute offset of string ``i``'s length prefix."""
        return int(self._index()[i])

    def __len__(self) -> int:
        return self._count

    def raw(self, i: int) -> bytes:
        """The undecoded bytes of string ``i``."""
        i = _checked_index(i, self._count, "strings")
        b = self._index()
        return bytes(self._buf[int(b[i]) + self.len_size : int(b[i + 1])])  # inside the file: walked

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        return decode_str(self.raw(i))

    def __iter__(self) -> Iterator[str]:
        return iter(self.tolist())

    def tolist(self) -> list[str]:
        """All strings, decoded: one copy of the region, then one slice per string."""
        b = (self._index() - self.start).tolist()
        region = bytes(self._buf[self.start : self.end])
        lw = self.len_size
        return [region[s + lw : e].decode("utf-8", "surrogateescape") for s, e in zip(b, b[1:])]

    def raw_bytes(self) -> memoryview:
        """The serialized strings (length prefixes included) exactly as in the file;
        the writer copies them as one block when byte order and length width match."""
        return memoryview(self._buf)[self.start : self.end]

    def __eq__(self, other):
        if isinstance(other, (Sequence, np.ndarray)) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        more = ", ..." if self._count > 3 else ""
        return f"StringArray([{head}{more}], len={self._count})"


class NestedArray(Sequence):
    """A lazy, read-only sequence of the ``count`` inner arrays of a nested array (which
    gguf-py writes and llama.cpp rejects).  Opening only walks over them; their offsets are
    found on first access and each inner array (a numpy view, ``StringArray`` or
    ``NestedArray``, in the file's byte order) is parsed when asked for."""

    def __init__(self, parser: "_Parser", start: int, count: int, depth: int, key: str):
        self._buf, self._size, self._path = parser.buf, parser.size, parser.path
        self.endian, self.len_size = parser.endian, parser.len_size
        self.start = start  # absolute offset of the first inner array's element type
        self._count = count
        self._depth = depth
        self._key = key
        self._bounds: np.ndarray | None = None  # int64 [count + 1]: where each inner array starts

    def _parser(self, pos: int) -> "_Parser":
        if getattr(self._buf, "closed", False):
            raise GGUFError("file is closed", path=self._path, key=self._key)
        p = _Parser(self._buf, self._size, self._path)
        p.endian, p.len_size, p.pos = self.endian, self.len_size, pos
        return p

    def _index(self) -> np.ndarray:
        if self._bounds is None:
            p = self._parser(self.start)
            bounds = array.array("q", bytes(8 * (self._count + 1)))  # 8 bytes per inner array
            p.skip_arrays(self._count, self._key, self._depth, bounds)
            bounds[self._count] = p.pos
            self._bounds = np.frombuffer(bounds, dtype=np.int64)
        return self._bounds

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        i = _checked_index(i, self._count, "inner arrays")
        return self._parser(int(self._index()[i])).array(self._key, self._depth)[0]

    def __iter__(self):
        for i in range(self._count):
            yield self[i]

    def tolist(self) -> list:
        """The inner arrays as a list (numeric ones in native byte order)."""
        return _public(self)

    def __repr__(self) -> str:
        return f"NestedArray(len={self._count})"


@dataclass(frozen=True, eq=False)
class Field:
    """One metadata entry as stored.  ``value`` is in the file's representation: a Python
    scalar, a read-only numpy view in the file's byte order, a ``StringArray``, or a list
    (nested arrays).  ``offset`` is where the entry (its key) starts, ``value_offset``
    where its value type id starts and ``end`` one past its last byte."""

    key: str
    type: ValueType
    elem_type: ValueType | None
    value: Any
    offset: int
    value_offset: int = 0
    end: int = 0


@dataclass(frozen=True)
class FileRange:
    """``nbytes`` bytes from ``offset`` of an open ``GGUFFile``: a tensor source the
    writer copies with ``os.copy_file_range`` (no trip through Python memory)."""

    file: "GGUFFile"
    offset: int
    nbytes: int

    def fileno(self) -> int:
        if self.file._fh is None or self.file._fh.closed:
            raise GGUFError("file is closed", path=self.file.path)
        return self.file._fh.fileno()

    def view(self) -> np.ndarray:
        return self.file._bytes(self.offset, self.nbytes, "")


@dataclass(frozen=True)
class TensorInfo:
    """A tensor: numpy-order ``shape``, ggml ``type`` id, ``offset`` relative to the data
    section, ``abs_offset`` in its file, ``nbytes`` and ``n_elements``.  ``data`` is a
    zero-copy read-only view (plain types: typed with the file's byte order and numpy
    shape; block types and unknown ids: uint8 [nbytes])."""

    name: str
    shape: tuple[int, ...]
    type: int
    offset: int
    abs_offset: int
    nbytes: int
    n_elements: int
    info_offset: int = 0  # where this tensor's info record starts in the file
    _file: "GGUFFile | None" = field(default=None, repr=False, compare=False)

    @property
    def ne(self) -> tuple[int, ...]:
        """The shape in ggml order (``ne[0]`` first)."""
        return tuple(reversed(self.shape))

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    @property
    def known_type(self) -> bool:
        return self.type in TYPE_TRAITS

    @property
    def file(self) -> "GGUFFile":
        return self._file

    @property
    def raw(self) -> np.ndarray:
        """The tensor's bytes: read-only uint8 [nbytes] view."""
        return self._file._bytes(self.abs_offset, self.nbytes, self.name)

    def file_range(self) -> "FileRange":
        """This tensor's bytes as a ``FileRange`` of its open file (the writer copies
        those file-to-file, as ``cp`` does)."""
        self._file._bytes(self.abs_offset, self.nbytes, self.name)  # open and in bounds
        return FileRange(self._file, self.abs_offset, self.nbytes)

    @property
    def data(self) -> np.ndarray:
        raw = self.raw
        traits = TYPE_TRAITS.get(self.type)
        if traits is None or traits.dtype is None:
            return raw
        try:
            return raw.view(traits.dtype.newbyteorder(self._file.endian)).reshape(self.shape)
        except ValueError:  # e.g. ne=[0, 2^62]: 0 elements, but numpy refuses the shape
            raise BadTensorInfo(f"numpy cannot represent the shape {self.shape}", path=self._file.path,
                                offset=self.info_offset, tensor=self.name) from None


# --------------------------------------------------------------------------- parsing


class _Parser:
    """A bounds-checked cursor over the mapped file.  Every read checks the remaining
    size first, so no slice of the map is ever taken unchecked."""

    def __init__(self, buf, size: int, path: str):
        self.buf = buf
        self.size = size
        self.path = path
        self.pos = 0
        self.endian = "<"
        self.len_size = 8

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise TruncatedFile(self.pos, n, self.size - self.pos, what, path=self.path)

    def unpack(self, fmt: str, size: int, what: str):
        self.need(size, what)
        v = struct.unpack_from(self.endian + fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def u32(self, what: str) -> int:
        return self.unpack("I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", 8, what)

    def length(self, what: str) -> int:
        """A count or string length: u64, or u32 in version 1."""
        return self.u32(what) if self.len_size == 4 else self.u64(what)

    def raw_string(self, what: str, key: str | None = None) -> bytes:
        start = self.pos
        n = self.length(f"{what} length")
        if n > GGUF_MAX_STRING_LENGTH:
            raise BadValue(f"{what} length {n} exceeds 1 GiB", path=self.path, offset=start, key=key)
        self.need(n, what)
        s = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return s

    def value_type(self, what: str, key: str) -> ValueType:
        at = self.pos
        t = self.u32(what)
        try:
            return ValueType(t)
        except ValueError:
            raise BadValue(f"invalid value type id {t}", path=self.path, offset=at, key=key) from None

    def value(self, vtype: ValueType, key: str, depth: int = 0):
        """Parse one value; returns (value, elem_type or None)."""
        at = self.pos
        if vtype == ValueType.STRING:
            return decode_str(self.raw_string("string", key)), None
        if vtype == ValueType.ARRAY:
            return self.array(key, depth)
        fmt = _SCALAR_FMT[vtype]
        size = VALUE_DTYPES[vtype].itemsize
        v = self.unpack(fmt, size, vtype.name.lower())
        if vtype == ValueType.BOOL:
            if v > 1:
                raise BadValue(f"bool value {v} is neither 0 nor 1", path=self.path, offset=at, key=key)
            v = bool(v)
        return v, None

    def array(self, key: str, depth: int, build: bool = True):
        """Parse (``build``) or only walk over one array; returns (value or None, elem type).
        Walking allocates nothing per element, so nested arrays and string arrays cost
        no Python objects until they are accessed."""
        at = self.pos
        etype = self.value_type("array element type", key)
        count = self.length("array length")
        if count > GGUF_MAX_ARRAY_ELEMENTS:
            raise BadValue(f"array of {count} elements exceeds 2^30", path=self.path, offset=at, key=key)
        remaining = self.size - self.pos
        start = self.pos
        if etype == ValueType.STRING:
            if count * self.len_size > remaining:
                raise TruncatedFile(self.pos, count * self.len_size, remaining, "string array", path=self.path, key=key)
            self.skip_strings(count, key)
            if not build:
                return None, etype
            return StringArray(self.buf, start, self.pos, count, self.len_size, self.endian), etype
        if etype == ValueType.ARRAY:
            if depth + 1 >= MAX_NESTING:
                raise BadValue(f"arrays nested deeper than {MAX_NESTING}", path=self.path, offset=at, key=key)
            if count * (4 + self.len_size) > remaining:
                raise TruncatedFile(self.pos, count * (4 + self.len_size), remaining, "nested array", path=self.path, key=key)
            self.skip_arrays(count, key, depth + 1)
            if not build:
                return None, etype
            return NestedArray(self, start, count, depth + 1, key), etype
        dt = VALUE_DTYPES[etype]
        nbytes = count * dt.itemsize
        self.need(nbytes, f"{etype.name.lower()} array")
        if etype == ValueType.BOOL and count:
            chunk = self.buf[self.pos : self.pos + count]  # bounds checked by need()
            if max(chunk) > 1:
                bad = next(i for i, b in enumerate(chunk) if b > 1)
                raise BadValue(f"bool array element {bad} is neither 0 nor 1", path=self.path, offset=self.pos + bad, key=key)
        view = None
        if build:
            view = np.frombuffer(self.buf, dtype=dt.newbyteorder(self.endian), count=count, offset=self.pos)
            if etype == ValueType.BOOL:
                view = view.view(np.bool_)
        self.pos += nbytes
        return view, etype

    def skip_arrays(self, count: int, key: str, depth: int, bounds=None) -> None:
        """Walk over ``count`` inner arrays of a nested array (recording where each starts
        in ``bounds`` if given).  Fixed-size inner arrays take one unpack each; strings,
        bools, deeper nesting and anything malformed go through ``array`` (which raises
        with the exact offset)."""
        hdr = struct.Struct(self.endian + ("IQ" if self.len_size == 8 else "II"))
        unpack, hsize = hdr.unpack_from, hdr.size
        buf, size, pos = self.buf, self.size, self.pos
        widths = _FIXED_WIDTHS
        for i in range(count):
            if bounds is not None:
                bounds[i] = pos
            if pos + hsize <= size:
                etype, n = unpack(buf, pos)
                w = widths.get(etype)
                if w is not None and n <= GGUF_MAX_ARRAY_ELEMENTS and pos + hsize + n * w <= size:
                    pos += hsize + n * w
                    continue
            self.pos = pos
            self.array(key, depth, build=False)
            pos = self.pos
        self.pos = pos

    def skip_strings(self, count: int, key: str) -> None:
        """Walk over ``count`` strings without decoding them: the hot loop for
        vocabularies, kept to one unpack and one add per string.  A length that runs
        past the end makes the next unpack (or the final check) fail; the checked walk
        then finds the exact offset for the error."""
        unpack = struct.Struct(self.endian + ("Q" if self.len_size == 8 else "I")).unpack_from
        buf, pos, lw = self.buf, self.pos, self.len_size
        try:
            for _ in itertools.repeat(None, count):
                pos += unpack(buf, pos)[0] + lw
        except struct.error:
            pos = self.size + 1
        if pos > self.size:
            self._checked_skip(count, key)
        self.pos = pos

    def _checked_skip(self, count: int, key: str) -> None:
        unpack = struct.Struct(self.endian + ("Q" if self.len_size == 8 else "I")).unpack_from
        buf, pos, size, lw, limit = self.buf, self.pos, self.size, self.len_size, GGUF_MAX_STRING_LENGTH
        for i in range(count):
            if pos + lw > size:
                raise TruncatedFile(pos, lw, size - pos, f"length of string {i}", path=self.path, key=key)
            (n,) = unpack(buf, pos)
            if n > limit:
                raise BadValue(f"string {i} length {n} exceeds 1 GiB", path=self.path, offset=pos, key=key)
            pos += lw + n
            if pos > size:
                raise TruncatedFile(pos - n, n, size - (pos - n), f"string {i}", path=self.path, key=key)
        raise AssertionError("unreachable: the fast walk failed but the checked one did not")


class _Metadata(Mapping):
    """key -> typed Python value; arrays converted to native byte order when accessed."""

    def __init__(self, fields: dict[str, Field]):
        self._fields = fields
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str):
        if key not in self._cache:
            self._cache[key] = _public(self._fields[key].value)
        return self._cache[key]

    def __iter__(self):
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"<metadata: {len(self)} keys>"


def _public(value):
    if isinstance(value, np.ndarray) and value.dtype.byteorder not in ("=", "|", NATIVE):
        out = value.astype(value.dtype.newbyteorder("="))
        out.flags.writeable = False
        return out
    if isinstance(value, (list, NestedArray)):
        return [_public(v) for v in value]
    return value


class GGUFFile:
    """An open, validated GGUF file.  Use as a context manager or call ``close()``.

    Attributes: ``path``, ``size``, ``version``, ``endian`` (``"<"`` or ``">"``),
    ``alignment``, ``data_offset`` (absolute start of the data section), ``fields``
    (key -> ``Field``), ``metadata`` (key -> value), ``tensors`` (name -> ``TensorInfo``,
    in file order), ``kv_end`` (end of the KV section = start of the tensor infos).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._mm = None
        self._base = None
        self._fh = None  # kept open (read-only) so the writer can copy file ranges in-kernel
        try:
            self._fh = builtins.open(self.path, "rb")
            self.size = os.fstat(self._fh.fileno()).st_size
            if self.size < 4:
                self._fh.close()
                raise TruncatedFile(0, 4, self.size, "magic", path=self.path)
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            if self._fh is not None:
                self._fh.close()
            raise GGUFError(f"cannot open: {e.strerror or e}", path=self.path) from e
        try:
            self._base = np.frombuffer(self._mm, dtype=np.uint8)
            self._parse()
        except GGUFError:
            self.close()
            raise
        except Exception as e:  # a parser bug must still surface as a GGUFError
            self.close()
            raise GGUFError(f"unreadable ({type(e).__name__}: {e})", path=self.path) from e

    # ------------------------------------------------------------------ parsing

    def _parse(self) -> None:
        p = _Parser(self._mm, self.size, self.path)
        magic = bytes(self._mm[0:4])
        if magic != GGUF_MAGIC:
            raise BadMagic(f"not a GGUF file (magic {magic!r})", path=self.path, offset=0)
        p.pos = 4
        version = p.u32("version")
        if version & 0xFFFF == 0 and version != 0:
            p.endian = ">"
            version = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version == 0 or version > 3:
            raise BadVersion(f"unsupported GGUF version {version}", path=self.path, offset=4)
        self.version = version
        self.endian = p.endian
        if version == 1:
            p.len_size = 4
        self.len_size = p.len_size
        n_tensors = p.length("tensor count")
        n_kv = p.length("KV count")
        # every KV takes at least 13 bytes, every tensor info at least 21: reject absurd
        # counts before looping over them
        # (loosely, against the whole file, so that the entries' own checks name the
        # problem whenever the counts are merely a little off)
        least = n_kv * (2 * p.len_size - 3) + n_tensors * (2 * p.len_size + 5)
        if least > self.size:
            raise TruncatedFile(p.pos, least, self.size - p.pos,
                                f"{n_kv} KV pairs and {n_tensors} tensor infos (at least)", path=self.path)
        self.n_kv, self.n_tensors = n_kv, n_tensors

        fields: dict[str, Field] = {}
        for _ in range(n_kv):
            start = p.pos
            try:
                key = p.raw_string("key").decode("utf-8")
            except UnicodeDecodeError:
                raise BadValue("key is not valid UTF-8", path=self.path, offset=start) from None
            if not key:
                raise BadValue("empty key", path=self.path, offset=start)
            if key in fields:
                raise DuplicateKey(f"duplicate key (first at offset {fields[key].offset})",
                                   path=self.path, offset=start, key=key)
            vstart = p.pos
            vtype = p.value_type("value type", key)
            value, etype = p.value(vtype, key)
            fields[key] = Field(key, vtype, etype, value, start, vstart, p.pos)
        self.fields = fields
        self.kv_end = p.pos

        alignment = GGUF_DEFAULT_ALIGNMENT
        f = fields.get("general.alignment")
        if f is not None:
            if f.type != ValueType.UINT32:
                raise BadAlignment(f"general.alignment must be UINT32, not {f.type.name}",
                                   path=self.path, offset=f.offset, key=f.key)
            if f.value == 0 or f.value & (f.value - 1):
                raise BadAlignment(f"general.alignment {f.value} is not a power of two",
                                   path=self.path, offset=f.offset, key=f.key)
            alignment = f.value
        self.alignment = alignment

        raw_infos = []
        names: dict[str, int] = {}
        for _ in range(n_tensors):
            start = p.pos
            raw_name = p.raw_string("tensor name")
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                raise BadTensorInfo("tensor name is not valid UTF-8", path=self.path, offset=start) from None
            if len(raw_name) >= GGML_MAX_NAME:
                raise BadTensorInfo(f"name is {len(raw_name)} bytes; at most {GGML_MAX_NAME - 1} allowed",
                                    path=self.path, offset=start, tensor=name)
            if name in names:
                raise DuplicateTensor(f"duplicate tensor name (first at offset {names[name]})",
                                      path=self.path, offset=start, tensor=name)
            names[name] = start
            n_dims = p.u32("n_dims")
            if n_dims > GGML_MAX_DIMS:
                raise BadTensorInfo(f"{n_dims} dimensions; at most {GGML_MAX_DIMS} allowed",
                                    path=self.path, offset=p.pos - 4, tensor=name)
            ne = [p.length("ne") for _ in range(n_dims)]
            n_el = 1
            for d in ne:
                if d > INT64_MAX:
                    raise BadTensorInfo(f"dimension {d} is negative as int64", path=self.path, offset=start, tensor=name)
                n_el *= d
            if n_el >= INT64_MAX:
                raise BadTensorInfo(f"element count of ne={ne} overflows int64", path=self.path, offset=start, tensor=name)
            type_at = p.pos
            ttype = p.u32("tensor type")
            off_at = p.pos
            offset = p.u64("tensor offset")
            traits = TYPE_TRAITS.get(ttype)
            nbytes = None
            if traits is not None:
                ne0 = ne[0] if ne else 1
                if ne0 % traits.block_size:
                    raise BadTensorInfo(f"ne[0]={ne0} is not a multiple of the {traits.name} block size {traits.block_size}",
                                        path=self.path, offset=type_at, tensor=name)
                nbytes = n_el // traits.block_size * traits.type_size
                if nbytes > SIZE_MAX:
                    raise BadTensorInfo("byte size overflows size_t", path=self.path, offset=type_at, tensor=name)
            raw_infos.append((name, tuple(reversed(ne)), ttype, offset, nbytes, n_el, start, off_at))
        self.infos_end = p.pos
        # as in ggml: the data section is aligned only when there are tensors
        self.data_offset = align_up(p.pos, alignment) if n_tensors else p.pos
        if n_tensors and self.data_offset > self.size:
            raise TruncatedFile(p.pos, self.data_offset - p.pos, self.size - p.pos, "padding before data", path=self.path)

        # offsets must be exactly the running padded sum (no gaps, overlaps or reordering)
        tensors: dict[str, TensorInfo] = {}
        expected = 0
        data_size = self.size - self.data_offset
        for i, (name, shape, ttype, offset, nbytes, n_el, start, off_at) in enumerate(raw_infos):
            if offset != expected:
                raise TensorOutOfBounds(
                    f"offset {offset} != expected {expected} (tensors must be stored in order, "
                    f"aligned to {alignment}, without gaps or overlaps)", path=self.path, offset=off_at, tensor=name)
            if nbytes is None:  # unknown type: the gap up to the next tensor (or the end)
                nxt = raw_infos[i + 1][3] if i + 1 < len(raw_infos) else data_size
                if nxt < offset:
                    raise TensorOutOfBounds(f"next tensor starts at {nxt}, before this one at {offset}",
                                            path=self.path, offset=off_at, tensor=name)
                nbytes = nxt - offset
            if offset + nbytes > data_size:
                raise TensorOutOfBounds(
                    f"data [{offset}, {offset + nbytes}) ends past the data section ({data_size} bytes)",
                    path=self.path, offset=off_at, tensor=name)
            expected = offset + align_up(nbytes, alignment)
            tensors[name] = TensorInfo(name, shape, ttype, offset, self.data_offset + offset, nbytes, n_el, start, self)
        self.tensors = tensors
        self.metadata = _Metadata(fields)

    # ------------------------------------------------------------------ access

    def _bytes(self, start: int, n: int, name: str) -> np.ndarray:
        if self._base is None:
            raise GGUFError("file is closed", path=self.path, tensor=name)
        if start < 0 or n < 0 or start + n > self.size:
            raise TensorOutOfBounds(f"[{start}, {start + n}) outside the file", path=self.path, tensor=name)
        return self._base[start : start + n]

    def validate(self) -> None:
        """Deep checks beyond the structural ones done at open: every string in every
        string array is walked, and every string value must be valid UTF-8."""
        for f in self.fields.values():
            _check_utf8(f.value, f, self.path)

    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        """Release the map.  Views handed out earlier keep the mapping alive until they
        are garbage-collected (numpy holds a reference); new accesses raise."""
        self._base = None
        if self._fh is not None:
            self._fh.close()
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views still exported: the map closes when they go away

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"v{self.version} {self.endian}"
        return f"<GGUFFile {self.path!r} {state}, {len(self.fields)} keys, {len(self.tensors)} tensors>"


def _check_utf8(value, f: Field, path: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadValue("string is not valid UTF-8", path=path, offset=f.value_offset, key=f.key) from None
    elif isinstance(value, StringArray):
        for i in range(len(value)):
            try:
                value.raw(i).decode("utf-8")
            except UnicodeDecodeError:
                raise BadValue(f"string {i} is not valid UTF-8", path=path, offset=value.offset_of(i), key=f.key) from None
    elif isinstance(value, (list, NestedArray)):
        for v in value:
            _check_utf8(v, f, path)


def validate(path) -> None:
    """Open ``path`` with every check, walk every string, and close it; raises only
    ``GGUFError`` subclasses, allocates at most about the file's size."""
    f = GGUFFile(path)
    try:
        f.validate()
        for t in f.tensors.values():
            t.data  # every view can be made
    finally:
        f.close()


def open(path) -> "GGUFFile | SplitModel":  # noqa: A001, F821  (gguflite.open mirrors the builtin on purpose)
    """Open and validate a GGUF file.  The first shard of a split model
    (``*-00001-of-0000N.gguf``) opens as one model (see ``gguflite.split``)."""
    f = GGUFFile(path)
    try:
        count = f.fields.get("split.count")
        if count is not None and isinstance(count.value, int) and count.value > 1:
            from .split import open_split

            return open_split(f)
    except BaseException:
        f.close()
        raise
    return f
