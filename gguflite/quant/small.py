"""The newer small types: ternary TQ1_0/TQ2_0, FP4 (MXFP4, NVFP4), Q1_0, Q2_0, and the
non-linear IQ4_NL/IQ4_XS (dequantize only: their quantizers run a per-block scale search that
is not reproduced here).

Layouts (bytes):

    TQ1_0  [48 qs: 5 trits/byte][4 qh: 4 trits/byte][f16 d]            54 / 256
    TQ2_0  [64 qs: 2 bits][f16 d]                                      66 / 256
    MXFP4  [u8 e: E8M0][16 qs: E2M1 nibbles]                           17 / 32
    NVFP4  [4 x u8 UE4M3 sub-block scales][32 qs]                      36 / 64
    Q1_0   [f16 d][16 B: sign bits]                                    18 / 128
    Q2_0   [f16 d][16 B: 2 bits, q-1 in {-1,0,1,2}]                    18 / 64
    IQ4_NL [f16 d][16 qs: indices into kvalues_iq4nl]                  18 / 32
    IQ4_XS [f16 d][u16 scales_h][4 scales_l][128 qs]                  136 / 256
"""
from __future__ import annotations

import math

import numpy as np

from ..types import GGMLType
from ._common import (
    F32,
    Codec,
    cvtt_i32,
    fold_max_abs,
    f32_to_f16_bits,
    le_f16,
    le_u16,
    nan_ignoring,
    put_u16,
    roundf,
    safe_inv,
    seqsum,
)

# ggml-common.h value tables (16 entries each; ggml's own constants).
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
KVALUES_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)  # 2 x E2M1


def _e8m0_half(e: np.ndarray) -> np.ndarray:
    """``ggml_e8m0_to_fp32_half``: 2^(e-128) as float32 bits (e < 2: denormal patterns)."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23).astype(np.uint32)
    return bits.view(F32)


def _ue4m3_table() -> np.ndarray:
    """``ggml_ue4m3_to_fp32`` for all 256 bytes (value * 0.5, 0 and 0x7f → 0)."""
    t = np.zeros(256, F32)
    for x in range(256):
        if x in (0, 0x7F):
            continue
        exp, man = (x >> 3) & 0xF, x & 7
        raw = math.ldexp(man, -9) if exp == 0 else math.ldexp(1.0 + man / 8.0, exp - 7)
        t[x] = F32(raw) * F32(0.5)
    return t


_UE4M3 = _ue4m3_table()
_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)


def _trits(q: np.ndarray, n: int) -> np.ndarray:
    """TQ1_0 digit extraction: ``((uint8_t)(q * 3^k) * 3) >> 8`` for k < n → (..., n, bytes)."""
    qk = (q[..., None, :].astype(np.uint16) * _POW3[:n, None]) & 0xFF
    return ((qk * 3) >> 8).astype(np.int32)


# --------------------------------------------------------------------------- TQ1_0 / TQ2_0


def dequantize_tq1_0(q: np.ndarray) -> np.ndarray:
    d = le_f16(q, 52)
    a = _trits(q[:, 0:32], 5).reshape(-1, 160)  # element 32n + m
    b = _trits(q[:, 32:48], 5).reshape(-1, 80)  # 160 + 16n + m
    c = _trits(q[:, 48:52], 4).reshape(-1, 16)  # 240 + 4n + j
    v = np.concatenate([a, b, c], axis=1) - 1
    return v.astype(F32) * d[:, None]


def _tq_ternary(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``amax = MAX(amax, fabsf(v)); d = amax; xi = lroundf(x*id) + 1`` → (d bits, xi int32)."""
    d = fold_max_abs(x)
    idd = safe_inv(d)
    with np.errstate(invalid="ignore"):
        xi = cvtt_i32(roundf(x * idd[:, None])) + np.int32(1)  # lroundf → long; + 1 → int
    return f32_to_f16_bits(d), xi


