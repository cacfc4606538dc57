"""Dequantize the grid IQ types (dequantize only), bit-exact with ggml's ``dequantize_row_iq*``.

Each group of 8 (IQ3: 4) values is one entry of a codebook (``grids.py`` reads them from
libggml on first use) times a scale, with per-value signs.  Layouts (bytes, ggml-common.h):

    IQ2_XXS [f16 d][8 x (u32: 4 grid bytes, u32: 4x7 sign bits | 4-bit s << 28)]        66
    IQ2_XS  [f16 d][u16 qs[32]: 9-bit grid | 7-bit sign index << 9][8 B: 2 x 4-bit s]     74
    IQ2_S   [f16 d][32 B grid lo][32 B signs][8 B qh: 4 x 2 grid hi bits][8 B scales]     82
    IQ3_XXS [f16 d][64 B grid (4 values each)][8 x u32: 4x7 sign bits | 4-bit s << 28]   98
    IQ3_S   [f16 d][64 B grid lo][8 B qh: 8 x 1 grid hi bit][32 B signs][4 B scales]    110
    IQ1_S   [f16 d][32 B grid lo][u16 qh[8]: 4 x 3 grid hi bits | s << 12 | delta sign]  50
    IQ1_M   [32 B grid lo][16 B qh: nibbles of 3 grid hi bits | delta sign][u16 sc[4]:
             4 x 3-bit s each, and the f16 d in their top nibbles]                       56

All blocks hold 256 values.  Scales as in ggml-quants.c, float32 in C order: IQ2 ``db = d *
(0.5f + s) * 0.25f``, IQ3_XXS ``d * (0.5f + s) * 0.5f``, IQ3_S ``d * (1 + 2*s)``, IQ1 ``d *
(2*s + 1)``; a value is ``db * grid[j] * (±1)``, IQ1 ``dl * (grid[j] + delta)``.

A "sign index" (7 bits) names the signs of 8 values through ``ksigns_iq2xs``: the 7 bits are
the first 7 signs and the 8th makes the number of negative signs even (``_ksigns``).

Big-endian files: the fields swapped are the ones ggml's code reads as multi-byte integers
(the f16 d; IQ2_XXS and IQ3_XXS's u32 words, IQ2_XS's u16 qs, IQ1_S's u16 qh, IQ1_M's u16
scales); the rest are bytes.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..types import GGMLType
from . import grids as _grids
from ._common import F32, Codec, f16_bits_to_f32, le_f16

_IQ1S_DELTA = _grids.IQ1S_DELTA  # ggml-common.h: #define IQ1S_DELTA 0.125f


def _ksigns() -> np.ndarray:
    """``ksigns_iq2xs[128]``: ``i | parity(i) << 7`` (8 signs with an even count of minus)."""
    i = np.arange(128, dtype=np.uint8)
    parity = np.unpackbits(i[:, None], axis=1).sum(axis=1) & 1
    return (i | (parity << 7).astype(np.uint8)).astype(np.uint8)


def _bits_to_signs(b: np.ndarray) -> np.ndarray:
    """Sign bytes (k,) → float32 (k, 8): -1 where bit j (``kmask_iq2xs[j] = 1 << j``) is set."""
    bits = np.unpackbits(b[:, None], axis=1, bitorder="little")
    return np.where(bits != 0, F32(-1), F32(1))


class _Tables(NamedTuple):
    """The codebooks as float32 and the sign patterns as ±1, for one ``Grids``."""

    iq2xxs: np.ndarray  # (256, 8)
    iq2xs: np.ndarray  # (512, 8)
    iq2s: np.ndarray  # (1024, 8)
    iq3xxs: np.ndarray  # (256, 4)
    iq3s: np.ndarray  # (512, 4)
    iq1s: np.ndarray  # (4096, 8): grid + IQ1S_DELTA, then grid - IQ1S_DELTA (C's float sum)
    ksigns: np.ndarray  # (128, 8): sign index → 8 signs
    bytesigns: np.ndarray  # (256, 8): sign byte → 8 signs


@functools.lru_cache(maxsize=2)
def _tables_of(g: _grids.Grids) -> _Tables:
    f = {name: getattr(g, name).astype(F32) for name, *_ in _grids.GRID_SPECS}
    f["iq1s"] = np.concatenate([f["iq1s"] + _IQ1S_DELTA, f["iq1s"] - _IQ1S_DELTA])
    return _Tables(**f, ksigns=_bits_to_signs(_ksigns()), bytesigns=_bits_to_signs(np.arange(256, dtype=np.uint8)))


def _tables() -> _Tables:
    return _tables_of(_grids.load())


def _u32(q: np.ndarray) -> np.ndarray:
    """Little-endian uint32 words of the byte columns ``q`` (n, 4k) → (n, k)."""
    return np.ascontiguousarray(q).view("<u4").astype(np.uint32)


def _u16(q: np.ndarray) -> np.ndarray:
    """Little-endian uint16 words of the byte columns ``q`` (n, 2k) → (n, k) int32."""
    return np.ascontiguousarray(q).view("<u2").astype(np.int32)


_SHIFT7 = np.array([0, 7, 14, 21], np.uint32)  # the four 7-bit sign indices of a u32


def _nibble_scales(sc: np.ndarray) -> np.ndarray:
    """Scale bytes (n, k) → 4-bit scales (n, 2k): low nibble first."""
    return np.stack([sc & 0xF, sc >> 4], axis=-1).reshape(sc.shape[0], -1)


def _iq2_db(d: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``d * (0.5f + s) * 0.25f`` for d (n,) and integer s (n, k)."""
    return d[:, None] * (F32(0.5) + s.astype(F32)) * F32(0.25)


