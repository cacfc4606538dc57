"""The one table of GGUF value types and ggml tensor types.

Everything else in gguflite and ggml_bind asks this module how big a value or a tensor
block is.  The tensor table is cross-checked against libggml's own ``ggml_type_size`` and
``ggml_blck_size`` in ``tests/test_types.py`` so that it cannot drift (gguf-py's copy says
Q8_1 is 40 bytes; ggml says 36).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- value types


class ValueType(enum.IntEnum):
    """GGUF metadata value types (gguf.h ``enum gguf_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: the numpy dtype of one element (little-endian; swap for BE files).
VALUE_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("<u1"),  # one byte, 0 or 1
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}

# Inclusive integer ranges, used by the writer to refuse values that would wrap.
INT_RANGES: dict[ValueType, tuple[int, int]] = {
    t: (int(np.iinfo(d).min), int(np.iinfo(d).max))
    for t, d in VALUE_DTYPES.items()
    if d.kind in "iu" and t != ValueType.BOOL
}

# --------------------------------------------------------------------------- tensor types


class GGMLType(enum.IntEnum):
    """ggml tensor types (ggml.h ``enum ggml_type``, ggml 0.25.3).  Ids are append-only;
    the gaps (4, 5, 31-33, 36-38) are removed types that ggml rejects."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41
    Q2_0 = 42


GGML_TYPE_COUNT = 43  # ggml 0.25.3


@dataclass(frozen=True)
class TypeTraits:
    """How a ggml type is laid out: ``block_size`` elements take ``type_size`` bytes.

    ``dtype`` is the numpy dtype of one element for the plain (non-block) types, with
    BF16 exposed as raw ``uint16`` (numpy has no bfloat16); ``None`` for block types,
    whose data is exposed as raw bytes.
    """

    type: GGMLType
    block_size: int
    type_size: int
    dtype: np.dtype | None

    @property
    def name(self) -> str:
        return self.type.name

    @property
    def quantized(self) -> bool:
        return self.dtype is None


def _t(ggml_type: GGMLType, blck: int, size: int, dtype: str | None = None) -> TypeTraits:
    return TypeTraits(ggml_type, blck, size, np.dtype(dtype) if dtype else None)


G = GGMLType
# Block sizes and bytes per block as measured from libggml 0.25.3 (ggml_blck_size / ggml_type_size).
TYPE_TRAITS: dict[int, TypeTraits] = {
    t.type: t
    for t in [
        _t(G.F32, 1, 4, "<f4"),
        _t(G.F16, 1, 2, "<f2"),
        _t(G.Q4_0, 32, 18),  # [f16 d][16 B nibbles]
        _t(G.Q4_1, 32, 20),  # [f16 d][f16 m][16 B]
        _t(G.Q5_0, 32, 22),  # [f16 d][u32 qh][16 B]
        _t(G.Q5_1, 32, 24),  # [f16 d][f16 m][u32 qh][16 B]
        _t(G.Q8_0, 32, 34),  # [f16 d][32 i8]
        _t(G.Q8_1, 32, 36),  # [f16 d][f16 s][32 i8]   (gguf-py wrongly says 40)
        _t(G.Q2_K, 256, 84),
        _t(G.Q3_K, 256, 110),
        _t(G.Q4_K, 256, 144),
        _t(G.Q5_K, 256, 176),
        _t(G.Q6_K, 256, 210),
        _t(G.Q8_K, 256, 292),
        _t(G.IQ2_XXS, 256, 66),
        _t(G.IQ2_XS, 256, 74),
        _t(G.IQ3_XXS, 256, 98),
        _t(G.IQ1_S, 256, 50),
        _t(G.IQ4_NL, 32, 18),
        _t(G.IQ3_S, 256, 110),
        _t(G.IQ2_S, 256, 82),
        _t(G.IQ4_XS, 256, 136),
        _t(G.I8, 1, 1, "<i1"),
        _t(G.I16, 1, 2, "<i2"),
        _t(G.I32, 1, 4, "<i4"),
        _t(G.I64, 1, 8, "<i8"),
        _t(G.F64, 1, 8, "<f8"),
        _t(G.IQ1_M, 256, 56),
        _t(G.BF16, 1, 2, "<u2"),  # raw bfloat16 bits
        _t(G.TQ1_0, 256, 54),
        _t(G.TQ2_0, 256, 66),
        _t(G.MXFP4, 32, 17),
        _t(G.NVFP4, 64, 36),
        _t(G.Q1_0, 128, 18),
        _t(G.Q2_0, 64, 18),
    ]
}
del G


def type_name(type_id: int) -> str:
    """Name of a tensor type id; unknown ids read as ``TYPE_<id>``."""
    t = TYPE_TRAITS.get(type_id)
    return t.name if t else f"TYPE_{type_id}"


def parse_type(name: str | int | GGMLType) -> GGMLType:
    """``"q8_0"``, ``"Q8_0"``, ``8`` or ``GGMLType.Q8_0`` → ``GGMLType.Q8_0``."""
    if isinstance(name, GGMLType):
        return name
    if isinstance(name, int):
        return GGMLType(name)
    try:
        return GGMLType[name.upper()]
    except KeyError:
        known = ", ".join(t.name.lower() for t in GGMLType)
        raise ValueError(f"unknown ggml type {name!r}; known: {known}") from None


def row_nbytes(type_id: int, ne0: int) -> int:
    """Bytes of one row of ``ne0`` elements; raises ValueError if ne0 is not a whole
    number of blocks or the type is unknown."""
    t = TYPE_TRAITS.get(type_id)
    if t is None:
        raise ValueError(f"unknown ggml type id {type_id}")
    if ne0 % t.block_size:
        raise ValueError(f"{t.name}: row of {ne0} elements is not a multiple of the block size {t.block_size}")
    return ne0 // t.block_size * t.type_size


def tensor_nbytes(type_id: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor with numpy-order ``shape`` (last axis = ggml ``ne[0]``), in Python ints."""
    if not shape:
        shape = (1,)
    n_rows = 1
    for d in shape[:-1]:
        n_rows *= int(d)
    return row_nbytes(type_id, int(shape[-1])) * n_rows


class FileType(enum.IntEnum):
    """``general.file_type`` values (llama.h ``llama_ftype``) for the types we write."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_BF16 = 32


GGUF_MAGIC = b"GGUF"
GGUF_DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64  # names must be shorter: at most 63 bytes
GGUF_MAX_STRING_LENGTH = 1 << 30
GGUF_MAX_ARRAY_ELEMENTS = 1 << 30
GGML_QNT_VERSION = 2


def align_up(n: int, alignment: int) -> int:
    """``GGML_PAD``: round ``n`` up to a multiple of ``alignment``."""
    return (n + alignment - 1) // alignment * alignment
