"""The legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.

Each quantizer is ``quantize_row_*_ref`` of ggml-quants.c vectorized over blocks; the
comments quote the C expression each line reproduces.  Layouts (bytes):

    Q4_0  [f16 d][16 B: q[j] | q[j+16] << 4]
    Q4_1  [f16 d][f16 m][16 B]
    Q5_0  [f16 d][u32 qh][16 B]    bit 4 of q[j] -> qh bit j
    Q5_1  [f16 d][f16 m][u32 qh][16 B]
    Q8_0  [f16 d][32 x i8]
    Q8_1  [f16 d][f16 s = d*sum(q)][32 x i8]
"""
from __future__ import annotations

import numpy as np

from ..types import GGMLType
from ._common import (
    F32,
    Codec,
    cvtt_i32,
    first_abs_max,
    fold_max_abs,
    into_codec,
    f32_to_f16_bits,
    le_f16,
    pack_nibbles,
    put_u16,
    roundf,
    nan_ignoring,
    safe_inv,
)

_FLT_MAX = F32(np.finfo(np.float32).max)


def _min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``min = FLT_MAX, max = -FLT_MAX; if (v < min) min = v; if (v > max) max = v;`` per row:
    NaN ignored, and a zero result keeps the sign of the first zero, as the C loop does."""
    xt = np.ascontiguousarray(x.T)  # (32, n): reductions over axis 0 are whole-row operations
    mn = np.minimum(nan_ignoring(np.minimum, xt, axis=0), _FLT_MAX)
    mx = np.maximum(nan_ignoring(np.maximum, xt, axis=0), -_FLT_MAX)
    for v in (mn, mx):
        z = v == 0
        if z.any():  # which zero (+0.0 or -0.0) came first
            sub = x[z]
            idx = (sub == 0).argmax(axis=1)
            v[z] = sub[np.arange(len(idx)), idx]
    return mn, mx


def _qh_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of each of the 32 quants → the 4 little-endian bytes of ``qh`` (n, 4)."""
    bits = ((q >> 4) & 1).astype(np.uint8)  # (n, 32): bit j of qh
    return np.packbits(bits, axis=1, bitorder="little")


# --------------------------------------------------------------------------- Q4_0 / Q5_0


