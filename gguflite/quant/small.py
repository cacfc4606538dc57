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

Dequantizing.  Every dequantizer is ``value * scale``: a small integer (a trit, a 2-bit
code, an E2M1 or IQ4 table entry; IQ4_XS: times its 6-bit sub-block scale) times an fp16 /
E8M0 / UE4M3 field.  The float32 product is exact (at most 24 significant bits), so any
operand order gives C's value and only the inputs must match.  The codecs write into the
caller's chunk of output (``dequantize_into``) in a few whole-chunk passes, as legacy.py's
(see its docstring: per-block numpy calls and (n, 32)-shaped broadcasts cost more than the
arithmetic):

* the values in block order: nibbles and 2-bit codes unpacked on 8-byte words and moved
  with 1-D copies of 16/32-byte units; TQ1_0's base-3 digits from uint8 products and two
  compares, after each section's bytes are copied to all their digits' places;
* then either one int8 → float32 conversion (ternary types), or one ``take`` from a small
  table of float rows: two nibble values per uint16 of nibble bytes (IQ4, FP4), all the
  values of one ``qs`` byte (Q1_0: 8, Q2_0: 4);
* one multiply by the per-block scale ``np.repeat``-ed to the output size (fp16 fields
  read through a 64 Ki-entry table, E8M0/UE4M3 through 256-entry ones).
"""
from __future__ import annotations

import math

import numpy as np

from ..types import GGMLType
from ._common import (
    F32,
    Codec,
    into_codec,
    cvtt_i32,
    fold_max_abs,
    f32_to_f16_bits,
    field,
    le_f16,
    nan_ignoring,
    put_u16,
    roundf,
    rows,
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


# --------------------------------------------------------------------------- dequantize helpers

_QUIET = dict(over="ignore", invalid="ignore")
_LO4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_LO2 = np.uint64(0x0303030303030303)
_7F = np.uint64(0x7F7F7F7F7F7F7F7F)
_80 = np.uint64(0x8080808080808080)
_E8M0_HALF = _e8m0_half(np.arange(256))  # ggml_e8m0_to_fp32_half of every byte


def _flat(out: np.ndarray) -> np.ndarray:
    """A contiguous 1-D float32 array to build ``out`` in: ``out`` itself when it can be."""
    return out.reshape(-1) if out.flags.c_contiguous else np.empty(out.size, F32)


def _scale(flat: np.ndarray, factor: np.ndarray) -> None:
    """``flat *= factor`` (inf/NaN scales in the data give inf/NaN, as in C: no warnings)."""
    with np.errstate(**_QUIET):
        np.multiply(flat, factor, out=flat)


def _finish(out: np.ndarray, flat: np.ndarray) -> None:
    if not out.flags.c_contiguous:
        out[...] = flat.reshape(out.shape)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Rows of k = 8 or 16 ``qs`` bytes (m, k) → (m, 2k) uint8: the low nibbles (elements
    0..k-1), then the high nibbles (k..2k-1), as every 4-bit type here orders them."""
    m, k = qs.shape
    w = qs.reshape(-1).view(np.uint64)  # (m*k/8,) words
    s = np.empty((2, w.size), np.uint64)
    np.bitwise_and(w, _LO4, out=s[0])
    np.right_shift(w, np.uint64(4), out=s[1])
    np.bitwise_and(s[1], _LO4, out=s[1])
    z = np.empty((m, 2 * k), np.uint8)
    zv, sv = z.view(f"V{k}"), s.view(np.uint8).view(f"V{k}")  # (m, 2), (2, m)
    zv[:, 0] = sv[0]
    zv[:, 1] = sv[1]
    return z


def _pair_table(values: np.ndarray) -> np.ndarray:
    """For a 16-entry value table: every two adjacent nibble bytes (a, b), read as one native
    uint16, → the two float32 values (values[a], values[b]) as one uint64 (a 3856-entry
    gather table: one ``take`` converts two nibbles)."""
    a, b = np.meshgrid(np.arange(16, dtype=np.uint8), np.arange(16, dtype=np.uint8), indexing="ij")
    idx = np.stack([a.ravel(), b.ravel()], axis=1).copy().view(np.uint16)[:, 0]
    v = values.astype(F32)
    pairs = np.stack([v[a.ravel()], v[b.ravel()]], axis=1).copy().view(np.uint64)[:, 0]
    table = np.zeros(int(idx.max()) + 1, np.uint64)
    table[idx] = pairs
    return table


