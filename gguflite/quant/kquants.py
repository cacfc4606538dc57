"""K-quants: 256-element super-blocks (QK_K) of 16 or 32-element sub-blocks.

Quantizers reproduce ``quantize_row_q{2,3,4,5,6}_K_ref`` of ggml-quants.c (what
``ggml_quantize_chunk`` runs without an importance matrix).  Their scale searches
(``make_qkx2_quants``, ``make_qx_quants``, ``make_q3_quants``) are vectorized over all
sub-blocks of a chunk: arrays are laid out element-major, ``(n, m)`` = (element within the
sub-block, sub-block), so the C loops over the n elements become n contiguous row
operations and the C sums become ``cumsum`` along axis 0 (sequential, as in C).

Block layouts (bytes):

    Q2_K  [16 scales: lo nibble scale, hi nibble min][64 qs: 2 bits][f16 d][f16 dmin]     84
    Q3_K  [32 hmask][64 qs: 2 bits][12 scales: 6 bits][f16 d]                           110
    Q4_K  [f16 d][f16 dmin][12 scales+mins: 6 bits][128 qs: 4 bits]                     144
    Q5_K  [f16 d][f16 dmin][12 scales+mins][32 qh][128 qs]                              176
    Q6_K  [128 ql][64 qh][16 scales: i8][f16 d]                                         210
    Q8_K  [f32 d][256 qs: i8][16 bsums: i16]                                            292
"""
from __future__ import annotations

import functools

import numpy as np

from ..types import GGMLType
from ._common import (
    F32,
    F16_TO_F32,
    Codec,
    field,
    first_abs_max,
    into_codec,
    nan_ignoring,
    f16_bits_to_f32,
    f32_to_f16_bits,
    le_f16,
    nearest_int,
    put_u16,
    seqsum,
)

QK_K = 256
GROUP_MAX_EPS = F32(1e-15)
_MAGIC = F32(12582912.0)  # 1.5 * 2^23, the nearest_int constant


