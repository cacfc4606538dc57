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

Exactness and speed.  Every finite value is exact in float32 whatever the order of the
products: d is an fp16 (11 significant bits), the sub-block factor ((0.5+s)/4, (0.5+s)/2,
1+2s: at most 5 bits), the grid value (at most 6 bits; IQ1's grid + delta times 2s+1: 8
bits) and the sign, so no product rounds, overflows or underflows.  inf and 0 scales give the
same signs in any order (no factor is zero), and a NaN d comes out as the same quiet NaN
(mulss and numpy's mulps return a NaN operand unchanged, quieted); only the sign needs care:
ggml's compiled loop negates by flipping the sign bit, NaN included (``_gather_into``).  So
a value is computed as

    (signed grid row, gathered from a float32 table)  x  (d * sub-block factor)

with IQ1's ``2*s + 1`` folded into its table, so that the second factor is d alone.  The
tables hold whole rows of 8 (or 4) values, gathered with ``take`` on a 1-D ``"V32"``
(``"V16"``) view, one call per chunk (fancy indexing of (n, k, 8) arrays is several times
slower), straight into ``out`` (the codecs are ``dequantize_into`` ones), where the product
with the per-group scale happens in place.  Index and scale fields are read from contiguous copies of the
byte fields and split with small lookup tables (scale byte → its two nibble factors, qh byte
→ shifted high index bits) instead of (n, k, 4)-shaped broadcasts, whose per-row overhead
is larger than the work.  Per chunk of 1 MB of output the largest temporaries are the int64
indices (256-512 KB), well under glibc's trim threshold.

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
from ._common import F16_TO_F32, F32, field, into_codec, le_f16, rows

_IQ1S_DELTA = _grids.IQ1S_DELTA  # ggml-common.h: #define IQ1S_DELTA 0.125f
# inf and NaN scales are legitimate (decoded as C decodes them): no warnings
_QUIET = dict(over="ignore", invalid="ignore")


def _ksigns() -> np.ndarray:
    """``ksigns_iq2xs[128]``: ``i | parity(i) << 7`` (8 signs with an even count of minus)."""
    i = np.arange(128, dtype=np.uint8)
    parity = np.unpackbits(i[:, None], axis=1).sum(axis=1) & 1
    return (i | (parity << 7).astype(np.uint8)).astype(np.uint8)


def _bits_to_signs(b: np.ndarray) -> np.ndarray:
    """Sign bytes (k,) → float32 (k, 8): -1 where bit j (``kmask_iq2xs[j] = 1 << j``) is set."""
    bits = np.unpackbits(b[:, None], axis=1, bitorder="little")
    return np.where(bits != 0, F32(-1), F32(1))


def _rows_of(v: np.ndarray) -> np.ndarray:
    """float32 (..., w) → a 1-D array of ``"V<4w>"`` rows, the unit ``take`` gathers."""
    v = np.ascontiguousarray(v, dtype=F32)
    w = v.shape[-1]
    return v.reshape(-1, w).view(f"V{4 * w}")[:, 0]


def _packed(v: np.ndarray, dtype) -> np.ndarray:
    """Small per-key tables (keys, k) → 1-D array of one ``k * itemsize``-byte word per key."""
    v = np.ascontiguousarray(v, dtype=dtype)
    return v.view(f"V{v.shape[1] * v.itemsize}")[:, 0]


class _Tables(NamedTuple):
    """Signed codebook rows (float32, as ``"V32"``/``"V16"`` 1-D arrays) for one ``Grids``."""

    iq2xxs: np.ndarray  # [grid 256][sign index 128]: 8 values
    iq2xs: np.ndarray  # [sign index 128][grid 512]: 8 values (the index is IQ2_XS's u16 itself)
    iq2s: np.ndarray  # [grid 1024][half 2][sign nibble 16]: 4 values
    iq3xxs: np.ndarray  # [grid 256][sign nibble 16]: 4 values
    iq3s: np.ndarray  # [grid 512][sign nibble 16]: 4 values
    iq1s: np.ndarray  # [delta sign 2][s 8][grid 2048]: (2*s + 1) * (grid +- IQ1S_DELTA), 8 values


@functools.lru_cache(maxsize=2)
def _tables_of(g: _grids.Grids) -> _Tables:
    ks = _bits_to_signs(_ksigns())  # (128, 8)
    nib = _bits_to_signs(np.arange(16, dtype=np.uint8))[:, :4]  # (16, 4): sign nibble → 4 signs
    iq2s = g.iq2s.astype(F32).reshape(1024, 2, 1, 4)
    iq1s = g.iq1s.astype(F32)
    iq1s = np.stack([iq1s + _IQ1S_DELTA, iq1s - _IQ1S_DELTA])  # (2, 2048, 8): C's grid[j] + delta
    return _Tables(
        iq2xxs=_rows_of(g.iq2xxs.astype(F32)[:, None, :] * ks[None]),
        iq2xs=_rows_of(g.iq2xs.astype(F32)[None, :, :] * ks[:, None]),
        iq2s=_rows_of(iq2s * nib[None, None]),
        iq3xxs=_rows_of(g.iq3xxs.astype(F32)[:, None, :] * nib[None]),
        iq3s=_rows_of(g.iq3s.astype(F32)[:, None, :] * nib[None]),
        iq1s=_rows_of(_F_ODD[None, :8, None, None] * iq1s[:, None]),
    )


def _tables() -> _Tables:
    return _tables_of(_grids.load())


# --------------------------------------------------------------------------- small lookup tables

_B = np.arange(256)
_S16 = np.arange(16)
_F_IQ2 = (F32(0.5) + _S16.astype(F32)) * F32(0.25)  # (0.5f + s) * 0.25f, exact
_F_IQ3XXS = (F32(0.5) + _S16.astype(F32)) * F32(0.5)
_F_ODD = (1 + 2 * _S16).astype(F32)  # 1 + 2*s (IQ3_S, IQ1)
# scale byte → its two nibble factors (low nibble first), as one 8-byte word
_NIB_IQ2 = _packed(np.stack([_F_IQ2[_B & 15], _F_IQ2[_B >> 4]], axis=1), F32)
_NIB_ODD = _packed(np.stack([_F_ODD[_B & 15], _F_ODD[_B >> 4]], axis=1), F32)
# IQ2_S qh byte → the 2 high grid bits of its 4 entries, already at bit 13 (grid << 5)
_QH_IQ2S = _packed(((_B[:, None] >> (2 * np.arange(4))) & 3) << 13, np.int16)
# IQ3_S qh byte → the 9th grid bit of its 8 entries, at bit 12 (grid << 4)
_QH_IQ3S = _packed(((_B[:, None] >> np.arange(8)) & 1) << 12, np.int16)
# IQ1_M (qh byte | s << 8) → its 2 entries' row bits: 3 grid bits << 8 | s << 11 | delta sign << 14
_K11 = np.arange(1 << 11)[:, None]
_NIB = (_K11 >> np.array([0, 4])) & 15  # (2048, 2)
_QH_IQ1M = _packed(((_NIB & 7) << 8) | ((_K11 >> 8) << 11) | ((_NIB >> 3) << 14), np.int16)
# IQ1_M 12 scale bits → the 4 3-bit s, each << 8 (to key _QH_IQ1M)
_SC_IQ1M = _packed(((np.arange(1 << 12)[:, None] >> (3 * np.arange(4))) & 7) << 8, np.uint16)


@functools.cache
def _qh_iq1s() -> np.ndarray:
    """IQ1_S u16 qh → its 4 entries' row bits: 3 grid bits << 8 | (s | delta sign << 3) << 11
    (512 KB, built on first use)."""
    k = np.arange(1 << 16)[:, None]
    return _packed((((k >> (3 * np.arange(4))) & 7) << 8) | ((k >> 12) << 11), np.int16)


_KSIGNS = _ksigns()


# --------------------------------------------------------------------------- block fields


def _lookup(table: np.ndarray, keys: np.ndarray, dtype) -> np.ndarray:
    """Gather the packed ``table`` words for ``keys`` (n, k) → (n, k * words) of ``dtype``."""
    return table.take(keys).view(dtype)


def _gather_into(table: np.ndarray, idx: np.ndarray, scale: np.ndarray, out: np.ndarray,
                 signed: bool = False) -> None:
    """``out`` (n, 256) = the ``table`` rows at ``idx`` (in value order) × the per-group
    ``scale`` (n, k).

    The rows are gathered straight into ``out`` and scaled in place: ``take`` with
    ``mode="wrap"`` writes into ``out`` directly ("raise" gathers into a temporary first), and
    the indices are in range by construction.  ``signed``: the rows carry C's ``(sign ? -1.f :
    1.f)`` factor; ggml's compiled loop applies it as a sign-bit flip, which also flips a NaN
    (a product with -1 would not), so groups with a NaN scale get the sign bits of their rows."""
    w = 256 // scale.shape[1]
    dst = out if out.flags.c_contiguous else np.empty(out.shape, F32)
    idx = idx.reshape(-1)
    table.take(idx, out=dst.reshape(-1).view(table.dtype), mode="wrap")
    v = dst.reshape(-1, w)
    with np.errstate(**_QUIET):
        np.multiply(v, scale.reshape(-1, 1), out=v)
    if signed:
        nan = np.isnan(scale.reshape(-1))
        if nan.any():  # rare: gather the rows again for their signs
            picked = table.take(idx).view(np.uint32).reshape(-1, w)
            bits = v.view(np.uint32)
            bits[nan] ^= picked[nan] & np.uint32(0x80000000)
    if dst is not out:
        out[...] = dst


def _times_d(d: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``d * factor`` per block: d (n, 1), factor (n, k) float32; exact (see above)."""
    with np.errstate(**_QUIET):
        return d * factor


# --------------------------------------------------------------------------- IQ2


def dequantize_iq2_xxs_into(q: np.ndarray, out: np.ndarray) -> None:
    q, t = rows(q), _tables()
    n = q.shape[0]
    w = field(q, 2, 64).reshape(n * 8, 8)  # group of 32: 4 grid bytes, u32 aux
    aux = w.view("<u4")[:, 1]  # 4 x 7-bit sign index | s << 28
    idx = np.left_shift(w[:, :4], 7, dtype=np.intp)  # (8n, 4): grid << 7 | sign index
    for l in range(4):
        np.bitwise_or(idx[:, l], (aux >> (7 * l)) & 127, out=idx[:, l])
    scale = _times_d(le_f16(q, 0)[:, None], _F_IQ2.take(aux >> 28).reshape(n, 8))
    _gather_into(t.iq2xxs, idx, scale, out, signed=True)


def dequantize_iq2_xs_into(q: np.ndarray, out: np.ndarray) -> None:
    q, t = rows(q), _tables()
    qs = field(q, 2, 64).view("<u2")  # (n, 32): grid | sign index << 9, the table's index
    scale = _times_d(le_f16(q, 0)[:, None], _lookup(_NIB_IQ2, field(q, 66, 8), F32))  # (n, 16)
    _gather_into(t.iq2xs, qs, scale, out, signed=True)


def dequantize_iq2_s_into(q: np.ndarray, out: np.ndarray) -> None:
    q, t = rows(q), _tables()
    base = np.left_shift(field(q, 2, 32), 5, dtype=np.intp)  # (n, 32): grid low bits << 5
    np.bitwise_or(base, _lookup(_QH_IQ2S, field(q, 66, 8), np.int16), out=base)  # | high bits
    signs = field(q, 34, 32)
    idx = np.empty(base.shape + (2,), np.intp)  # (n, 32, half): grid << 5 | half << 4 | nibble
    np.bitwise_or(base, signs & 15, out=idx[..., 0])
    np.bitwise_or(base, (signs >> 4) | 16, out=idx[..., 1])
    scale = _times_d(le_f16(q, 0)[:, None], _lookup(_NIB_IQ2, field(q, 74, 8), F32))  # (n, 16)
    _gather_into(t.iq2s, idx, scale, out, signed=True)


# --------------------------------------------------------------------------- IQ3


def dequantize_iq3_xxs_into(q: np.ndarray, out: np.ndarray) -> None:
    q, t = rows(q), _tables()
    n = q.shape[0]
    aux = field(q, 66, 32).view("<u4").reshape(-1)  # (8n,): 4 x 7-bit sign index | s << 28
    sidx = np.empty((n * 8, 4), np.intp)
    for l in range(4):
        np.bitwise_and(aux >> (7 * l), 127, out=sidx[:, l])
    ks = _KSIGNS.take(sidx)  # (8n, 4) sign bytes, one per 8 values (2 grid entries)
    idx = np.left_shift(field(q, 2, 64), 4, dtype=np.intp).reshape(n * 32, 2)  # grid << 4
    np.bitwise_or(idx[:, 0], (ks & 15).reshape(-1), out=idx[:, 0])
    np.bitwise_or(idx[:, 1], (ks >> 4).reshape(-1), out=idx[:, 1])
    scale = _times_d(le_f16(q, 0)[:, None], _F_IQ3XXS.take(aux >> 28).reshape(n, 8))
    _gather_into(t.iq3xxs, idx, scale, out, signed=True)


def dequantize_iq3_s_into(q: np.ndarray, out: np.ndarray) -> None:
    q, t = rows(q), _tables()
    n = q.shape[0]
    idx = np.left_shift(field(q, 2, 64), 4, dtype=np.intp)  # (n, 64): grid low bits << 4
    np.bitwise_or(idx, _lookup(_QH_IQ3S, field(q, 66, 8), np.int16), out=idx)  # | 9th bit << 12
    idx = idx.reshape(n * 32, 2)  # two entries per sign byte
    signs = field(q, 74, 32).reshape(-1)
    np.bitwise_or(idx[:, 0], signs & 15, out=idx[:, 0])
    np.bitwise_or(idx[:, 1], signs >> 4, out=idx[:, 1])
    scale = _times_d(le_f16(q, 0)[:, None], _lookup(_NIB_ODD, field(q, 106, 4), F32))  # (n, 8): 1 + 2*s
    _gather_into(t.iq3s, idx, scale, out, signed=True)


# --------------------------------------------------------------------------- IQ1


def _iq1_into(d: np.ndarray, qs: np.ndarray, bits: np.ndarray, out: np.ndarray) -> None:
    """``out`` = d × the ``iq1s`` rows at ``qs | bits`` (low 8 grid bits | the rest), (n, 32)."""
    idx = np.bitwise_or(qs, bits).astype(np.intp)  # int16 | then one cast: cheaper than mixed
    _gather_into(_tables().iq1s, idx, d, out)


def dequantize_iq1_s_into(q: np.ndarray, out: np.ndarray) -> None:
    q = rows(q)
    qh = field(q, 34, 16).view("<u2")  # (n, 8): 4 x 3 grid bits | s << 12 | delta sign << 15
    _iq1_into(le_f16(q, 0)[:, None], field(q, 2, 32), _lookup(_qh_iq1s(), qh, np.int16), out)


def dequantize_iq1_m_into(q: np.ndarray, out: np.ndarray) -> None:
    q = rows(q)
    sc = field(q, 48, 8)  # u16 sc[4]: 4 x 3-bit s each, the f16 d in their top nibbles
    w = sc.view("<u8")[:, 0]  # sc[0] >> 12 | (sc[1] >> 8) & 0xF0 | (sc[2] >> 4) & 0xF00 | sc[3] & 0xF000
    dbits = ((w >> 12) & 0xF) | ((w >> 24) & 0xF0) | ((w >> 36) & 0xF00) | (w >> 48) & 0xF000
    sc = sc.view("<u2")  # (n, 4)
    key = np.bitwise_or(field(q, 32, 16), _lookup(_SC_IQ1M, sc & 0x0FFF, np.uint16))  # (n, 16): qh | s << 8
    _iq1_into(F16_TO_F32.take(dbits.astype(np.uint16))[:, None], field(q, 0, 32), _lookup(_QH_IQ1M, key, np.int16), out)


# (byte offset, item size, count) of the fields swapped for big-endian files.
CODECS = {
    GGMLType.IQ2_XXS: into_codec(None, dequantize_iq2_xxs_into, ((0, 2, 1), (2, 4, 16)), 256),
    GGMLType.IQ2_XS: into_codec(None, dequantize_iq2_xs_into, ((0, 2, 1), (2, 2, 32)), 256),
    GGMLType.IQ2_S: into_codec(None, dequantize_iq2_s_into, ((0, 2, 1),), 256),
    GGMLType.IQ3_XXS: into_codec(None, dequantize_iq3_xxs_into, ((0, 2, 1), (66, 4, 8)), 256),
    GGMLType.IQ3_S: into_codec(None, dequantize_iq3_s_into, ((0, 2, 1),), 256),
    GGMLType.IQ1_S: into_codec(None, dequantize_iq1_s_into, ((0, 2, 1), (34, 2, 8)), 256),
    GGMLType.IQ1_M: into_codec(None, dequantize_iq1_m_into, ((48, 2, 4),), 256),
}