def _lookup_into(z: np.ndarray, table: np.ndarray, flat: np.ndarray) -> None:
    """``flat`` (2k,) float32 ← the pair ``table`` looked up at each two bytes of ``z`` (2k,)."""
    dst = flat.view(np.uint64)
    table.take(z.reshape(-1).view(np.uint16), out=dst, mode="wrap")  # indices are in range


_PAIRS_IQ4NL = _pair_table(KVALUES_IQ4NL)
_PAIRS_FP4 = _pair_table(KVALUES_FP4)


# --------------------------------------------------------------------------- TQ1_0 / TQ2_0


_TQ1_SECTIONS = ((0, 32, 5), (32, 16, 5), (48, 4, 4))  # (qs/qh byte offset, bytes, digits)
# 3^k for each element of a block (digit k of its section), for 1024 blocks (a default
# chunk): a full-size operand multiplies about twice as fast as a broadcast row
_TQ1_POW3 = np.tile(np.repeat(np.array([1, 3, 9, 27, 81] * 2 + [1, 3, 9, 27], np.uint8), [32] * 5 + [16] * 5 + [4] * 4),
                    (1024, 1))
_TQ1_POW3.flags.writeable = False


def dequantize_tq1_0_into(q: np.ndarray, out: np.ndarray) -> None:
    """Digit k of byte b is ``xi = ((uint8_t)(b * 3^k) * 3) >> 8``, i.e. 0 below 86, 1 below
    171, else 2 for ``x = (uint8_t)(b * 3^k)``; ``(float)(xi - 1) * d``.  Section by section
    (32 qs bytes x 5 digits, 16 qs bytes x 5, 4 qh bytes x 4) digit k of byte m goes to
    element ``start + width*k + m``: each section's bytes are copied (as one 32/16/4-byte
    unit) to all its digits' places, then the digits come out of whole-chunk passes."""
    q = rows(q)
    n = q.shape[0]
    x = np.empty((n, 256), np.uint8)
    start = 0
    for off, size, digits in _TQ1_SECTIONS:
        x[:, start : start + size * digits].view(f"V{size}")[...] = q[:, off : off + size].view(f"V{size}")
        start += size * digits
    np.multiply(x, _TQ1_POW3[:n] if n <= _TQ1_POW3.shape[0] else _TQ1_POW3[0], out=x)  # uint8_t wrap
    z = np.greater(x, np.uint8(85)).view(np.int8)
    le = np.less_equal(x, np.uint8(170), out=x.view(np.bool_)).view(np.int8)  # in place: x is done
    np.subtract(z, le, out=z)  # xi - 1
    del x, le
    flat = _flat(out)
    np.copyto(flat, z.reshape(-1), casting="unsafe")
    del z
    _scale(flat, np.repeat(le_f16(q, 52), 256))
    _finish(out, flat)


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


# 2l for every 8-byte word of a block's values (element 128j + 32l + m: word 16j + 4l + m/8),
# for 1024 blocks: a full-size shift operand is faster than a broadcast row
_TQ2_SHIFTS = np.tile(np.repeat(np.array([0, 2, 4, 6] * 2, np.uint64), 4), (1024, 1))
_TQ2_SHIFTS.flags.writeable = False


def dequantize_tq2_0_into(q: np.ndarray, out: np.ndarray) -> None:
    """``(float)(((qs[32j + m] >> 2l) & 3) - 1) * d`` → element 128j + 32l + m: each 32-byte
    half of ``qs`` copied (as one unit) to the 4 places l of its values, then shifted there."""
    q = rows(q)
    n = q.shape[0]
    z = np.empty((n, 2, 4, 32), np.uint8)
    for j in range(2):
        z[:, j].view("V32")[..., 0] = q[:, 32 * j : 32 * j + 32].view("V32")
    w = z.reshape(n, 32 * 8).view(np.uint64)  # (n, 32) words
    np.right_shift(w, _TQ2_SHIFTS[:n] if n <= _TQ2_SHIFTS.shape[0] else _TQ2_SHIFTS[0], out=w)
    np.bitwise_and(w, _LO2, out=w)
    np.add(w, _7F, out=w)  # q + 0x7f <= 0x82: no carry between bytes
    np.bitwise_xor(w, _80, out=w)  # ^ 0x80: q - 1 as int8
    flat = _flat(out)
    np.copyto(flat, z.reshape(-1).view(np.int8), casting="unsafe")
    del z, w
    _scale(flat, np.repeat(le_f16(q, 64), 256))
    _finish(out, flat)


