"""The legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.

Each quantizer is ``quantize_row_*_ref`` of ggml-quants.c vectorized over blocks; the
comments quote the C expression each line reproduces.  Layouts (bytes):

    Q4_0  [f16 d][16 B: q[j] | q[j+16] << 4]
    Q4_1  [f16 d][f16 m][16 B]
    Q5_0  [f16 d][u32 qh][16 B]    bit 4 of q[j] -> qh bit j
    Q5_1  [f16 d][f16 m][u32 qh][16 B]
    Q8_0  [f16 d][32 x i8]
    Q8_1  [f16 d][f16 s = d*sum(q)][32 x i8]

Speed.  A numpy operation on an (n_blocks, 32) array whose rows are not contiguous, or that
broadcasts a per-block value, runs one inner loop per block row: a few ns of overhead per
32 values, more than the arithmetic.  So these codecs avoid such operations:

* the quantizers work in a *lane* layout (``_lanes``): the chunk transposed in 16-byte
  units, (8, 4n) float32, lane k holding elements 4k..4k+3 of every block.  Per-block
  reductions are then whole-lane operations, the per-block scale a whole-lane multiply by
  a 4x repeated vector, and the low (elements 0..15) and high (16..31) nibbles are lanes
  0..3 and 4..7, so packing is one operation on 8-byte words; the byte lanes go back into
  the blocks with four (Q8: eight) 4-byte-unit copies;
* the dequantizers unpack nibbles on 8-byte words of the contiguous ``qs`` bytes, place
  them with 16-byte-unit copies, and scale with whole-array passes over a 32x repeated
  ``d`` (and ``m``);
* fields are read and written through views of structured widths (``"V16"``, ``"<u2"``,
  ``"<u4"``): one strided 1-D copy instead of a 2-D one.  Few numpy calls per chunk
  matters too: each costs about a microsecond.

Exactness is unchanged: every float step is the C step in float32 in the C order; the
special rows (NaN, ties between +a and -a, signed zeros) that the fast reductions cannot
order take the exact per-row loops (``_abs_max_exact``, ``_min_max_exact``, ``fold_max_abs``).
"""
from __future__ import annotations

import numpy as np

from ..types import GGMLType
from ._common import (
    F16_TO_F32,
    F32,
    Codec,
    field,
    fold_max_abs,
    into_codec,
    f32_to_f16_bits,
    le_f16,
    nan_ignoring,
    put_u16,
    rows,
)

_FLT_MAX = F32(np.finfo(np.float32).max)
# inf and NaN values are legitimate (handled as in C): no warnings for their arithmetic
_QUIET = dict(over="ignore", invalid="ignore", divide="ignore")
_LO4 = np.uint64(0x0F0F0F0F0F0F0F0F)  # the low nibble of each byte of an 8-byte word
_HI4 = np.uint64(0xF0F0F0F0F0F0F0F0)


# --------------------------------------------------------------------------- lane layout


def _lanes(x: np.ndarray) -> np.ndarray:
    """Blocks (n, 32) float32 → (8, 4n) float32 copy; ``lanes[k, 4*i + r] = x[i, 4*k + r]``."""
    x = np.ascontiguousarray(x, dtype=F32)
    return x.view("V16").T.copy().view(F32)  # a copy even when n == 1 (then .T is contiguous)


