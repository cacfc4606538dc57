"""A strict, lazy safetensors reader (no dependency on the ``safetensors`` package).

File layout: ``u64 little-endian N`` | ``N bytes of JSON header`` | byte buffer.  The header
maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the byte buffer) plus an optional ``"__metadata__"`` dict of strings.

Before ``json.loads`` builds anything, ``_prescan`` walks the header's tokens (one regex
match at a time, no token list) and refuses what the format cannot contain and what would
make the parse costly: nesting deeper than the format's 3 levels (header object ->
entry object -> shape/offset list), a list outside an entry, an object inside a list,
a list of more than ``MAX_DIMS`` elements, and a header whose parsed Python objects
would cost more than the file's size plus ``PARSE_BUDGET`` bytes (estimated per token).
So a hostile header can neither overflow the parser's stack nor make it allocate
~25x its size in tiny lists or strings.

Then one validation pass (after safetensors' ``Metadata::validate``), all in Python ints:
the header size is capped and inside the file, the JSON is an object without duplicate
names, ``__metadata__`` (if present) is an object of strings to strings, every dtype is a
known name, shapes are lists of at most ``MAX_DIMS`` non-negative ints that numpy can hold
(product of the non-zero dims times the item size < 2**63, so even a zero-size tensor
cannot have a huge dim), ``end - begin`` equals the element count times the item size,
and the sorted ranges tile the buffer exactly from 0 to its end (no gaps, no overlaps,
nothing past the file).  The file is memory-mapped read-only;
``load()`` returns a zero-copy read-only numpy view.  BF16 has no numpy dtype and comes back
as raw ``uint16`` bits (``CheckpointTensor.dtype`` says "BF16").

``release()`` (of a tensor or the file) drops the file's mapped pages from the process's
resident set once a tensor has been used (``release_pages``): every page of a mapping that
was touched counts in the process's RSS until it is unmapped, so a converter reading a whole
checkpoint through the mapping would otherwise end up "holding" the whole file.  The page
cache keeps the pages; a view from ``load()`` stays valid and reads them back in on access.
"""
from __future__ import annotations

import json
import mmap
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError, short_repr

MAX_HEADER_SIZE = 100_000_000  # safetensors' own cap
MAX_DIMS = 64  # numpy's NPY_MAXDIMS; also bounds every list in the header
PARSE_BUDGET = 16 * 1024 * 1024  # bytes of parsed header allowed beyond the file's size
# estimated bytes of Python objects json.loads makes per token (CPython 3.11, measured
# generously): a str is ~50 bytes + its length, an object a dict + its (key, value) pair
# tuples, a list ~64 bytes, and each "," one more pair tuple / list slot / int.
_COST_STR, _COST_OBJECT, _COST_LIST, _COST_COMMA = 64, 400, 120, 120
# a JSON string (escapes included) or one structural character; everything else skipped
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)

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

    def release(self) -> None:
        """Done with this tensor for now: drop its file's mapped pages from the resident
        set (``release_pages``; views still read)."""
        self._file.release()


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
            _prescan(raw, size, self.path)
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except CheckpointError:
            self.close()
            raise
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: belt and braces
            self.close()
            raise CheckpointError(f"header is not valid JSON: {type(e).__name__}: {e}", path=self.path,
                                  offset=8) from None
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
        # like the Rust reader: absent or an object of strings (not [], "", 0, false or null)
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise bad(f"__metadata__ must map strings to strings, got {short_repr(meta)}")
        tensors: dict[str, SafetensorsTensor] = {}
        ranges = []
        for name, info in header.items():
            if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
                raise bad(f"malformed entry {short_repr(info)}", name)
            dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            if not isinstance(dtype, str) or dtype not in DTYPES:
                raise bad(f"unknown dtype {short_repr(dtype)}", name)
            if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
                raise bad(f"shape must be a list of non-negative ints, got {short_repr(shape)}", name)
            if len(shape) > MAX_DIMS:
                raise bad(f"shape has {len(shape)} dims, more than the {MAX_DIMS} numpy can hold", name)
            nonzero = 1
            for d in shape:
                nonzero *= d or 1
            if nonzero * DTYPES[dtype].itemsize >= 2**63:
                raise bad(f"shape {short_repr(shape)} is too big for numpy (dims product x item size >= 2**63)", name)
            if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
                raise bad(f"data_offsets must be [begin, end], got {short_repr(offs)}", name)
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

    def release(self) -> None:
        """Drop every mapped page of the file from the resident set (``release_pages``)."""
        if self._map is not None:
            release_pages(self._map)

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


def release_pages(mm: mmap.mmap) -> None:
    """Drop every page of the read-only file mapping ``mm`` from this process's resident
    set: ``MADV_DONTNEED`` on a shared file mapping unmaps the pages here and leaves them in
    the page cache, so the next access reads the same bytes back.  The whole mapping, not
    one tensor's byte range: a page fault also maps already-cached neighbouring pages
    (fault-around, a large folio), which can belong to other tensors; and the page tables
    of a range with nothing mapped are skipped cheaply.  A no-op on a closed or empty
    mapping, and where ``madvise`` is missing (Windows)."""
    if mm.closed or len(mm) == 0 or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    mm.madvise(mmap.MADV_DONTNEED)


def _prescan(raw: bytes, file_size: int, path: str) -> None:
    """Refuse, before any parsing, a header that is not shaped like the format's
    ``{name: {key: str | [numbers]}}`` or whose parse would cost too much memory.

    Only nesting, list lengths and an estimate of the parsed size are checked here;
    everything else (syntax, types, values) is left to ``json.loads`` and ``_validate``.
    The walk is token by token, so its own memory is constant."""
    # kinds of the open containers: "{" or "["; at most 3 open, so this stays tiny
    stack: list[bytes] = []
    items = 0  # commas in the innermost open list
    cost = 0
    budget = file_size + PARSE_BUDGET

    def bad(msg, at):
        return CheckpointError(msg, path=path, offset=8 + at)

    for m in _TOKEN.finditer(raw):
        start = m.start()
        c = raw[start:start + 1]  # not m.group(): a string token may be most of the header
        if c == b'"':
            cost += _COST_STR + m.end() - start
        elif c == b"{":
            if len(stack) >= 2 or stack[-1:] == [b"["]:
                raise bad("header nests an object where the format has none (it is "
                          "{name: {key: str | [numbers]}})", m.start())
            stack.append(c)
            cost += _COST_OBJECT
        elif c == b"[":
            if not stack:
                raise bad("header is not a JSON object", m.start())
            if len(stack) != 2 or stack[-1] != b"{":
                raise bad("header nests a list where the format has none (it is "
                          "{name: {key: str | [numbers]}}; at most 3 levels)", m.start())
            stack.append(c)
            items = 0
            cost += _COST_LIST
        elif c in b"]}":
            if stack:
                stack.pop()
        else:  # ","
            cost += _COST_COMMA
            if stack[-1:] == [b"["]:
                items += 1
                if items >= MAX_DIMS:
                    raise bad(f"header has a list of more than {MAX_DIMS} elements (shapes have at most "
                              f"{MAX_DIMS} dims, data_offsets 2)", m.start())
        if cost > budget:
            raise bad(f"header would take more than {budget} bytes of memory to parse (about {cost} so far): "
                      f"more entries than a {file_size}-byte file needs", m.start())



def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate name {k!r}")
        out[k] = v
    return out