def quantize_tq2_0(x: np.ndarray) -> np.ndarray:
    d, xi = _tq_ternary(x)
    v = (xi & 3).reshape(-1, 2, 4, 32)
    q = v[:, :, 0] | (v[:, :, 1] << 2) | (v[:, :, 2] << 4) | (v[:, :, 3] << 6)
    out = np.empty((x.shape[0], 66), np.uint8)
    out[:, :64] = (q & 0xFF).reshape(-1, 64)
    put_u16(out, 64, d)
    return out


# --------------------------------------------------------------------------- MXFP4 / NVFP4


def dequantize_mxfp4_into(q: np.ndarray, out: np.ndarray) -> None:
    """``kvalues_mxfp4[qs[j] & 0x0F] * d`` → element j, ``[qs[j] >> 4]`` → j + 16."""
    q = rows(q)
    flat = _flat(out)
    _lookup_into(_nibbles(field(q, 1, 16)), _PAIRS_FP4, flat)
    _scale(flat, np.repeat(_E8M0_HALF.take(q[:, 0]), 32))
    _finish(out, flat)


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


def dequantize_nvfp4_into(q: np.ndarray, out: np.ndarray) -> None:
    """Sub-block s of 16: ``kvalues_mxfp4[qs[8s + j] & 0x0F] * d_s`` → element 16s + j,
    ``[... >> 4]`` → 16s + 8 + j, with ``d_s = ggml_ue4m3_to_fp32(scales[s])``."""
    q = rows(q)
    flat = _flat(out)
    _lookup_into(_nibbles(field(q, 4, 32).reshape(-1, 8)), _PAIRS_FP4, flat)
    _scale(flat, np.repeat(_UE4M3.take(field(q, 0, 4).reshape(-1)), 16))
    _finish(out, flat)


# --------------------------------------------------------------------------- Q1_0 / Q2_0


def _byte_table(values: np.ndarray, per_byte: int, bits: int) -> np.ndarray:
    """byte → its ``per_byte`` fields of ``bits`` bits, low bits first, as the float32 values
    ``values[field]``: a (256, per_byte) table whose rows are gathered as whole units."""
    b = np.arange(256)[:, None] >> (bits * np.arange(per_byte))[None, :]
    return np.ascontiguousarray(values.astype(F32)[b & ((1 << bits) - 1)])


_Q1_ROWS = _byte_table(np.array([-1, 1]), 8, 1).view("V32")[:, 0]  # bit j of byte i → element 8i + j
_Q2_ROWS = _byte_table(np.array([-1, 0, 1, 2]), 4, 2).view("V16")[:, 0]  # bits 2k.. → element 4i + k


def _rows_into(q: np.ndarray, table: np.ndarray, out: np.ndarray, block_size: int) -> None:
    """``value(field) * d`` with one ``table`` row gathered per ``qs`` byte (the fields of a
    byte are consecutive elements) and ``d`` the fp16 at byte 0."""
    q = rows(q)
    flat = _flat(out)
    table.take(field(q, 2, 16).reshape(-1), out=flat.view(table.dtype), mode="wrap")
    _scale(flat, np.repeat(le_f16(q, 0), block_size))
    _finish(out, flat)


def dequantize_q1_0_into(q: np.ndarray, out: np.ndarray) -> None:
    """``bit ? d : -d`` (as ``(+-1.0f) * d``: the same value, NaN aside)."""
    _rows_into(q, _Q1_ROWS, out, 128)


def quantize_q1_0(x: np.ndarray) -> np.ndarray:
    d = seqsum(np.abs(x), axis=1) / F32(128)
    out = np.empty((x.shape[0], 18), np.uint8)
    put_u16(out, 0, f32_to_f16_bits(d))
    out[:, 2:] = np.packbits(x >= 0, axis=1, bitorder="little")
    return out