def _rint_clamp(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``(float) MAX(lo, MIN(hi, nearest_int(v)))`` for every float32 ``v``.

    The bit trick itself (add 1.5*2^23, keep the low 23 bits) on all values: exact as in C for
    inf, NaN and huge values too, and cheaper than rounding in float and fixing those up."""
    i = (v + _MAGIC).view(np.int32)  # callers hold np.errstate for inf/NaN
    i &= 0x007FFFFF
    np.clip(i, 0x00400000 + lo, 0x00400000 + hi, out=i)
    i -= 0x00400000
    return i.astype(F32)


def _u8(l_int: np.ndarray) -> np.ndarray:
    """C assignment of an int to ``uint8_t``: keep the low byte."""
    return (l_int.astype(np.int64) & 0xFF).astype(np.uint8)


# --------------------------------------------------------------------------- scale searches


def make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                     nstep: int, use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_qkx2_quants`` for every column of ``x`` (n, m) with weights ``w`` (n, m).

    Returns ``(scale (m,), the_min (m,), L (n, m) float)``: the affine quantization
    ``x ~ scale*L - the_min`` with the least weighted error among ``nstep+1`` trial scales.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        mn = nan_ignoring(np.minimum, x, axis=0)
        mx = nan_ignoring(np.maximum, x, axis=0)
        first_nan = np.isnan(x[0])
        if first_nan.any():  # `x[i] < min` never holds once min is NaN
            mn = np.where(first_nan, x[0], mn)
            mx = np.where(first_nan, x[0], mx)
        sum_w = seqsum(w, axis=0, start_zero=False)
        sum_x = seqsum(w * x, axis=0, start_zero=False)
        mn = np.where(mn > 0, F32(0), mn)
        flat = mx == mn
        rng = np.where(flat, F32(1), mx - mn)
        iscale = F32(nmax) / rng
        scale = F32(1) / iscale
        L = _rint_clamp(iscale * (x - mn), 0, nmax)
        diff = scale * L + mn - x
        diff = np.abs(diff) if use_mad else diff * diff
        best = seqsum(w * diff, axis=0)
        for step in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / np.where(flat, F32(1), mx - mn)
            la = _rint_clamp(iscale * (x - mn), 0, nmax)
            wl = w * la
            sum_l = seqsum(wl, axis=0)
            sum_l2 = seqsum(wl * la, axis=0)
            sum_xl = seqsum(wl * x, axis=0)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            diff = this_scale * la + this_min - x
            diff = np.abs(diff) if use_mad else diff * diff
            cur = seqsum(w * diff, axis=0)
            better = (D > 0) & (cur < best) & ~flat
            if better.any():
                L = np.where(better, la, L)
                best = np.where(better, cur, best)
                scale = np.where(better, this_scale, scale)
                mn = np.where(better, this_min, mn)
    L = np.where(flat, F32(0), L)
    scale = np.where(flat, F32(0), scale)
    return scale, -mn, L


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, qw=NULL)`` per column of ``x`` (n, m):
    symmetric quantization with weights ``x*x`` and 18 trial scales around ``-nmax/max``.
    Returns ``(scale (m,), L (n, m) float, in [0, 2*nmax))``."""
    amax, mx = first_abs_max(x.T)
    zero = amax < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        w = x * x

        def trial(iscale):
            lv = _rint_clamp(iscale * x, -nmax, nmax - 1)
            wl = w * x * lv
            return lv, seqsum(wl, axis=0), seqsum(w * lv * lv, axis=0)

        iscale = F32(-nmax) / mx
        lv, sumlx, suml2 = trial(iscale)
        L = lv + F32(nmax)
        scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, F32(1)), F32(0))
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = -(F32(nmax) + F32(0.1) * F32(step)) / mx
            lv, sumlx, suml2 = trial(iscale)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            if better.any():
                L = np.where(better, lv + F32(nmax), L)
                scale = np.where(better, sumlx / suml2, scale)
                best = np.where(better, scale * sumlx, best)
    return np.where(zero, F32(0), scale), np.where(zero, F32(0), L)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)`` per column of ``x`` (n, m): start from
    ``-nmax/max``, then up to 5 passes of per-element coordinate descent on the weighted
    error.  Returns ``(scale (m,), L (n, m) float, in [0, 2*nmax))``."""
    n = x.shape[0]
    amax, mx = first_abs_max(x.T)
    zero = amax < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        iscale = F32(-nmax) / mx
        L = _rint_clamp(iscale * x, -nmax, nmax - 1)
        w = x * x
        wx = w * x
        wxl = wx * L  # (w*x)*L and (w*L)*L of the current L, kept up to date below
        wll = w * L
        wll *= L
        sumlx = seqsum(wxl, axis=0)
        suml2 = seqsum(wll, axis=0)
        # The passes run on the columns still changing, gathered: C's ``if (!n_changed)
        # break`` stops most sub-blocks after the first pass (about 1 in 5 goes on).
        cols = np.flatnonzero(~zero)
        if cols.size == x.shape[1]:  # no all-zero sub-block: work in place
            cols = np.arange(x.shape[1])
            xa, wa, wxa, La, wxla, wlla, sxa, s2a = x, w, wx, L, wxl, wll, sumlx, suml2
        else:
            xa, wa, wxa, La, wxla, wlla = (np.take(a, cols, axis=1) for a in (x, w, wx, L, wxl, wll))
            sxa, s2a = sumlx[cols], suml2[cols]
        for _ in range(5):
            changed = np.zeros(sxa.size, bool)
            for i in range(n):
                slx = sxa - wxla[i]
                sl2 = s2a - wlla[i]
                t = xa[i] * sl2
                t /= slx
                new_l = _rint_clamp(t, -nmax, nmax - 1)
                ok = slx > 0
                ok &= new_l != La[i]
                a = wxa[i] * new_l
                slx2 = slx + a
                b = wa[i] * new_l
                b *= new_l
                sl22 = sl2 + b
                ok &= sl22 > 0
                lhs = slx2 * slx2
                lhs *= s2a
                rhs = sxa * sxa
                rhs *= sl22
                ok &= lhs > rhs
                if ok.any():
                    np.copyto(La[i], new_l, where=ok)
                    np.copyto(wxla[i], a, where=ok)
                    np.copyto(wlla[i], b, where=ok)
                    np.copyto(sxa, slx2, where=ok)
                    np.copyto(s2a, sl22, where=ok)
                    changed |= ok
            if La is not L:
                L[:, cols], sumlx[cols], suml2[cols] = La, sxa, s2a
            keep = np.flatnonzero(changed)
            if keep.size == 0:
                break
            if keep.size < changed.size:
                cols = cols[keep]
                xa, wa, wxa, La, wxla, wlla = (np.take(a, keep, axis=1) for a in (xa, wa, wxa, La, wxla, wlla))
                sxa, s2a = sxa[keep], s2a[keep]
        scale = np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, F32(1)), F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, F32(0), L + F32(nmax))


# --------------------------------------------------------------------------- shared helpers


def _sub(x: np.ndarray, size: int) -> np.ndarray:
    """(nb, 256) → element-major sub-blocks (size, nb*256/size)."""
    return np.ascontiguousarray(x.reshape(-1, size).T)


def _pos_max(v: np.ndarray) -> np.ndarray:
    """``m = 0; if (v > m) m = v;`` along axis 1 (NaN ignored, +0.0 default)."""
    m = nan_ignoring(np.maximum, v)
    return np.where(m > 0, m, F32(0))


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """(nb, 256) 2-bit values → (nb, 64): ``qs[j/4 + l] = L[j+l] | L[j+l+32]<<2 | ...``,
    on 8-byte words: run (n, s) of 32 values is shifted by 2s and the 4 runs OR-ed."""
    nb = L.shape[0]
    w = np.ascontiguousarray(L, dtype=np.uint8).view("<u8") << _per_run((0, 2, 4, 6) * 2, nb)
    return np.bitwise_or.reduce(w.reshape(nb, 2, 4, 4), axis=2).view(np.uint8).reshape(nb, 64)


def _requant(x: np.ndarray, d: np.ndarray, dm: np.ndarray | None, lo: int, hi: int,
             L: np.ndarray) -> np.ndarray:
    """Final pass: ``if (!d) keep L; else l = clamp(nearest_int((x + dm)/d))`` (or ``x/d``).
    ``x``, ``L``: (nb, nsub, size); ``d``, ``dm``: (nb, nsub)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dd = np.where(d == 0, F32(1), d)[..., None]
        num = x if dm is None else x + dm[..., None]
        if dm is not None and x.shape[-1] == 32:
            # When x and dm are both NaN, the sum keeps the NaN of the instruction's first
            # operand, and nearest_int then reads that NaN's payload.  ggml 0.25.3 as built
            # for x86-64 (gcc, SSE2) vectorizes this loop as x + dm for elements 0-27 and
            # dm + x for 28-31 of each sub-block (measured element by element against
            # libggml-base); we follow it so that NaN rows stay byte-identical.
            num[..., 28:] = dm[..., None] + x[..., 28:]
        new = _rint_clamp(num / dd, lo, hi)
    return np.where((d == 0)[..., None], L, new)


