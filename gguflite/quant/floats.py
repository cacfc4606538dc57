"""Plain element types: F32, F16, BF16, F64 and the integer types I8..I64.

F16 and BF16 follow ggml's row converters (``ggml_fp32_to_fp16_row`` and
``ggml_fp32_to_bf16_row_ref``): round to nearest even; NaN → quiet NaN keeping its sign
(F16: ``0x7e00``; BF16: the top 16 bits with bit 6 set).  The "block" of these types is one
element, so the codecs see arrays of shape (n, 1).
"""
from __future__ import annotations

import numpy as np

from ..types import GGMLType
from ._common import F32, Codec, f32_to_f16_bits, into_codec


def _as_bytes(a: np.ndarray, itemsize: int) -> np.ndarray:
    """(n,) little-endian values → (n, itemsize) bytes."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1, itemsize)


def quantize_f16(x: np.ndarray) -> np.ndarray:
    return _as_bytes(f32_to_f16_bits(x[:, 0]).astype("<u2"), 2)


def dequantize_f16_into(q: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out[:, 0], np.ascontiguousarray(q).view("<f2")[:, 0])


def quantize_bf16(x: np.ndarray) -> np.ndarray:
    """``ggml_compute_fp32_to_bf16``: NaN → ``(u >> 16) | 64``, else ``(u + 0x7fff + ((u >> 16) & 1)) >> 16``.

    In place on one uint32 temporary (uint32 arithmetic wraps as C's does); NaN rows, rare,
    are patched afterwards."""
    v = np.ascontiguousarray(x[:, 0])
    u = v.view(np.uint32)
    r = u >> np.uint32(16)
    r &= np.uint32(1)
    r += np.uint32(0x7FFF)
    r += u
    r >>= np.uint32(16)
    nan = np.isnan(v)
    if nan.any():
        r[nan] = (u[nan] >> np.uint32(16)) | np.uint32(64)
    return _as_bytes(r.astype("<u2"), 2)


def dequantize_bf16_into(q: np.ndarray, out: np.ndarray) -> None:
    u = out.view(np.uint32)
    np.copyto(u[:, 0], np.ascontiguousarray(q).view("<u2")[:, 0])
    u <<= 16


def _plain(dtype: str, quantizable: bool) -> Codec:
    """A type stored as-is in ``dtype``; dequantizing converts to float32.  Only the float
    types can be produced from float32 (ggml has no float → integer tensor conversion)."""
    dt = np.dtype(dtype)

    def quantize(x: np.ndarray) -> np.ndarray:
        return _as_bytes(x[:, 0].astype(dt), dt.itemsize)

    def dequantize(q: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(q).view(dt).astype(F32)

    swap = ((0, dt.itemsize, 1),) if dt.itemsize > 1 else ()
    return Codec(quantize if quantizable else None, dequantize, swap)


CODECS: dict[int, Codec] = {
    GGMLType.F32: _plain("<f4", True),
    GGMLType.F16: into_codec(quantize_f16, dequantize_f16_into, ((0, 2, 1),), 1),
    GGMLType.BF16: into_codec(quantize_bf16, dequantize_bf16_into, ((0, 2, 1),), 1),
    GGMLType.F64: _plain("<f8", True),
    GGMLType.I8: _plain("<i1", False),
    GGMLType.I16: _plain("<i2", False),
    GGMLType.I32: _plain("<i4", False),
    GGMLType.I64: _plain("<i8", False),
}