def dequantize_q2_0_into(q: np.ndarray, out: np.ndarray) -> None:
    """``(float)(((qs[i] >> 2k) & 3) - 1) * d`` → element 4i + k."""
    _rows_into(q, _Q2_ROWS, out, 64)


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


def dequantize_iq4_nl_into(q: np.ndarray, out: np.ndarray) -> None:
    """``d * kvalues_iq4nl[qs[j] & 0xf]`` → element j, ``[qs[j] >> 4]`` → j + 16."""
    q = rows(q)
    flat = _flat(out)
    _lookup_into(_nibbles(field(q, 2, 16)), _PAIRS_IQ4NL, flat)
    _scale(flat, np.repeat(le_f16(q, 0), 32))
    _finish(out, flat)


_M16 = np.uint64(0x0000FFFF0000FFFF)
_M8 = np.uint64(0x00FF00FF00FF00FF)
_M4 = np.uint64(0x000F000F000F000F)


def _iq4_xs_scales(q: np.ndarray) -> np.ndarray:
    """The 8 sub-block scales ``ls = (scales_l nibble) | ((scales_h >> 2ib) & 3) << 4`` of
    each block → float32 (n*8,) ``ls - 32``, by bit spreading on one 8-byte word per block."""
    lo = q[:, 4:8].view("<u4")[:, 0].astype(np.uint64)  # scales_l bytes s0..s3
    lo = (lo | (lo << np.uint64(16))) & _M16
    lo = (lo | (lo << np.uint64(8))) & _M8  # byte s_k in 16-bit lane k
    lo = (lo & _M4) | ((lo >> np.uint64(4)) & _M4) << np.uint64(8)  # byte 2k: s_k & 0xf, 2k+1: s_k >> 4
    hi = q[:, 2:4].view("<u2")[:, 0].astype(np.uint64)  # scales_h: 2 bits per sub-block
    hi = (hi | (hi << np.uint64(24))) & np.uint64(0x000000FF000000FF)
    hi = (hi | (hi << np.uint64(12))) & np.uint64(0x000F000F000F000F)
    hi = (hi | (hi << np.uint64(6))) & _LO2  # byte ib: (scales_h >> 2ib) & 3
    ls = (lo | (hi << np.uint64(4))).astype("<u8").view(np.uint8)  # (8n,) in sub-block order
    return ls.astype(F32) - F32(32)


def dequantize_iq4_xs_into(q: np.ndarray, out: np.ndarray) -> None:
    """``dl = d * (ls - 32)``; ``dl * kvalues_iq4nl[qs[16ib + j] & 0xf]`` → element 32ib + j,
    ``[... >> 4]`` → 32ib + 16 + j."""
    q = rows(q)
    with np.errstate(**_QUIET):
        dl = np.repeat(le_f16(q, 0), 8) * _iq4_xs_scales(q)  # (8n,), exact
    flat = _flat(out)
    _lookup_into(_nibbles(field(q, 8, 128).reshape(-1, 16)), _PAIRS_IQ4NL, flat)
    _scale(flat, np.repeat(dl, 32))
    _finish(out, flat)


CODECS: dict[int, Codec] = {
    GGMLType.TQ1_0: into_codec(quantize_tq1_0, dequantize_tq1_0_into, ((52, 2, 1),), 256),
    GGMLType.TQ2_0: into_codec(quantize_tq2_0, dequantize_tq2_0_into, ((64, 2, 1),), 256),
    GGMLType.MXFP4: into_codec(quantize_mxfp4, dequantize_mxfp4_into, (), 32),
    GGMLType.NVFP4: into_codec(quantize_nvfp4, dequantize_nvfp4_into, (), 64),
    GGMLType.Q1_0: into_codec(quantize_q1_0, dequantize_q1_0_into, ((0, 2, 1),), 128),
    GGMLType.Q2_0: into_codec(quantize_q2_0, dequantize_q2_0_into, ((0, 2, 1),), 64),
    GGMLType.IQ4_NL: into_codec(None, dequantize_iq4_nl_into, ((0, 2, 1),), 32),
    GGMLType.IQ4_XS: into_codec(None, dequantize_iq4_xs_into, ((0, 2, 2),), 256),
}