def quantize_tq1_0(x: np.ndarray) -> np.ndarray:
    d, xi = _tq_ternary(x)

    def pack(v: np.ndarray, mult: int = 1) -> np.ndarray:  # v: (nb, digits, bytes)
        q = np.zeros(v.shape[::2], np.int64)
        for k in range(v.shape[1]):
            q = (q * 3 + v[:, k]) & 0xFF  # uint8_t q *= 3; q += xi
        q = (q * mult) & 0xFF
        return ((q * 256 + 242) // 243).astype(np.uint8)

    out = np.empty((x.shape[0], 54), np.uint8)
    out[:, 0:32] = pack(xi[:, :160].reshape(-1, 5, 32))
    out[:, 32:48] = pack(xi[:, 160:240].reshape(-1, 5, 16))
    out[:, 48:52] = pack(xi[:, 240:].reshape(-1, 4, 4), 3)
    put_u16(out, 52, d)
    return out


def dequantize_tq2_0(q: np.ndarray) -> np.ndarray:
    d = le_f16(q, 64)
    v = q[:, :64].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    return (((v & 3).astype(np.int32) - 1).astype(F32)).reshape(-1, 256) * d[:, None]


def quantize_tq2_0(x: np.ndarray) -> np.ndarray:
    d, xi = _tq_ternary(x)
    v = (xi & 3).reshape(-1, 2, 4, 32)
    q = v[:, :, 0] | (v[:, :, 1] << 2) | (v[:, :, 2] << 4) | (v[:, :, 3] << 6)
    out = np.empty((x.shape[0], 66), np.uint8)
    out[:, :64] = (q & 0xFF).reshape(-1, 64)
    put_u16(out, 64, d)
    return out


# --------------------------------------------------------------------------- MXFP4 / NVFP4


def _fp4_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, k) bytes → (n, 2k) E2M1 values ×2: low nibbles, then high nibbles."""
    return KVALUES_FP4[np.concatenate([qs & 0x0F, qs >> 4], axis=1)].astype(F32)


def dequantize_mxfp4(q: np.ndarray) -> np.ndarray:
    return _fp4_nibbles(q[:, 1:]) * _e8m0_half(q[:, 0])[:, None]


def _best_fp4(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``best_index_mxfp4``: first index of the least ``|kvalues[i]*d - x|``."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(KVALUES_FP4.astype(F32)[None, None, :] * d[:, None, None] - x[:, :, None])
    return err.argmin(axis=2).astype(np.uint8)  # all-NaN rows → 0, as in C


def quantize_mxfp4(x: np.ndarray) -> np.ndarray:
    amax = nan_ignoring(np.maximum, np.abs(x))
    amax = np.where(amax > 0, amax, F32(0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lg = np.floor(np.log2(np.where(amax > 0, amax, F32(1)).astype(np.float64)).astype(F32))
        ef = lg - F32(2) + F32(127)
    e = np.where(amax > 0, cvtt_i32(ef) & 0xFF, 0).astype(np.uint8)
    idx = _best_fp4(x, _e8m0_half(e))
    out = np.empty((x.shape[0], 17), np.uint8)
    out[:, 0] = e
    out[:, 1:] = idx[:, :16] | (idx[:, 16:] << 4)
    return out


def _fp32_to_ue4m3(v: np.ndarray) -> np.ndarray:
    """``ggml_fp32_to_ue4m3``: positive float → UE4M3 byte (round half up on the mantissa,
    448 and above → 0x7e, subnormals rounded from ``x*512 + 0.5``, NaN and <= 0 → 0)."""
    pos = v > 0
    x = np.where(pos, np.minimum(v, F32(448)), F32(1))
    bits = x.view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.int32) - 127 + 7
    man = ((bits >> 20) & 7).astype(np.int32) + ((bits >> 19) & 1).astype(np.int32)
    carry = man > 7
    exp = np.where(carry, exp + 1, exp)
    man = np.where(carry, 0, man)
    normal = np.where(exp >= 15, 0x7E, (exp << 3) | man)
    sub = cvtt_i32(x * F32(512) + F32(0.5))
    sub = np.where(sub < 1, 0, np.minimum(sub, 7))
    orig_exp = ((bits >> 23) & 0xFF).astype(np.int32) - 127 + 7
    out = np.where(orig_exp <= 0, sub, normal)
    return np.where(pos, out, 0).astype(np.uint8)


def quantize_nvfp4(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    xs = x.reshape(nb * 4, 16)  # 16-element sub-blocks, each with its own UE4M3 scale
    ax = nan_ignoring(np.maximum, np.abs(xs))
    amax = np.where(ax > 0, ax, F32(0))  # `if (amax < fabsf(v))`: NaN never taken
    ue = _fp32_to_ue4m3(amax / F32(6))
    idx = _best_fp4(xs, _UE4M3[ue])
    out = np.empty((nb, 36), np.uint8)
    out[:, :4] = ue.reshape(nb, 4)
    out[:, 4:] = (idx[:, :8] | (idx[:, 8:] << 4)).reshape(nb, 32)
    return out


def dequantize_nvfp4(q: np.ndarray) -> np.ndarray:
    d = _UE4M3[q[:, :4]]  # (n, 4) sub-block scales
    v = _fp4_nibbles(q[:, 4:].reshape(-1, 8)).reshape(-1, 4, 16)
    return (v * d[..., None]).reshape(-1, 64)


# --------------------------------------------------------------------------- Q1_0 / Q2_0


def dequantize_q1_0(q: np.ndarray) -> np.ndarray:
    d = le_f16(q, 0)[:, None]
    bits = np.unpackbits(q[:, 2:], axis=1, bitorder="little")
    return np.where(bits != 0, d, -d)


def quantize_q1_0(x: np.ndarray) -> np.ndarray:
    d = seqsum(np.abs(x), axis=1) / F32(128)
    out = np.empty((x.shape[0], 18), np.uint8)
    put_u16(out, 0, f32_to_f16_bits(d))
    out[:, 2:] = np.packbits(x >= 0, axis=1, bitorder="little")
    return out


def dequantize_q2_0(q: np.ndarray) -> np.ndarray:
    d = le_f16(q, 0)
    v = (q[:, 2:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3  # (n, 16, 4): element 4*byte + k
    return (v.reshape(-1, 64).astype(np.int32) - 1).astype(F32) * d[:, None]


def quantize_q2_0(x: np.ndarray) -> np.ndarray:
    ax = nan_ignoring(np.maximum, np.abs(x))
    d = np.where(ax > 0, ax, F32(0))  # `if (a > amax) amax = a`: NaN never taken
    with np.errstate(divide="ignore", invalid="ignore"):
        idd = np.where(d > 0, F32(1) / np.where(d > 0, d, F32(1)), F32(0))
        qv = cvtt_i32(roundf(x * idd[:, None])).astype(np.int64) + 1
    qv = np.clip(qv, 0, 3).astype(np.uint8).reshape(-1, 16, 4)
    out = np.empty((x.shape[0], 18), np.uint8)
    put_u16(out, 0, f32_to_f16_bits(d))
    out[:, 2:] = qv[:, :, 0] | (qv[:, :, 1] << 2) | (qv[:, :, 2] << 4) | (qv[:, :, 3] << 6)
    return out


# --------------------------------------------------------------------------- IQ4_NL / IQ4_XS


def dequantize_iq4_nl(q: np.ndarray) -> np.ndarray:
    d = le_f16(q, 0)
    qs = q[:, 2:]
    v = KVALUES_IQ4NL[np.concatenate([qs & 0xF, qs >> 4], axis=1)].astype(F32)
    return d[:, None] * v


def dequantize_iq4_xs(q: np.ndarray) -> np.ndarray:
    d = le_f16(q, 0)
    sh = le_u16(q, 2).astype(np.int32)
    ib = np.arange(8)
    sl = (q[:, 4 + ib // 2].astype(np.int32) >> (4 * (ib % 2))) & 0xF
    ls = sl | (((sh[:, None] >> (2 * ib)) & 3) << 4)
    dl = d[:, None] * (ls - 32).astype(F32)  # (n, 8)
    qs = q[:, 8:].reshape(-1, 8, 16)
    v = KVALUES_IQ4NL[np.concatenate([qs & 0xF, qs >> 4], axis=2)].astype(F32)  # (n, 8, 32)
    return (dl[..., None] * v).reshape(-1, 256)


CODECS: dict[int, Codec] = {
    GGMLType.TQ1_0: Codec(quantize_tq1_0, dequantize_tq1_0, ((52, 2, 1),)),
    GGMLType.TQ2_0: Codec(quantize_tq2_0, dequantize_tq2_0, ((64, 2, 1),)),
    GGMLType.MXFP4: Codec(quantize_mxfp4, dequantize_mxfp4, ()),
    GGMLType.NVFP4: Codec(quantize_nvfp4, dequantize_nvfp4, ()),
    GGMLType.Q1_0: Codec(quantize_q1_0, dequantize_q1_0, ((0, 2, 1),)),
    GGMLType.Q2_0: Codec(quantize_q2_0, dequantize_q2_0, ((0, 2, 1),)),
    GGMLType.IQ4_NL: Codec(None, dequantize_iq4_nl, ((0, 2, 1),)),
    GGMLType.IQ4_XS: Codec(None, dequantize_iq4_xs, ((0, 2, 2),)),
}