# --------------------------------------------------------------------------- IQ2


def dequantize_iq2_xxs(q: np.ndarray) -> np.ndarray:
    t, n = _tables(), q.shape[0]
    d = le_f16(q, 0)
    w = q[:, 2:].reshape(n, 8, 8)  # (n, group of 32, 8 bytes)
    aux = _u32(w[:, :, 4:]).reshape(n, 8)  # sign indices and scale
    db = _iq2_db(d, aux >> 28)  # (n, 8)
    grid = t.iq2xxs[w[:, :, :4]]  # (n, 8, 4, 8)
    signs = t.ksigns[(aux[:, :, None] >> _SHIFT7) & 127]  # (n, 8, 4, 8)
    return (db[:, :, None, None] * grid * signs).reshape(n, 256)


def dequantize_iq2_xs(q: np.ndarray) -> np.ndarray:
    t, n = _tables(), q.shape[0]
    d = le_f16(q, 0)
    qs = _u16(q[:, 2:66]).reshape(n, 8, 4)  # (n, group, 4)
    db = _iq2_db(d, _nibble_scales(q[:, 66:74])).reshape(n, 8, 2)  # low nibble: first 16
    grid = t.iq2xs[qs & 511]  # (n, 8, 4, 8)
    signs = t.ksigns[qs >> 9]
    return (db[:, :, [0, 0, 1, 1], None] * grid * signs).reshape(n, 256)


def dequantize_iq2_s(q: np.ndarray) -> np.ndarray:
    t, n = _tables(), q.shape[0]
    d = le_f16(q, 0)
    lo = q[:, 2:34].reshape(n, 8, 4).astype(np.int32)
    hi = (q[:, 66:74, None].astype(np.int32) >> np.array([0, 2, 4, 6])) & 3  # (n, 8, 4)
    db = _iq2_db(d, _nibble_scales(q[:, 74:82])).reshape(n, 8, 2)
    grid = t.iq2s[lo | (hi << 8)]  # (n, 8, 4, 8)
    signs = t.bytesigns[q[:, 34:66].reshape(n, 8, 4)]
    return (db[:, :, [0, 0, 1, 1], None] * grid * signs).reshape(n, 256)


# --------------------------------------------------------------------------- IQ3


