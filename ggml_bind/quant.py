"""ggml's own quantizer and dequantizer, as an oracle for ``gguflite.quant``.

    quantize_chunk(type, x[n_rows, n_per_row] float32, imatrix=None) -> uint8[n_rows, row_bytes]
    dequantize(type, data uint8/bytes, n_elements=None)              -> float32[n_elements]

Both check every argument in Python first (dtype, contiguity, row length a multiple of the
block size, buffer sizes, an importance matrix where ggml requires one, finite input for the
grid-search i-quants), because the C side answers misuse with ``abort()``.
"""
from __future__ import annotations

import numpy as np

from . import lib as _lib
from .errors import GGMLError, GGMLShapeError, GGMLTypeError

# Types ggml_quantize_chunk has a case for (ggml.c:8091-8133); any other id reaches
# `assert(false)` + `GGML_ASSERT(result == nrows * row_size)` and aborts.
QUANTIZABLE = frozenset(
    {
        "F32", "F16", "BF16", "Q1_0", "Q2_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4",
        "NVFP4", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0", "IQ2_XXS", "IQ2_XS",
        "IQ3_XXS", "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS",
    }
)
# Grid-search quantizers that GGML_ASSERT on what NaN/inf inputs produce (ggml-quants.c).
_NEEDS_FINITE = frozenset({"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M"})


def type_info(ggml_type: int) -> tuple[str, int, int]:
    """``(NAME, block size, bytes per block)`` of a ggml type id, as libggml reports them.

    Raises GGMLTypeError for ids outside the enum or removed from ggml (block size 0).
    """
    C = _lib.C()
    ffi = _lib.ffi()
    try:
        t = int(ggml_type)
    except (TypeError, ValueError):
        raise GGMLTypeError(f"ggml type must be an int id, got {ggml_type!r}") from None
    if not 0 <= t < C.GGML_TYPE_COUNT:
        raise GGMLTypeError(f"ggml type id {t} is outside 0..{C.GGML_TYPE_COUNT - 1}")
    blck = C.ggml_blck_size(t)
    if blck == 0:
        raise GGMLTypeError(f"ggml type id {t} was removed from ggml")
    return ffi.string(C.ggml_type_name(t)).decode().upper(), int(blck), int(C.ggml_type_size(t))


def quantize_chunk(ggml_type: int, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize rows of float32 with ``ggml_quantize_chunk``.

    Args:
        ggml_type: target type id (``gguflite.GGMLType.Q4_K`` or an int).
        x: float32 array ``(n_rows, n_per_row)``, C-contiguous; ``n_per_row`` a multiple of
           the type's block size.
        imatrix: optional float32 ``(n_per_row,)`` importance weights; required for the
           types where ``ggml_quantize_requires_imatrix`` says so (IQ2_XXS, IQ2_XS, IQ1_S).
    Returns:
        uint8 array ``(n_rows, row_bytes)`` holding ggml's blocks.
    """
    C = _lib.C()
    ffi = _lib.ffi()
    name, blck, size = type_info(ggml_type)
    t = int(ggml_type)
    op = "ggml_quantize_chunk"
    if name not in QUANTIZABLE:
        raise GGMLTypeError(f"ggml cannot quantize to {name}", op=op)
    x = _float32_matrix(x, op)
    n_rows, n_per_row = x.shape
    if n_per_row == 0 or n_per_row % blck:
        raise GGMLShapeError(f"row length {n_per_row} is not a positive multiple of the {name} block size {blck}", op=op)
    if name in _NEEDS_FINITE and not np.isfinite(x).all():
        raise GGMLError(f"{name} quantization needs finite input (NaN/inf make ggml abort)", op=op)
    imat = ffi.NULL
    if imatrix is not None:
        imatrix = np.asarray(imatrix)
        if imatrix.dtype != np.float32 or imatrix.shape != (n_per_row,):
            raise GGMLShapeError(
                f"imatrix must be float32 of shape ({n_per_row},), got {imatrix.dtype} {imatrix.shape}", op=op
            )
        imatrix = np.ascontiguousarray(imatrix)
        imat = ffi.cast("const float *", ffi.from_buffer(imatrix))
    elif C.ggml_quantize_requires_imatrix(t):
        raise GGMLError(f"{name} quantization requires an importance matrix (imatrix=)", op=op)
    row_bytes = n_per_row // blck * size
    out = np.empty((n_rows, row_bytes), dtype=np.uint8)
    if n_rows == 0:
        return out
    C.ggml_quantize_init(t)
    src = ffi.cast("const float *", ffi.from_buffer(x))
    written = C.ggml_quantize_chunk(t, src, ffi.from_buffer(out), 0, n_rows, n_per_row, imat)
    if written != out.nbytes:  # unreachable: ggml asserts the same
        raise GGMLError(f"wrote {written} bytes, expected {out.nbytes}", op=op)
    return out


def dequantize(ggml_type: int, data, n_elements: int | None = None) -> np.ndarray:
    """Decode ggml blocks to float32 with the type's ``to_float`` (``ggml_get_type_traits``).

    Args:
        ggml_type: the type id of ``data``.
        data: the raw bytes (bytes, bytearray, memoryview or a C-contiguous numpy array of
              any dtype, read as bytes).
        n_elements: how many values ``data`` holds; inferred from its size when None.  Must
              be a multiple of the block size and match ``len(data)`` exactly.
    Returns:
        float32 array of ``n_elements`` values.
    """
    C = _lib.C()
    ffi = _lib.ffi()
    name, blck, size = type_info(ggml_type)
    op = "ggml_type_traits.to_float"
    raw = _bytes_view(data, op)
    nbytes = raw.nbytes
    if n_elements is None:
        if nbytes % size:
            raise GGMLShapeError(f"{nbytes} bytes is not a whole number of {name} blocks ({size} bytes)", op=op)
        n_elements = nbytes // size * blck
    n_elements = int(n_elements)
    if n_elements < 0 or n_elements % blck:
        raise GGMLShapeError(f"{n_elements} elements is not a multiple of the {name} block size {blck}", op=op)
    need = n_elements // blck * size
    if need != nbytes:
        raise GGMLShapeError(f"{n_elements} {name} elements take {need} bytes, data has {nbytes}", op=op)
    traits = C.ggml_get_type_traits(int(ggml_type))
    if traits.to_float == ffi.NULL:
        if name == "F32":
            return raw.view(np.float32).copy()
        raise GGMLTypeError(f"ggml has no to_float for {name}", op=op)
    out = np.empty(n_elements, dtype=np.float32)
    if n_elements:
        traits.to_float(ffi.from_buffer(raw), ffi.cast("float *", ffi.from_buffer(out)), n_elements)
    return out


def _float32_matrix(x, op: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise GGMLTypeError(f"expected a numpy array, got {type(x).__name__}", op=op)
    if x.dtype != np.float32:
        raise GGMLTypeError(f"expected float32 input, got {x.dtype}", op=op)
    if x.ndim != 2:
        raise GGMLShapeError(f"expected shape (n_rows, n_per_row), got {x.shape}", op=op)
    if not x.flags.c_contiguous:
        raise GGMLShapeError("input must be C-contiguous (use np.ascontiguousarray)", op=op)
    return x


def _bytes_view(data, op: str) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise GGMLShapeError("data must be C-contiguous", op=op)
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        raise GGMLTypeError(f"data must be bytes-like or a numpy array, got {type(data).__name__}", op=op) from None
