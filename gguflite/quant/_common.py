"""Scalar building blocks of ggml's reference quantizers, as numpy float32 array operations.

Bit-exactness with ``ggml-quants.c`` rests on four rules followed everywhere in this package:

1. Every arithmetic step is float32 and happens in the C order: ``w*x*l`` is ``(w*x)*l``.
   A numpy int array times a float32 array is float64, so integers are cast to float32 first.
2. C sums ``s = 0; for i: s += a[i]`` are sequential; numpy's ``sum`` is pairwise.  We use
   ``np.cumsum`` (sequential by definition) along an axis and add ``+0.0`` where C starts from
   zero (``0.0f + -0.0f`` is ``+0.0``).
3. ggml's fp16 conversion is its own bit trick (``ggml_compute_fp32_to_fp16``): round to
   nearest even like numpy, except that every NaN becomes the quiet NaN ``0x7e00`` with its sign.
4. Float-to-int conversions follow x86-64 (``cvttss2si``): truncate, and NaN or out-of-range
   values give ``INT32_MIN``; casts to ``int8_t``/``uint8_t`` keep the low byte of that.
   ``libggml-base`` is built for baseline x86-64, so no FMA contraction happens in C either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

F32 = np.float32
INT32_MIN = np.int32(-(2**31))


@dataclass(frozen=True)
class Codec:
    """How one ggml block type is converted.

    ``quantize(x: float32 (n_blocks, block_size)) -> uint8 (n_blocks, type_size)`` or None;
    ``dequantize(q: uint8 (n_blocks, type_size)) -> float32 (n_blocks, block_size)``;
    ``swap``: the multi-byte fields inside a block as ``(byte offset, item size, count)``,
    byte-swapped for big-endian files;
    ``dequantize_into(q, out)``: optional faster form writing into ``out`` (n_blocks, block_size).
    """

    quantize: Callable[[np.ndarray], np.ndarray] | None
    dequantize: Callable[[np.ndarray], np.ndarray]
    swap: tuple[tuple[int, int, int], ...] = ()
    dequantize_into: Callable[[np.ndarray, np.ndarray], None] | None = None


def into_codec(quantize, dequantize_into, swap, block_size: int) -> Codec:
    """A Codec whose allocating ``dequantize`` is ``dequantize_into`` on a fresh array."""

    def dequantize(q: np.ndarray) -> np.ndarray:
        out = np.empty((q.shape[0], block_size), F32)
        dequantize_into(q, out)
        return out

    return Codec(quantize, dequantize, swap, dequantize_into)


# --------------------------------------------------------------------------- fp16 / bf16


def f32_to_f16_bits(x: np.ndarray) -> np.ndarray:
    """``GGML_FP32_TO_FP16`` → uint16 bits (RNE; overflow to inf; NaN → ±0x7e00)."""
    x = np.asarray(x, dtype=F32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        sign = (x.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
        h = np.where(nan, sign | np.uint16(0x7E00), h)
    return h


def f16_bits_to_f32(h: np.ndarray) -> np.ndarray:
    """``GGML_FP16_TO_FP32`` (exact for every non-NaN value)."""
    return np.ascontiguousarray(h).view(np.float16).astype(F32)


# GGML_FP16_TO_FP32 of every fp16 bit pattern (ggml keeps the same table): a gather is 2-3x
# faster than numpy's float16 -> float32 cast, which converts one value at a time
F16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(F32)


def rows(q: np.ndarray) -> np.ndarray:
    """``q`` (n, type_size) with unit stride along the row, as the field views need."""
    return q if q.strides[1] == 1 else np.ascontiguousarray(q)


def field(q: np.ndarray, offset: int, size: int) -> np.ndarray:
    """The ``size`` bytes at ``offset`` of every block row of ``q`` as a contiguous (n, size)
    uint8 copy (one strided copy of ``size``-byte units)."""
    return np.ascontiguousarray(q[:, offset : offset + size].view(f"V{size}")).view(np.uint8)


def le_f16(q: np.ndarray, offset: int) -> np.ndarray:
    """The little-endian fp16 field at byte ``offset`` of each block row of ``q`` (n,
    type_size) → float32 (n,): ``GGML_FP16_TO_FP32``, exact, through ``F16_TO_F32``."""
    raw = q[:, offset : offset + 2]
    if raw.strides[1] != 1:
        raw = np.ascontiguousarray(raw)
    return F16_TO_F32.take(raw.view("<u2")[:, 0])


def put_u16(out: np.ndarray, offset: int, bits: np.ndarray) -> None:
    """Store uint16 ``bits`` (n,) little-endian at byte ``offset`` of each block row of
    ``out`` (rows with unit stride, as freshly allocated outputs are)."""
    out[:, offset : offset + 2].view("<u2")[:, 0] = bits


# --------------------------------------------------------------------------- integer rounding


def nearest_int(f: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: add 1.5*2^23 and read the mantissa (ties to even).  Values
    outside +-2^22, inf and NaN give whatever the bit trick gives, as in C (its assert is
    compiled out)."""
    with np.errstate(invalid="ignore", over="ignore"):
        v = (f.astype(F32, copy=False) + F32(12582912.0)).view(np.int32)
    return (v & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def cvtt_i32(v: np.ndarray) -> np.ndarray:
    """C ``(int)v`` on x86-64: truncation toward zero; NaN/out of range → INT32_MIN.

    numpy's cast compiles to the same ``cvtt`` instructions, so it gives INT32_MIN too;
    tests/test_quant.py checks NaN, inf and huge rows against ggml to keep this honest."""
    with np.errstate(invalid="ignore"):
        return v.astype(np.int32)


_HALF_DOWN = F32(0.49999997)  # nextafter(0.5f, 0)


def roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf`` (half away from zero): ``trunc(v + copysign(0.49999997f, v))`` is exact
    for every float32 (adding 0.5 is not: 0.49999997 + 0.5 rounds up to 1)."""
    return np.trunc(v + np.copysign(_HALF_DOWN, v))


def seqsum(a: np.ndarray, axis: int = -1, start_zero: bool = True) -> np.ndarray:
    """C's left-to-right float32 sum along ``axis``; ``start_zero`` when C starts at ``0.0f``.

    A loop of whole-row adds: numpy's ``sum`` is pairwise (different rounding) and its
    ``cumsum`` along a non-last axis is slow."""
    a = np.moveaxis(a, axis, 0)
    s = a[0] + F32(0) if start_zero else a[0].astype(F32, copy=True)
    for i in range(1, a.shape[0]):
        np.add(s, a[i], out=s)
    return s


def row_reduce(f: np.ufunc, x: np.ndarray) -> np.ndarray:
    """``f.reduce(x, axis=1)`` for an order-independent ``f`` (maximum, minimum) on rows whose
    length is a power of two: halving with whole-array operations, several times faster than
    numpy's per-row reduction of short rows."""
    k = x.shape[1]
    if k & (k - 1) or k < 2:
        return f.reduce(x, axis=1)
    m = f(x[:, : k // 2], x[:, k // 2 :])
    while m.shape[1] > 1:
        h = m.shape[1] // 2
        m = f(m[:, :h], m[:, h:])
    return m[:, 0]


def nan_ignoring(f: np.ufunc, x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Max or min (``f`` = ``np.maximum`` / ``np.minimum``) along ``axis`` ignoring NaN, as C's
    ``if (v > m) m = v`` loops do; -inf/+inf for an all-NaN line.

    Not ``np.fmax``/``np.fmin``: numpy 2.4's SIMD versions return NaN for a signaling NaN
    operand (``fmax(1e38, 0x7f800001)`` is NaN), which the C loops never do.  The propagating
    reduction finds the lines with a NaN; only those take the masked pass."""
    m = row_reduce(f, x) if axis == 1 else f.reduce(x, axis=axis)
    bad = np.isnan(m)
    if bad.any():
        fill = F32(-np.inf) if f is np.maximum else F32(np.inf)
        sub = x[bad] if axis == 1 else x[:, bad]
        m[bad] = f.reduce(np.where(np.isnan(sub), fill, sub), axis=axis)
    return m


def first_abs_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``x`` (n, k): ``amax`` and the signed ``max`` as in ``if (amax < fabsf(v))
    {amax = fabsf(v); max = v;}`` from 0: first occurrence, NaN never chosen, +0.0 default.

    Fast path from the row max and min; rows where both +a and -a reach the top magnitude
    look up which came first."""
    xt = np.ascontiguousarray(x.T)  # (k, n): reductions over axis 0 are whole-row operations
    hi = nan_ignoring(np.maximum, xt, axis=0)
    lo = nan_ignoring(np.minimum, xt, axis=0)
    nlo = -lo
    amax = np.maximum(hi, nlo)  # -inf for all-NaN rows
    amax = np.where(amax > 0, amax, F32(0))
    mx = np.where(hi >= nlo, hi, lo)
    tie = (hi == nlo) & (amax > 0)
    if tie.any():
        sub = x[tie]
        idx = (np.abs(sub) == amax[tie][:, None]).argmax(axis=1)
        mx[tie] = sub[np.arange(len(idx)), idx]
    return amax, np.where(amax > 0, mx, F32(0))


def fold_max_abs(x: np.ndarray) -> np.ndarray:
    """``amax = 0; for v: amax = MAX(amax, fabsf(v))`` with ``MAX(a,b) = a > b ? a : b``.

    A NaN element makes ``amax`` NaN, and the next element replaces it; so the result is NaN
    if the last element is NaN, else the max over the elements after the last NaN."""
    ax = np.abs(x)
    amax = np.maximum.reduce(np.ascontiguousarray(ax.T), axis=0)  # NaN-propagating
    bad = np.isnan(amax)
    if bad.any():
        sub = ax[bad]
        isn = np.isnan(sub)
        k = sub.shape[1]
        last = k - 1 - isn[:, ::-1].argmax(axis=1)  # index of the last NaN
        keep = np.arange(k)[None, :] > last[:, None]
        fixed = np.max(np.where(keep, sub, F32(0)), axis=1)
        amax[bad] = np.where(last == k - 1, F32(np.nan), fixed)
    return amax


def safe_inv(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)


def pack_nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``lo | hi << 4`` truncated to a byte, as ``uint8_t`` stores do."""
    return ((lo.astype(np.int32) | (hi.astype(np.int32) << 4)) & 0xFF).astype(np.uint8)