def dequantize_iq3_xxs(q: np.ndarray) -> np.ndarray:
    t, n = _tables(), q.shape[0]
    d = le_f16(q, 0)
    aux = _u32(q[:, 66:98])  # (n, 8)
    db = d[:, None] * (F32(0.5) + (aux >> 28).astype(F32)) * F32(0.5)
    grid = t.iq3xxs[q[:, 2:66]].reshape(n, 8, 4, 8)  # two 4-value entries per 8 values
    signs = t.ksigns[(aux[:, :, None] >> _SHIFT7) & 127]
    return (db[:, :, None, None] * grid * signs).reshape(n, 256)


def dequantize_iq3_s(q: np.ndarray) -> np.ndarray:
    t, n = _tables(), q.shape[0]
    d = le_f16(q, 0)
    lo = q[:, 2:66].reshape(n, 8, 8).astype(np.int32)
    hi = (q[:, 66:74, None].astype(np.int32) >> np.arange(8)) & 1  # (n, 8, 8)
    db = d[:, None] * (1 + 2 * _nibble_scales(q[:, 106:110]).astype(np.int32)).astype(F32)  # (n, 8)
    grid = t.iq3s[lo | (hi << 8)].reshape(n, 8, 4, 8)
    signs = t.bytesigns[q[:, 74:106].reshape(n, 8, 4)]
    return (db[:, :, None, None] * grid * signs).reshape(n, 256)


# --------------------------------------------------------------------------- IQ1


def dequantize_iq1_s(q: np.ndarray) -> np.ndarray:
    t, n = _tables(), q.shape[0]
    d = le_f16(q, 0)
    qh = _u16(q[:, 34:50])  # (n, 8)
    hi = (qh[:, :, None] >> np.array([0, 3, 6, 9])) & 7
    neg = (qh >> 15)[:, :, None] << 11  # delta sign: the second half of t.iq1s
    idx = q[:, 2:34].reshape(n, 8, 4).astype(np.int32) | (hi << 8) | neg
    dl = d[:, None] * (2 * ((qh >> 12) & 7) + 1).astype(F32)  # (n, 8)
    return (dl[:, :, None, None] * t.iq1s[idx]).reshape(n, 256)


def dequantize_iq1_m(q: np.ndarray) -> np.ndarray:
    t, n = _tables(), q.shape[0]
    sc = _u16(q[:, 48:56])  # (n, 4)
    dbits = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
    d = f16_bits_to_f32(dbits.astype(np.uint16))
    s = ((sc[:, :, None] >> np.array([0, 3, 6, 9])) & 7).reshape(n, 8, 2)  # (n, group, half)
    dl = d[:, None, None] * (2 * s + 1).astype(F32)
    qh = q[:, 32:48].reshape(n, 8, 2).astype(np.int32)  # two bytes per group, each for 2 entries
    hi = np.stack([qh & 7, (qh >> 4) & 7], axis=-1).reshape(n, 8, 4)
    neg = np.stack([(qh >> 3) & 1, qh >> 7], axis=-1).reshape(n, 8, 4)  # delta signs
    idx = q[:, :32].reshape(n, 8, 4).astype(np.int32) | (hi << 8) | (neg << 11)
    return (dl[:, :, [0, 0, 1, 1], None] * t.iq1s[idx]).reshape(n, 256)


# (byte offset, item size, count) of the fields swapped for big-endian files.
CODECS: dict[int, Codec] = {
    GGMLType.IQ2_XXS: Codec(None, dequantize_iq2_xxs, ((0, 2, 1), (2, 4, 16))),
    GGMLType.IQ2_XS: Codec(None, dequantize_iq2_xs, ((0, 2, 1), (2, 2, 32))),
    GGMLType.IQ2_S: Codec(None, dequantize_iq2_s, ((0, 2, 1),)),
    GGMLType.IQ3_XXS: Codec(None, dequantize_iq3_xxs, ((0, 2, 1), (66, 4, 8))),
    GGMLType.IQ3_S: Codec(None, dequantize_iq3_s, ((0, 2, 1),)),
    GGMLType.IQ1_S: Codec(None, dequantize_iq1_s, ((0, 2, 1), (34, 2, 8))),
    GGMLType.IQ1_M: Codec(None, dequantize_iq1_m, ((48, 2, 4),)),
}