def _quantize_sym(x: np.ndarray, div: float, bias: float, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0/Q5_0: ``d = max / -div; q = MIN(qmax, (int8_t)(x*id + bias))`` → (d bits, q uint8).

    ``x*id + bias`` lies in [0, qmax + 1.5] unless it is NaN (the truncation then gives
    INT32_MIN, whose int8_t is 0), so the ``int8_t`` step needs no wrap-around."""
    _, mx = first_abs_max(x)
    d = mx / F32(-div)
    idd = safe_inv(d)
    v = x * idd[:, None]
    v += F32(bias)
    q = np.minimum(cvtt_i32(v), qmax).astype(np.uint8)  # INT32_MIN → 0
    return f32_to_f16_bits(d), q


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    d, q = _quantize_sym(x, 8, 8.5, 15)
    out = np.empty((x.shape[0], 18), np.uint8)
    put_u16(out, 0, d)
    out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
    return out


def dequantize_q4_0_into(q: np.ndarray, out: np.ndarray) -> None:
    qs = q[:, 2:]
    out[:, :16] = qs & 0x0F  # uint8 → float32 on assignment: faster than a lookup table
    out[:, 16:] = qs >> 4
    out -= F32(8)  # (q - 8) is exact in float32, as the C int is
    out *= le_f16(q, 0)[:, None]


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    d, q = _quantize_sym(x, 16, 16.5, 31)
    out = np.empty((x.shape[0], 22), np.uint8)
    put_u16(out, 0, d)
    out[:, 2:6] = _qh_bits(q)
    out[:, 6:] = pack_nibbles(q[:, :16] & 0x0F, q[:, 16:] & 0x0F)
    return out


# --------------------------------------------------------------------------- Q4_1 / Q5_1


def _quantize_affine(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1/Q5_1: ``d = (max-min)/levels; (x-min)*id + 0.5f`` truncated → (d, m bits, q int32).

    The truncated value lies in [0, levels] unless it is NaN (INT32_MIN, whose low byte 0 is
    what the C casts to ``int8_t``/``uint8_t`` give)."""
    mn, mx = _min_max(x)
    d = (mx - mn) / F32(levels)
    idd = safe_inv(d)
    v = x - mn[:, None]
    v *= idd[:, None]
    v += F32(0.5)
    return f32_to_f16_bits(d), f32_to_f16_bits(mn), cvtt_i32(v)


def quantize_q4_1(x: np.ndarray) -> np.ndarray:
    d, m, q = _quantize_affine(x, 15)
    q = np.minimum(q, 15).astype(np.uint8)  # MIN(15, (int8_t)...); INT32_MIN → 0
    out = np.empty((x.shape[0], 20), np.uint8)
    put_u16(out, 0, d)
    put_u16(out, 2, m)
    out[:, 4:] = q[:, :16] | (q[:, 16:] << 4)
    return out


def dequantize_q4_1_into(q: np.ndarray, out: np.ndarray) -> None:
    qs = q[:, 4:]
    out[:, :16] = qs & 0x0F
    out[:, 16:] = qs >> 4
    out *= le_f16(q, 0)[:, None]  # x*d + m
    out += le_f16(q, 2)[:, None]


def quantize_q5_1(x: np.ndarray) -> np.ndarray:
    d, m, q = _quantize_affine(x, 31)
    q = q.astype(np.uint8)  # (uint8_t), no clamp: the low byte
    out = np.empty((x.shape[0], 24), np.uint8)
    put_u16(out, 0, d)
    put_u16(out, 2, m)
    out[:, 4:8] = _qh_bits(q)
    out[:, 8:] = pack_nibbles(q[:, :16] & 0x0F, q[:, 16:] & 0x0F)
    return out


def _q5_into(q: np.ndarray, out: np.ndarray, qh_at: int) -> None:
    """The 5-bit values (low nibble | qh bit << 4) of Q5_0/Q5_1 into ``out`` as floats."""
    hb = np.unpackbits(q[:, qh_at : qh_at + 4], axis=1, bitorder="little") << 4  # (n, 32): 0/16
    qs = q[:, qh_at + 4 :]
    out[:, :16] = (qs & 0x0F) | hb[:, :16]
    out[:, 16:] = (qs >> 4) | hb[:, 16:]


def dequantize_q5_0_into(q: np.ndarray, out: np.ndarray) -> None:
    _q5_into(q, out, 2)
    out -= F32(16)
    out *= le_f16(q, 0)[:, None]


def dequantize_q5_1_into(q: np.ndarray, out: np.ndarray) -> None:
    _q5_into(q, out, 4)
    out *= le_f16(q, 0)[:, None]
    out += le_f16(q, 2)[:, None]


# --------------------------------------------------------------------------- Q8_0 / Q8_1


def _quantize_q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``amax = MAX(amax, fabsf(v)); d = amax/127; q = roundf(x*id)`` → (d float32, q int8)."""
    d = fold_max_abs(x) / F32(127)
    idd = safe_inv(d)
    with np.errstate(invalid="ignore"):
        r = roundf(x * idd[:, None])
    return d, cvtt_i32(r).astype(np.int8)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    d, q = _quantize_q8(x)
    out = np.empty((x.shape[0], 34), np.uint8)
    put_u16(out, 0, f32_to_f16_bits(d))
    out[:, 2:] = q.view(np.uint8)
    return out


def dequantize_q8_0_into(q: np.ndarray, out: np.ndarray) -> None:
    np.multiply(q[:, 2:].view(np.int8), le_f16(q, 0)[:, None], out=out)


def quantize_q8_1(x: np.ndarray) -> np.ndarray:
    d, q = _quantize_q8(x)
    s = q.astype(np.int32).sum(axis=1)  # int sum: order does not matter
    out = np.empty((x.shape[0], 36), np.uint8)
    put_u16(out, 0, f32_to_f16_bits(d))
    with np.errstate(invalid="ignore"):
        put_u16(out, 2, f32_to_f16_bits(s.astype(F32) * d))  # sum*d
    out[:, 4:] = q.view(np.uint8)
    return out


def dequantize_q8_1(q: np.ndarray) -> np.ndarray:
    d = le_f16(q, 0)  # s is redundant (d * sum(q)); ggml's to_float ignores it too
    return q[:, 4:].view(np.int8).astype(F32) * d[:, None]


CODECS: dict[int, Codec] = {
    GGMLType.Q4_0: into_codec(quantize_q4_0, dequantize_q4_0_into, ((0, 2, 1),), 32),
    GGMLType.Q4_1: into_codec(quantize_q4_1, dequantize_q4_1_into, ((0, 2, 2),), 32),
    GGMLType.Q5_0: into_codec(quantize_q5_0, dequantize_q5_0_into, ((0, 2, 1), (2, 4, 1)), 32),
    GGMLType.Q5_1: into_codec(quantize_q5_1, dequantize_q5_1_into, ((0, 2, 2), (4, 4, 1)), 32),
    GGMLType.Q8_0: into_codec(quantize_q8_0, dequantize_q8_0_into, ((0, 2, 1),), 32),
    GGMLType.Q8_1: Codec(quantize_q8_1, dequantize_q8_1, ((0, 2, 2),)),
}
