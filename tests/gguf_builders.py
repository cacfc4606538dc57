"""Hand-built GGUF bytes for tests, written with ``struct`` straight from the format
description (docs: shared gguf-format reference, section 1), independently of
``gguflite.writer``, plus hypothesis strategies for metadata values and tensors.
"""
from __future__ import annotations

import struct

import numpy as np
from hypothesis import strategies as st

from gguflite.types import TYPE_TRAITS, VALUE_DTYPES, ValueType

V = ValueType
_FMT = {V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I", V.INT32: "i",
        V.FLOAT32: "f", V.BOOL: "?", V.UINT64: "Q", V.INT64: "q", V.FLOAT64: "d"}


class Raw:
    """Builds the pieces of a GGUF file for one byte order and version."""

    def __init__(self, endian: str = "<", version: int = 3):
        self.e = endian
        self.version = version
        self.L = "I" if version == 1 else "Q"

    def p(self, fmt: str, *v) -> bytes:
        return struct.pack(self.e + fmt, *v)

    def string(self, s: str | bytes) -> bytes:
        b = s.encode() if isinstance(s, str) else s
        return self.p(self.L, len(b)) + b

    def header(self, n_tensors: int, n_kv: int, version: int | None = None) -> bytes:
        return b"GGUF" + self.p("I", self.version if version is None else version) + self.p(self.L, n_tensors) + self.p(self.L, n_kv)

    def scalar(self, vtype: V, v) -> bytes:
        if vtype == V.STRING:
            return self.string(v)
        return self.p(_FMT[vtype], v)

    def kv(self, key: str | bytes, vtype: V, v) -> bytes:
        return self.string(key) + self.p("I", vtype) + self.scalar(vtype, v)

    def kv_array(self, key: str | bytes, etype: V, items, count: int | None = None) -> bytes:
        body = b"".join(self.scalar(etype, x) for x in items)
        n = len(items) if count is None else count
        return self.string(key) + self.p("I", V.ARRAY) + self.p("I", etype) + self.p(self.L, n) + body

    def tensor_info(self, name: str | bytes, ne: list[int], ggml_type: int, offset: int) -> bytes:
        return (self.string(name) + self.p("I", len(ne)) + b"".join(self.p(self.L, d) for d in ne)
                + self.p("I", ggml_type) + self.p("Q", offset))

    def file(self, kvs: list[bytes], infos: list[bytes], data: bytes = b"", alignment: int = 32,
             n_tensors: int | None = None, n_kv: int | None = None, pad: bool = True) -> bytes:
        head = self.header(len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
        head += b"".join(kvs) + b"".join(infos)
        if pad and (infos or data):
            head += b"\0" * (-len(head) % alignment)
        return head + data


def pad_to(b: bytes, alignment: int = 32) -> bytes:
    return b + b"\0" * (-len(b) % alignment)


# --------------------------------------------------------------------------- strategies

_INT_BOUNDS = {t: (int(np.iinfo(VALUE_DTYPES[t]).min), int(np.iinfo(VALUE_DTYPES[t]).max))
               for t in (V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.UINT64, V.INT64)}

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def scalar_values(vtype: V):
    if vtype in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[vtype]
        return st.integers(lo, hi)
    if vtype == V.FLOAT32:
        return st.floats(width=32, allow_nan=False)
    if vtype == V.FLOAT64:
        return st.floats(allow_nan=False)
    if vtype == V.BOOL:
        return st.booleans()
    return text


SCALAR_TYPES = [t for t in V if t != V.ARRAY]


@st.composite
def typed_values(draw, allow_empty: bool = True):
    """(ValueType, element type or None, Python value) over every value type."""
    vtype = draw(st.sampled_from(list(V)))
    if vtype != V.ARRAY:
        v = draw(scalar_values(vtype))
        if not allow_empty and vtype == V.STRING and not v:
            v = "x"
        return vtype, None, v
    etype = draw(st.sampled_from(SCALAR_TYPES))
    items = draw(st.lists(scalar_values(etype), min_size=0 if allow_empty else 1, max_size=6))
    return V.ARRAY, etype, items


keys = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=("Cs",)), min_size=1, max_size=20)

metadata = st.dictionaries(keys.filter(lambda k: k != "general.alignment"), typed_values(), max_size=8)


@st.composite
def tensors(draw, types=None, max_tensors: int = 4):
    """list of (name, numpy shape, ggml type id, numpy array: typed for plain types,
    uint8 bytes for block types)."""
    out = []
    n = draw(st.integers(0, max_tensors))
    types = types or sorted(TYPE_TRAITS)
    for i in range(n):
        t = draw(st.sampled_from(types))
        traits = TYPE_TRAITS[t]
        ndim = draw(st.integers(1, 4))
        shape = [draw(st.integers(0 if ndim > 1 else 1, 3)) for _ in range(ndim - 1)]
        shape.append(traits.block_size * draw(st.integers(1, 3)))
        shape = tuple(shape)
        n_el = int(np.prod(shape))
        nbytes = n_el // traits.block_size * traits.type_size
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        raw = rng.integers(0, 256, nbytes, dtype=np.uint8)
        arr = raw.view(traits.dtype).reshape(shape) if traits.dtype is not None else raw
        out.append((f"t{i}.weight", shape, t, arr))
    return out