def _block_max_min(lanes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block max and min of ``lanes`` (NaN-propagating: a block with a NaN gives NaN; the
    sign of a zero result is unspecified) → (n,), (n,)."""
    s = np.empty((2, lanes.shape[1]), F32)  # (max, min) over the 8 lanes: 4 partials per block
    np.maximum.reduce(lanes, axis=0, out=s[0])
    np.minimum.reduce(lanes, axis=0, out=s[1])
    n = lanes.shape[1] // 4
    t = s.reshape(-1, 4).T.copy()  # (4, 2n): partial r of each block in row r
    return np.maximum.reduce(t[:, :n], axis=0), np.minimum.reduce(t[:, n:], axis=0)


def _repeat4(v: np.ndarray) -> np.ndarray:
    """``np.repeat(v, 4)``, as four strided copies (faster for float32 (n,))."""
    out = np.empty((v.shape[0], 4), v.dtype)
    for r in range(4):
        out[:, r] = v
    return out.reshape(-1)


def _scale_lanes(lanes: np.ndarray, idd: np.ndarray, bias: float, offset: np.ndarray | None = None) -> None:
    """In place: ``(x - offset)*id + bias`` per block, each step rounded to float32 as in C."""
    if offset is not None:
        np.subtract(lanes, _repeat4(offset), out=lanes)
    np.multiply(lanes, _repeat4(idd), out=lanes)
    np.add(lanes, F32(bias), out=lanes)


def _to_bytes(lanes: np.ndarray, qmax: int | None) -> np.ndarray:
    """``(uint8_t) MIN(qmax, (int8_t) v)`` (or ``(uint8_t) v`` for ``qmax`` None) → uint8 lanes.

    numpy's float → int8 cast is the x86 truncation keeping the low byte, as C's
    ``(int8_t)``/``(uint8_t)`` of a float (NaN, inf, out of range → low byte of INT32_MIN = 0);
    tests/test_quant.py checks NaN/inf/huge/denormal rows against ggml to keep this honest.
    The clamp compares with a whole lane of ``qmax``: numpy's min against a scalar is slow."""
    b = lanes.astype(np.int8)
    if qmax is not None:
        np.minimum(b, np.full(b.shape[1], qmax, np.int8), out=b)
    return b.view(np.uint8)


def _words(b: np.ndarray) -> np.ndarray:
    """uint8 lanes as 8-byte words when the lane length allows (byte-wise ops are the same)."""
    return b.view(np.uint64) if b.shape[-1] % 8 == 0 else b


def _pack_nibbles(b: np.ndarray, mask_low: bool) -> np.ndarray:
    """Lanes (8, 4n) uint8 → (4, 4n): ``q[j] | q[j+16] << 4`` as stored by a ``uint8_t``
    (``mask_low``: ``(q[j] & 0x0F) | (q[j+16] & 0x0F) << 4``, the Q5 form)."""
    w = _words(b)
    lo4, hi4 = (_LO4, _HI4) if w.dtype == np.uint64 else (np.uint8(0x0F), np.uint8(0xF0))
    hi = np.left_shift(w[4:], 4)
    np.bitwise_and(hi, hi4, out=hi)
    lo = np.bitwise_and(w[:4], lo4) if mask_low else w[:4]
    np.bitwise_or(hi, lo, out=hi)
    return hi.view(np.uint8)


def _qh_from_lanes(b: np.ndarray) -> np.ndarray:
    """Bit 4 of each of the 32 quants → ``qh`` (n,) uint32 with bit j from element j."""
    w = _words(b)
    one = np.uint64(0x0101010101010101) if w.dtype == np.uint64 else np.uint8(1)
    bits = np.right_shift(w, 4)
    np.bitwise_and(bits, one, out=bits)  # 0/1 per byte
    # the 4 bytes (r = 0..3) of a block in a lane as one little-endian word; the multiply
    # moves byte r's bit 0 (bit 8r) to bit 24 + r, without carries (all products distinct)
    v = bits.view(np.uint8).view("<u4")  # (8, n)
    if v.dtype != np.uint32:  # a big-endian machine
        v = v.astype(np.uint32)
    np.multiply(v, np.uint32(0x01020408), out=v)
    np.right_shift(v, np.uint32(24), out=v)  # (8, n): 4 bits of lane k
    np.left_shift(v, (4 * np.arange(8, dtype=np.uint32))[:, None], out=v)
    return np.bitwise_or.reduce(v, axis=0)


def _put_lanes(out: np.ndarray, offset: int, packed: np.ndarray) -> None:
    """Byte lanes (k, 4n) (lane k: bytes 4k..4k+3 of each block) → ``out[:, offset:offset+4k]``."""
    dst = out[:, offset : offset + 4 * packed.shape[0]].view("V4")  # (n, k)
    src = packed.view("V4")  # (k, n)
    for k in range(packed.shape[0]):
        dst[:, k] = src[k]


# --------------------------------------------------------------------------- scale search


def _abs_max_exact(rows: np.ndarray) -> np.ndarray:
    """``if (amax < fabsf(v)) {amax = fabsf(v); max = v;}`` from 0 on a few rows: the first
    element of largest magnitude, NaN never chosen, +0.0 when all are zero or NaN."""
    a = np.abs(rows)
    a[np.isnan(a)] = -1
    amax = a.max(axis=1)
    idx = (a == amax[:, None]).argmax(axis=1)
    return np.where(amax > 0, rows[np.arange(len(rows)), idx], F32(0))


def _signed_abs_max(x: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """The signed ``max`` of the Q4_0/Q5_0 scale loop per block, from the block max and min:
    ``hi + lo`` is > 0 when ``hi`` has the larger magnitude, < 0 when ``lo`` has, and 0 (or
    NaN) only for all-zero blocks, ties between +a and -a, and blocks with a NaN (or +-inf):
    those take the exact loop."""
    hi, lo = _block_max_min(lanes)
    s = hi + lo  # exact 0 only when hi == -lo; inf when both are huge and positive: fine
    # hi where s's sign bit is clear, else lo: a bit select (numpy's where is ~2x slower)
    m = np.right_shift(s.view(np.int32), 31).view(np.uint32)  # 0 or all ones
    hb, lb = hi.view(np.uint32), lo.view(np.uint32)
    mx = np.bitwise_xor(hb, lb)
    np.bitwise_and(mx, m, out=mx)
    np.bitwise_xor(mx, hb, out=mx)
    mx = mx.view(F32)
    np.abs(s, out=s)
    if not (s > 0).all():  # s == 0 or NaN
        hard = ~(s > 0)
        mx[hard] = _abs_max_exact(x[hard])
    return mx


def _min_max_exact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _min_max(x: np.ndarray, lanes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_1/Q5_1's per-block min and max from the lanes; rows with a NaN or a zero result
    (whose sign depends on which zero came first) take the exact loop."""
    mx, mn = _block_max_min(lanes)
    hard = np.isnan(mn) | (mn == 0) | (mx == 0)
    np.minimum(mn, _FLT_MAX, out=mn)  # +inf is never < FLT_MAX
    np.maximum(mx, -_FLT_MAX, out=mx)
    if hard.any():
        mn[hard], mx[hard] = _min_max_exact(x[hard])
    return mn, mx


def _inv(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f``."""
    idd = F32(1) / d
    idd[d == 0] = 0
    return idd


# --------------------------------------------------------------------------- Q4_0 / Q5_0 / Q4_1 / Q5_1 quantize


def _quantize_sym(x: np.ndarray, div: float, bias: float, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0/Q5_0: ``d = max / -div; q = MIN(qmax, (int8_t)(x*id + bias))`` → (d bits (n,),
    q uint8 lanes (8, 4n))."""
    with np.errstate(**_QUIET):
        lanes = _lanes(x)
        d = _signed_abs_max(x, lanes) / F32(-div)
        _scale_lanes(lanes, _inv(d), bias)
        return f32_to_f16_bits(d), _to_bytes(lanes, qmax)


def _quantize_affine(x: np.ndarray, levels: int, qmax: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1/Q5_1: ``d = (max-min)/levels; q = (x-min)*id + 0.5f`` truncated (``MIN(qmax, ...)``
    for Q4_1) → (d bits, m bits, q uint8 lanes)."""
    with np.errstate(**_QUIET):
        lanes = _lanes(x)
        mn, mx = _min_max(x, lanes)
        d = (mx - mn) / F32(levels)
        _scale_lanes(lanes, _inv(d), 0.5, offset=mn)
        return f32_to_f16_bits(d), f32_to_f16_bits(mn), _to_bytes(lanes, qmax)


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    d, b = _quantize_sym(x, 8, 8.5, 15)
    out = np.empty((x.shape[0], 18), np.uint8)
    put_u16(out, 0, d)
    _put_lanes(out, 2, _pack_nibbles(b, mask_low=False))  # y.qs[j] = xi0; y.qs[j] |= xi1 << 4
    return out


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    d, b = _quantize_sym(x, 16, 16.5, 31)
    out = np.empty((x.shape[0], 22), np.uint8)
    put_u16(out, 0, d)
    out[:, 2:6].view("<u4")[:, 0] = _qh_from_lanes(b)
    _put_lanes(out, 6, _pack_nibbles(b, mask_low=True))
    return out


def quantize_q4_1(x: np.ndarray) -> np.ndarray:
    d, m, b = _quantize_affine(x, 15, 15)  # MIN(15, (int8_t)...)
    out = np.empty((x.shape[0], 20), np.uint8)
    put_u16(out, 0, d)
    put_u16(out, 2, m)
    _put_lanes(out, 4, _pack_nibbles(b, mask_low=False))
    return out


def quantize_q5_1(x: np.ndarray) -> np.ndarray:
    d, m, b = _quantize_affine(x, 31, None)  # (uint8_t), no clamp: the low byte
    out = np.empty((x.shape[0], 24), np.uint8)
    put_u16(out, 0, d)
    put_u16(out, 2, m)
    out[:, 4:8].view("<u4")[:, 0] = _qh_from_lanes(b)
    _put_lanes(out, 8, _pack_nibbles(b, mask_low=True))
    return out


# --------------------------------------------------------------------------- 4/5-bit dequantize


def _nibbles(q: np.ndarray, offset: int) -> np.ndarray:
    """The 16 ``qs`` bytes at ``offset`` → (n, 32) uint8: low nibbles (elements 0..15), then
    high nibbles (16..31)."""
    n = q.shape[0]
    qs = field(q, offset, 16).reshape(-1).view(np.uint64)  # (2n,) words
    s = np.empty((2, 2 * n), np.uint64)
    np.bitwise_and(qs, _LO4, out=s[0])
    np.right_shift(qs, np.uint64(4), out=s[1])
    np.bitwise_and(s[1], _LO4, out=s[1])
    z = np.empty((n, 32), np.uint8)
    zv, sv = z.view("V16"), s.view(np.uint8).view("V16")  # (n, 2), (2, n)
    zv[:, 0] = sv[0]
    zv[:, 1] = sv[1]
    return z


def _add_high_bits(z: np.ndarray, q: np.ndarray, offset: int) -> None:
    """``| ((qh >> j) << 4) & 0x10`` for element j: the ``qh`` word at ``offset`` into ``z``."""
    bits = np.unpackbits(field(q, offset, 4).reshape(-1), bitorder="little")  # (32n,) 0/1
    b = bits.view(np.uint64)
    np.left_shift(b, np.uint64(4), out=b)
    zw = z.reshape(-1).view(np.uint64)
    np.bitwise_or(zw, b, out=zw)


def _scale_into(z: np.ndarray, out: np.ndarray, d: np.ndarray, m: np.ndarray | None = None) -> None:
    """``out = z*d (+ m)`` per block; ``z*d`` is exact in float32 (|z| < 2^8, d an fp16), so
    only ``+ m`` rounds, as in C."""
    flat = out.reshape(-1) if out.flags.c_contiguous else np.empty(out.size, F32)
    np.copyto(flat, z.reshape(-1), casting="unsafe")
    with np.errstate(**_QUIET):  # inf/NaN scales in the data give inf/NaN, as in C
        np.multiply(flat, np.repeat(d, 32), out=flat)
        if m is not None:
            np.add(flat, np.repeat(m, 32), out=flat)
    if not out.flags.c_contiguous:
        out[...] = flat.reshape(out.shape)


def dequantize_q4_0_into(q: np.ndarray, out: np.ndarray) -> None:
    q = rows(q)
    z = _nibbles(q, 2).view(np.int8)
    np.subtract(z, np.int8(8), out=z)  # (qs & 0x0F) - 8, exact in int8
    _scale_into(z, out, le_f16(q, 0))


def dequantize_q4_1_into(q: np.ndarray, out: np.ndarray) -> None:
    q = rows(q)
    dm = F16_TO_F32.take(field(q, 0, 4).view("<u2"))
    _scale_into(_nibbles(q, 4), out, dm[:, 0], dm[:, 1])  # x*d + m


def dequantize_q5_0_into(q: np.ndarray, out: np.ndarray) -> None:
    q = rows(q)
    z = _nibbles(q, 6)
    _add_high_bits(z, q, 2)
    z = z.view(np.int8)
    np.subtract(z, np.int8(16), out=z)
    _scale_into(z, out, le_f16(q, 0))


def dequantize_q5_1_into(q: np.ndarray, out: np.ndarray) -> None:
    q = rows(q)
    z = _nibbles(q, 8)
    _add_high_bits(z, q, 4)
    dm = F16_TO_F32.take(field(q, 0, 4).view("<u2"))
    _scale_into(z, out, dm[:, 0], dm[:, 1])


# --------------------------------------------------------------------------- Q8_0 / Q8_1


_HALF_DOWN_BITS = np.uint32(F32(0.49999997).view(np.uint32))  # nextafter(0.5f, 0)
_SIGN = np.uint32(0x80000000)


def _quantize_q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``amax = MAX(amax, fabsf(v)); d = amax/127; q = roundf(x*id)`` → (d float32 (n,),
    q int8 lanes (8, 4n)).

    ``amax`` is ``max(hi, -lo)`` of the block max and min (+0.0 for zero blocks, as C's fold
    from 0); blocks with a NaN take ``fold_max_abs``, C's NaN-order-dependent ``MAX`` fold.
    ``roundf`` (half away from zero) is ``trunc(v + copysign(0.49999997f, v))``, exact for
    every float32 (see ``_common.roundf``), with the copysign done on the bits (numpy's
    ``copysign`` is slow), half the lanes at a time: few and small temporaries."""
    with np.errstate(**_QUIET):
        lanes = _lanes(x)
        hi, lo = _block_max_min(lanes)
        np.negative(lo, out=lo)
        amax = np.maximum(hi, lo)  # NaN-propagating
        amax += F32(0)  # -0.0 -> +0.0
        bad = np.isnan(amax)
        if bad.any():
            amax[bad] = fold_max_abs(x[bad])
        d = amax / F32(127)
        np.multiply(lanes, _repeat4(_inv(d)), out=lanes)  # x0 = x*id
        work = np.empty((4, lanes.shape[1]), F32)
        w = work.view(np.uint32)
        for half in (lanes[:4], lanes[4:]):
            np.bitwise_and(half.view(np.uint32), _SIGN, out=w)
            np.bitwise_or(w, _HALF_DOWN_BITS, out=w)  # copysign(0.49999997f, x0)
            np.add(half, work, out=half)
        del work, w
        np.trunc(lanes, out=lanes)
        return d, lanes.astype(np.int8)  # (int8_t) roundf(x0): the low byte of the truncation


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    d, q = _quantize_q8(x)
    out = np.empty((x.shape[0], 34), np.uint8)
    put_u16(out, 0, f32_to_f16_bits(d))
    _put_lanes(out, 2, q.view(np.uint8))
    return out


def dequantize_q8_0_into(q: np.ndarray, out: np.ndarray) -> None:
    q = rows(q)
    qs = field(q, 2, 32).view(np.int8)  # a contiguous copy and a repeated d: faster than
    d = np.repeat(le_f16(q, 0), 32)  # a strided int8 cast and a broadcast d
    with np.errstate(**_QUIET):
        np.multiply(qs.reshape(out.shape), d.reshape(out.shape), out=out)  # qs[j]*d, exact


def quantize_q8_1(x: np.ndarray) -> np.ndarray:
    d, q = _quantize_q8(x)
    s = np.add.reduce(q, axis=0, dtype=np.int32).reshape(-1, 4).sum(axis=1)  # int sum: any order
    out = np.empty((x.shape[0], 36), np.uint8)
    put_u16(out, 0, f32_to_f16_bits(d))
    with np.errstate(invalid="ignore"):
        put_u16(out, 2, f32_to_f16_bits(s.astype(F32) * d))  # sum*d
    _put_lanes(out, 4, q.view(np.uint8))
    return out


def dequantize_q8_1(q: np.ndarray) -> np.ndarray:
    q = rows(q)  # s is redundant (d * sum(q)); ggml's to_float ignores it too
    with np.errstate(**_QUIET):
        return q[:, 4:].view(np.int8) * le_f16(q, 0)[:, None]


CODECS: dict[int, Codec] = {
    GGMLType.Q4_0: into_codec(quantize_q4_0, dequantize_q4_0_into, ((0, 2, 1),), 32),
    GGMLType.Q4_1: into_codec(quantize_q4_1, dequantize_q4_1_into, ((0, 2, 2),), 32),
    GGMLType.Q5_0: into_codec(quantize_q5_0, dequantize_q5_0_into, ((0, 2, 1), (2, 4, 1)), 32),
    GGMLType.Q5_1: into_codec(quantize_q5_1, dequantize_q5_1_into, ((0, 2, 2), (4, 4, 1)), 32),
    GGMLType.Q8_0: into_codec(quantize_q8_0, dequantize_q8_0_into, ((0, 2, 1),), 32),
    GGMLType.Q8_1: Codec(quantize_q8_1, dequantize_q8_1, ((0, 2, 2),)),
}