def _k4_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Pack 8 six-bit scales and mins (nb, 8) into the 12 ``scales`` bytes of Q4_K/Q5_K."""
    out = np.empty((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out



# --------------------------------------------------------------------------- Q4_K / Q5_K


def _q45k(x: np.ndarray, nmax: int, rmin: float, nstep: int):
    """Common part of ``quantize_row_q4_K_ref`` / ``q5_K_ref`` → (d, dmin bits, scales bytes, L (nb, 256))."""
    nb = x.shape[0]
    xs = _sub(x, 32)  # (32, nb*8)
    with np.errstate(invalid="ignore", over="ignore"):
        sum_x2 = seqsum(xs * xs, axis=0)
        av_x = np.sqrt(sum_x2 / F32(32))
        w = av_x + np.abs(xs)
    scales, mins, L = make_qkx2_quants(xs, w, nmax, rmin, 0.1, nstep, False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    L = L.T.reshape(nb, 8, 32)
    max_scale, max_min = _pos_max(scales), _pos_max(mins)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / np.where(max_scale > 0, max_scale, F32(1)), F32(0))
        inv_min = np.where(max_min > 0, F32(63) / np.where(max_min > 0, max_min, F32(1)), F32(0))
        ls = np.minimum(_u8(nearest_int(inv_scale[:, None] * scales)), 63)
        lm = np.minimum(_u8(nearest_int(inv_min[:, None] * mins)), 63)
        d = f32_to_f16_bits(max_scale / F32(63))
        dmin = f32_to_f16_bits(max_min / F32(63))
        dl = f16_bits_to_f32(d)[:, None] * ls.astype(F32)
        ml = f16_bits_to_f32(dmin)[:, None] * lm.astype(F32)
    L = _requant(x.reshape(nb, 8, 32), dl, ml, 0, nmax, L)
    return d, dmin, _k4_scales(ls, lm), L.reshape(nb, 256).astype(np.uint8)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, L = _q45k(x, 15, -1.0, 20)
    out = np.empty((x.shape[0], 144), np.uint8)
    put_u16(out, 0, d)
    put_u16(out, 2, dmin)
    out[:, 4:16] = scales
    L = L.reshape(-1, 4, 2, 32)
    out[:, 16:] = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)
    return out



def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, L = _q45k(x, 31, -0.5, 15)
    out = np.empty((x.shape[0], 176), np.uint8)
    put_u16(out, 0, d)
    put_u16(out, 2, dmin)
    out[:, 4:16] = scales
    L = L.reshape(-1, 4, 2, 32)  # (nb, n/64, half, 32)
    hi = L >> 4  # bit 4 of each quant → qh[j] bit (2*(n/64) + half)
    shifts = (2 * np.arange(4)[:, None] + np.arange(2)[None, :]).astype(np.uint8)[None, :, :, None]
    out[:, 16:48] = np.bitwise_or.reduce((hi << shifts).reshape(-1, 8, 32), axis=1)
    lo = L & 0xF
    out[:, 48:] = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(-1, 128)
    return out



# --------------------------------------------------------------------------- Q6_K


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales, L = make_qx_quants(_sub(x, 16), 32)
    scales = scales.reshape(nb, 16)
    L = L.T.reshape(nb, 16, 16)
    max_abs, max_scale = first_abs_max(scales)
    zero = max_abs < GROUP_MAX_EPS
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        iscale = F32(-128) / np.where(zero, F32(1), max_scale)
        d = f32_to_f16_bits(F32(1) / iscale)
        sc = np.minimum(nearest_int(iscale[:, None] * scales), 127)
        sc8 = (sc & 0xFF).astype(np.uint8).view(np.int8)  # int8_t store
        dl = f16_bits_to_f32(d)[:, None] * sc8.astype(F32)
    L = _requant(x.reshape(nb, 16, 16), dl, None, -32, 31, L - F32(32)) + F32(32)
    L = np.where(zero[:, None, None], F32(0), L).reshape(nb, 256).astype(np.uint8)
    out = np.zeros((nb, 210), np.uint8)
    Lq = L.reshape(nb, 2, 4, 32)  # (half of 128, quarter, l)
    lo, hi = Lq & 0xF, Lq >> 4
    out[:, :128] = np.stack([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2).reshape(nb, 128)
    out[:, 128:192] = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    out[:, 192:208] = np.where(zero[:, None], np.uint8(0), sc8.view(np.uint8))
    put_u16(out, 208, np.where(zero, np.uint16(0), d))
    return out



# --------------------------------------------------------------------------- Q2_K / Q3_K


def quantize_q2_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    xs = _sub(x, 16)
    scales, mins, L = make_qkx2_quants(xs, np.abs(xs), 3, -0.5, 0.1, 15, True)
    scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
    L = L.T.reshape(nb, 16, 16)
    max_scale, max_min = _pos_max(scales), _pos_max(mins)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        sp, mp = max_scale > 0, max_min > 0
        ls = nearest_int((F32(15) / np.where(sp, max_scale, F32(1)))[:, None] * scales)
        lm = nearest_int((F32(15) / np.where(mp, max_min, F32(1)))[:, None] * mins)
        sbytes = np.where(sp[:, None], ls, 0)
        sbytes = _u8(np.where(mp[:, None], sbytes | (lm << 4), sbytes))
        d = np.where(sp, f32_to_f16_bits(max_scale / F32(15)), f32_to_f16_bits(np.zeros(nb, F32)))
        dmin = np.where(mp, f32_to_f16_bits(max_min / F32(15)), f32_to_f16_bits(np.zeros(nb, F32)))
        dl = f16_bits_to_f32(d)[:, None] * (sbytes & 0xF).astype(F32)
        ml = f16_bits_to_f32(dmin)[:, None] * (sbytes >> 4).astype(F32)
    L = _requant(x.reshape(nb, 16, 16), dl, ml, 0, 3, L).reshape(nb, 256)
    out = np.empty((nb, 84), np.uint8)
    out[:, :16] = sbytes
    out[:, 16:80] = _pack_2bit(L)
    put_u16(out, 80, d)
    put_u16(out, 82, dmin)
    return out



def _q3_scales_unpack(s: np.ndarray) -> np.ndarray:
    """12 scale bytes → 16 six-bit values (nb, 16) int32, before the ``- 32``."""
    j = np.arange(16)
    low = np.where(j < 8, s[:, j % 8] & 0xF, s[:, j % 8] >> 4)
    high = (s[:, 8 + j % 4] >> (2 * (j // 4))) & 3
    return (low | (high << 4)).astype(np.int32)


def quantize_q3_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales, L = make_q3_quants(_sub(x, 16), 4)
    scales = scales.reshape(nb, 16)
    amax, max_scale = first_abs_max(scales)
    nz = max_scale != 0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        iscale = F32(-32) / np.where(nz, max_scale, F32(1))
        li = nearest_int(iscale[:, None] * scales).astype(np.int8).astype(np.int32)  # int8_t l
        li = np.minimum(np.maximum(li, -32), 31) + 32
        li = np.where(nz[:, None], li, 0)
        sbytes = np.zeros((nb, 12), np.uint8)
        sbytes[:, :8] = (li[:, :8] & 0xF) | ((li[:, 8:] & 0xF) << 4)
        hi = (li >> 4) & 3  # (int8_t l) >>= 4 of a value in [0, 63]
        for j in range(16):
            sbytes[:, 8 + j % 4] |= (hi[:, j] << (2 * (j // 4))).astype(np.uint8)
        d = np.where(nz, f32_to_f16_bits(F32(1) / iscale), f32_to_f16_bits(np.zeros(nb, F32)))
        sc = _q3_scales_unpack(sbytes) - 32
        dl = f16_bits_to_f32(d)[:, None] * sc.astype(F32)
        dz = dl == 0  # C: ``if (!d) continue`` keeps make_q3_quants' L
        new = _rint_clamp(x.reshape(-1) / np.repeat(np.where(dz, F32(1), dl), 16), -4, 3)
    Lq = (new + F32(4)).astype(np.uint8).reshape(nb, 256)
    if dz.any():
        keep = np.repeat(dz, 16, axis=1)
        Lq[keep] = L.T.reshape(nb, 256)[keep]
    L = Lq
    # hmask[m] bit k <- the high bit (bit 2) of L[32*k + m]; qs gets the low 2 bits
    w = L.view("<u8")  # (nb, 32): 8 runs of 32 values
    high = ((w >> np.uint64(2)) & _M1) << _per_run(tuple(range(8)), nb)
    out = np.empty((nb, 110), np.uint8)
    out[:, :32] = np.bitwise_or.reduce(high.reshape(nb, 8, 4), axis=1).view(np.uint8)
    out[:, 32:96] = _pack_2bit((w & _M2).view(np.uint8))
    out[:, 96:108] = sbytes
    put_u16(out, 108, d)
    return out




# --------------------------------------------------------------------------- dequantizers
#
# Every dequantizer first builds the integer code of each output element as bytes laid out
# like the output (n_blocks, 256), working on 8-byte words: ``np.repeat`` along an axis
# copies whole 32-byte rows, so the packed words feeding each run of 32 outputs are put in
# place, then shifted and masked against a per-block pattern of shift counts.  The float
# part is then whole-array passes in C's order: code → float32, times the sub-block scale
# repeated to every element, minus the repeated min.  Rows of 16 or 32 elements are what
# numpy is slowest at (a fixed cost per row), so nothing here broadcasts over them.

_M1 = np.uint64(0x0101010101010101)
_M2 = np.uint64(0x0303030303030303)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)


def _words(q: np.ndarray, start: int, stop: int, dtype: str = "<u8") -> np.ndarray:
    """Bytes ``[start, stop)`` of every block row of ``q`` as little-endian words (nb, k):
    a view when the rows allow one, else a contiguous copy."""
    dt = np.dtype(dtype)
    if q.flags.c_contiguous and q.shape[1] % dt.itemsize == 0 and start % dt.itemsize == 0:
        return q.view(dt)[:, start // dt.itemsize : stop // dt.itemsize]
    return np.ascontiguousarray(q[:, start:stop]).view(dt)


_PATTERN_ROWS = 1024  # blocks per cached word pattern: a default chunk (256 Ki floats)


@functools.lru_cache(maxsize=None)
def _per_run_rows(per_run: tuple[int, ...]) -> np.ndarray:
    """The read-only (``_PATTERN_ROWS``, 4 * len(per_run)) pattern behind ``_per_run``."""
    row = np.repeat(np.array(per_run, np.uint64), 4)
    a = np.tile(row, (_PATTERN_ROWS, 1))
    a.flags.writeable = False
    return a


def _per_run(per_run: tuple[int, ...], n_blocks: int) -> np.ndarray:
    """Word constants (n_blocks, 4 * len(per_run)) uint64, shift counts or masks:
    ``per_run[r]`` for the 4 words of every 32-byte run ``r`` of a block.  A full-size
    operand is about twice as fast as a broadcast (1, 32) row, so up to ``_PATTERN_ROWS``
    blocks it is a slice of a cached read-only array (a handful of 256 KB constants); beyond
    that, a broadcast view."""
    rows = _per_run_rows(per_run)
    if n_blocks <= _PATTERN_ROWS:
        return rows[:n_blocks]
    return np.broadcast_to(rows[0], (n_blocks, rows.shape[1]))


def _runs(w: np.ndarray, times: int) -> np.ndarray:
    """Words (nb, g, 4) of g 32-byte runs → (nb, g * times, 4): each run repeated ``times``
    times in place (run r of the result is run ``r // times`` of ``w``)."""
    return np.repeat(w[:, :, None, :], times, axis=2).reshape(w.shape[0], -1)


def _scaled_into(out: np.ndarray, codes: np.ndarray, dl: np.ndarray, ml: np.ndarray | None,
                 sub: int) -> None:
    """``out[e] = dl[e // sub] * codes[e] - ml[e // sub]`` (no ``- ml`` when None), float32.

    ``out`` (nb, 256); ``codes`` (nb, 256) uint8/int8 in output order; ``dl``, ``ml``
    float32 of any shape holding one value per sub-block, in order (nb * 256 // sub)."""
    if not out.flags.c_contiguous:
        tmp = np.empty(out.shape, F32)
        _scaled_into(tmp, codes, dl, ml, sub)
        out[...] = tmp
        return
    f = out.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        np.copyto(f, codes.reshape(-1), casting="safe")
        np.multiply(f, np.repeat(dl, sub), out=f)
        if ml is not None:
            np.subtract(f, np.repeat(ml, sub), out=f)


def _times(d: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``d * s`` for a per-block ``d`` (nb,) and per-sub-block integers ``s`` (nb, k):
    (nb * k,) float32."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.multiply(np.repeat(d, s.shape[1]), s.reshape(-1), dtype=F32)


_ODD_SIXTEENTH = np.tile(np.array([1, 1 / 16], F32), 4)  # runs 2j+1 hold 16 * code (Q4_K)


def _k4_dl_ml(q: np.ndarray, odd_sixteenth: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``d1 = d * sc`` and ``m1 = dmin * m`` of Q4_K/Q5_K: two contiguous (nb * 8,) float32.

    ``get_scale_min_k4`` for j = 0..7 runs four bytes at a time on the three 32-bit words of
    the 12 scale bytes; d and dmin come through the fp16 table (``GGML_FP16_TO_FP32``).
    ``odd_sixteenth``: the scales of odd sub-blocks come out divided by 16, for codes that
    hold 16 * q there.  Exact: sc / 16 is exact, and d * sc / 16 >= 2^-28 (d >= 2^-24 when
    not 0) stays a normal float32, so the one rounding of d * (sc / 16) is that of d * sc,
    divided by 16; inf and NaN d give what they give unscaled."""
    nb = q.shape[0]
    w = _words(q, 0, 16, "<u4")  # d|dmin, then the 12 scale bytes
    w0, w1, w2 = w[:, 1], w[:, 2], w[:, 3]
    m6, m4, m2 = np.uint32(0x3F3F3F3F), np.uint32(0x0F0F0F0F), np.uint32(0x30303030)
    sc = np.empty((nb, 2), np.uint32)  # bytes: scales 0-3, 4-7
    mn = np.empty((nb, 2), np.uint32)  # bytes: mins 0-3, 4-7
    np.bitwise_and(w0, m6, out=sc[:, 0])
    np.bitwise_and(w1, m6, out=mn[:, 0])
    lo, hi = w2 & m4, w0 >> 2  # j >= 4: low 4 bits | top 2 bits of byte j - 4
    hi &= m2
    np.bitwise_or(lo, hi, out=sc[:, 1])
    np.right_shift(w2, 4, out=lo)
    lo &= m4
    np.right_shift(w1, 2, out=hi)
    hi &= m2
    np.bitwise_or(lo, hi, out=mn[:, 1])
    dd = F16_TO_F32.take(field(q, 0, 4).view("<u2"))  # (nb, 2): d, dmin
    dl = sc.view(np.uint8).astype(F32)  # (nb, 8)
    if odd_sixteenth:
        dl *= _ODD_SIXTEENTH
    ml = mn.view(np.uint8).astype(F32)
    with np.errstate(invalid="ignore", over="ignore"):
        dl = dl.reshape(-1)
        dl *= np.repeat(dd[:, 0], 8)
        ml = ml.reshape(-1)
        ml *= np.repeat(dd[:, 1], 8)
    return dl, ml


_NIBBLE_MASKS = (int(_M4), int(~_M4)) * 4  # per run: low, high nibbles


def dequantize_q4_k_into(q: np.ndarray, out: np.ndarray) -> None:
    """``d1 * (q & 0xF) - m1`` (d1 = d * sc, m1 = dmin * m per 32) written into ``out``.

    Run 2j takes the low nibbles of bytes 32j.., run 2j+1 their high nibbles, left in place
    (16 * q, saving a shift) and scaled by d1 / 16."""
    dl, ml = _k4_dl_ml(q, odd_sixteenth=True)
    codes = _runs(_words(q, 16, 144).reshape(-1, 4, 4), 2)  # (nb, 32) words: runs 0 0 1 1 ..
    codes &= _per_run(_NIBBLE_MASKS, q.shape[0])
    _scaled_into(out, codes.view(np.uint8), dl, ml, 32)


def dequantize_q5_k_into(q: np.ndarray, out: np.ndarray) -> None:
    """``d1 * ((ql & 0xF) + (qh & u1 ? 16 : 0)) - m1`` written into ``out`` (nb, 256).

    Run 2j takes the low nibbles of ql bytes 32j.., run 2j+1 their high nibbles; run r
    adds bit r of the qh bytes as 16."""
    dl, ml = _k4_dl_ml(q)
    nb = q.shape[0]
    codes = _runs(_words(q, 48, 176).reshape(-1, 4, 4), 2)
    codes >>= _per_run((0, 4) * 4, nb)
    codes &= _M4
    qh = _runs(_words(q, 16, 48).reshape(-1, 1, 4), 8)  # (nb, 32) words: qh in all 8 runs
    codes |= ((qh >> _per_run(tuple(range(8)), nb)) & _M1) << np.uint64(4)
    _scaled_into(out, codes.view(np.uint8), dl, ml, 32)


def dequantize_q6_k_into(q: np.ndarray, out: np.ndarray) -> None:
    """``d * sc[e/16] * (q6 - 32)`` written into ``out`` (nb, 256).

    Output run (n, k) of 32 (half n, quarter k) takes nibble ``k // 2`` of ql bytes
    64n + 32(k % 2).. and bits 2k of qh bytes 32n.."""
    nb = q.shape[0]
    ql = np.repeat(_words(q, 0, 128).reshape(nb, 2, 1, 8), 2, axis=2).reshape(nb, 32)
    qh = _runs(_words(q, 128, 192).reshape(nb, 2, 4), 4)
    codes = (ql >> _per_run((0, 0, 4, 4) * 2, nb)) & _M4
    codes |= ((qh >> _per_run((0, 2, 4, 6) * 2, nb)) & _M2) << np.uint64(4)
    v = codes.view(np.uint8)
    v -= np.uint8(32)  # wraps: as int8 it is q6 - 32
    scales = np.ascontiguousarray(q[:, 192:208]).view(np.int8)
    _scaled_into(out, v.view(np.int8), _times(le_f16(q, 208), scales), None, 16)


def _q2_low(q: np.ndarray, offset: int) -> np.ndarray:
    """The 64 two-bit bytes at ``offset`` → (nb, 32) words of codes 0..3 in output order:
    run (n, j) is bits 2j of bytes 32n.."""
    w = _runs(_words(q, offset, offset + 64).reshape(-1, 2, 4), 4)
    return (w >> _per_run((0, 2, 4, 6) * 2, q.shape[0])) & _M2


def dequantize_q2_k_into(q: np.ndarray, out: np.ndarray) -> None:
    """``dl * q2 - ml`` with ``dl = d * (sc & 0xF)``, ``ml = dmin * (sc >> 4)`` per 16."""
    sc = np.ascontiguousarray(q[:, :16])
    codes = _q2_low(q, 16)
    _scaled_into(out, codes.view(np.uint8), _times(le_f16(q, 80), sc & 0xF), _times(le_f16(q, 82), sc >> 4), 16)


def _q3_scales6(q: np.ndarray) -> np.ndarray:
    """The 16 six-bit scales from the 12 bytes at offset 96 (nb, 16) uint8, unpacked as
    ``dequantize_row_q3_K`` does with kmask1/kmask2 on 32-bit words."""
    a = _words(q, 96, 108, "<u4")
    a0, a1, t = a[:, 0], a[:, 1], a[:, 2]
    k1, k2 = np.uint32(0x03030303), np.uint32(0x0F0F0F0F)
    s = np.empty((q.shape[0], 4), np.uint32)
    np.bitwise_or(a0 & k2, (t & k1) << 4, out=s[:, 0])
    np.bitwise_or(a1 & k2, ((t >> 2) & k1) << 4, out=s[:, 1])
    np.bitwise_or((a0 >> 4) & k2, ((t >> 4) & k1) << 4, out=s[:, 2])
    np.bitwise_or((a1 >> 4) & k2, ((t >> 6) & k1) << 4, out=s[:, 3])
    return s.view(np.uint8)


def dequantize_q3_k_into(q: np.ndarray, out: np.ndarray) -> None:
    """``dl * ((q >> shift & 3) - (hm & m ? 0 : 4))``, ``dl = d * (scale - 32)`` per 16.

    The code is built as an int8: low bits | 0xFC where the hmask bit is clear, which is
    ``low - 4`` in two's complement."""
    nb = q.shape[0]
    codes = _q2_low(q, 32)
    hm = _runs(_words(q, 0, 32).reshape(nb, 1, 4), 8)  # run (n, j) tests bit 4n + j
    clear = ((~hm >> _per_run(tuple(range(8)), nb)) & _M1) * np.uint64(0xFC)
    codes |= clear
    sc = _q3_scales6(q).astype(np.int8) - np.int8(32)
    _scaled_into(out, codes.view(np.int8), _times(le_f16(q, 108), sc), None, 16)


def dequantize_q8_k_into(q: np.ndarray, out: np.ndarray) -> None:
    """``d * qs`` (f32 d, 256 int8 quants) written into ``out`` (nb, 256)."""
    d = _words(q, 0, 4, "<f4")[:, 0]
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(d[:, None], q[:, 4:260].view(np.int8), out=out, dtype=F32)



CODECS: dict[int, Codec] = {
    GGMLType.Q2_K: into_codec(quantize_q2_k, dequantize_q2_k_into, ((80, 2, 2),), QK_K),
    GGMLType.Q3_K: into_codec(quantize_q3_k, dequantize_q3_k_into, ((108, 2, 1),), QK_K),
    GGMLType.Q4_K: into_codec(quantize_q4_k, dequantize_q4_k_into, ((0, 2, 2),), QK_K),
    GGMLType.Q5_K: into_codec(quantize_q5_k, dequantize_q5_k_into, ((0, 2, 2),), QK_K),
    GGMLType.Q6_K: into_codec(quantize_q6_k, dequantize_q6_k_into, ((208, 2, 1),), QK_K),
    GGMLType.Q8_K: into_codec(None, dequantize_q8_k_into, ((0, 4, 1), (260, 2, 16)), QK_K),
}
