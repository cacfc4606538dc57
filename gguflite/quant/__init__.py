"""numpy quantize and dequantize for ggml tensor types, bit-exact with ggml.

    q = quantize(x, GGMLType.Q4_K)        # x float32 (..., n) → uint8 (..., n/256*144)
    y = dequantize(q, GGMLType.Q4_K, x.shape)   # → float32 of numpy shape x.shape

``quantize`` reproduces ``ggml_quantize_chunk`` without an importance matrix byte for byte
(zeros, ties, denormals, huge values, inf and NaN included) for the types in
``QUANTIZABLE``; ``dequantize`` reproduces ggml's ``to_float`` for ``DEQUANTIZABLE``.  The
rules that make this exact are in ``_common.py``; one module per family implements them:

    floats.py   F32 F16 BF16 F64 I8..I64
    legacy.py   Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1
    kquants.py  Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K
    small.py    TQ1_0 TQ2_0 MXFP4 NVFP4 Q1_0 Q2_0 IQ4_NL IQ4_XS (the IQ4s: dequantize only)
    iq.py       IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M (dequantize only)

Q8_K is dequantize-only (``ggml_quantize_chunk`` has no Q8_K case either).  The grid IQ types
decode with codebooks (large tables in ggml-common.h) that ``grids.py`` reads back from the
installed libggml on first use and caches; without libggml they raise
``grids.GridTablesError``.  The reference is ggml 0.25.3 as built for x86-64; one NaN
corner of the K-quants follows that build's instruction order (see ``kquants._requant``).

Work is done ``chunk_elements`` at a time (default 256 Ki floats), so the temporaries stay a
few MB whatever the tensor size.  Big-endian files: pass ``endian=">"``, or use
``swap_block_bytes`` to byte-swap the multi-byte fields inside each block.
"""
from __future__ import annotations

import numpy as np

from ..types import TYPE_TRAITS, GGMLType, parse_type
from . import floats, iq, kquants, legacy, small
from ._common import Codec

__all__ = ["quantize", "dequantize", "swap_block_bytes", "QUANTIZABLE", "DEQUANTIZABLE", "CODECS"]

# type id → Codec(quantize, dequantize, swap fields); one entry per type the modules know.
CODECS: dict[int, Codec] = {**floats.CODECS, **legacy.CODECS, **kquants.CODECS, **small.CODECS, **iq.CODECS}

QUANTIZABLE: frozenset[GGMLType] = frozenset(GGMLType(t) for t, c in CODECS.items() if c.quantize)
DEQUANTIZABLE: frozenset[GGMLType] = frozenset(GGMLType(t) for t in CODECS)

DEFAULT_CHUNK_ELEMENTS = 1 << 18


def _codec(ggml_type, need_quantize: bool) -> tuple[GGMLType, Codec]:
    t = parse_type(ggml_type)
    codec = CODECS.get(t)
    if codec is None or (need_quantize and codec.quantize is None):
        what = "quantize to" if need_quantize else "dequantize"
        known = sorted(x.name for x in (QUANTIZABLE if need_quantize else DEQUANTIZABLE))
        raise ValueError(f"cannot {what} {t.name}; supported: {', '.join(known)}")
    return t, codec


def _chunk_blocks(block_size: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // block_size)


def quantize(x, ggml_type, *, endian: str = "<", chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> np.ndarray:
    """Quantize float32 ``x`` of numpy shape (..., n) to ``ggml_type``.

    Returns uint8 of shape (..., n // block_size * type_size): row for row the bytes
    ``ggml_quantize_chunk`` writes (byte-swapped per field when ``endian == ">"``).
    Raises ValueError if ``n`` is not a multiple of the block size or the type is not in
    ``QUANTIZABLE``.
    """
    t, codec = _codec(ggml_type, True)
    tr = TYPE_TRAITS[t]
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    if x.ndim == 0:
        x = x.reshape(1)
    n = x.shape[-1]
    if n % tr.block_size:
        raise ValueError(f"{t.name}: last dimension {n} is not a multiple of the block size {tr.block_size}")
    blocks = np.ascontiguousarray(x).reshape(-1, tr.block_size)  # (n_blocks, block_size)
    out = np.empty((blocks.shape[0], tr.type_size), np.uint8)
    step = _chunk_blocks(tr.block_size, chunk_elements)
    with np.errstate(all="ignore"):  # inf/NaN inputs are legitimate and handled as in C
        for i in range(0, blocks.shape[0], step):
            out[i : i + step] = codec.quantize(blocks[i : i + step])
    if endian == ">":
        out = swap_block_bytes(out, t).reshape(out.shape)
    elif endian != "<":
        raise ValueError(f"endian must be '<' or '>', not {endian!r}")
    return out.reshape(*x.shape[:-1], n // tr.block_size * tr.type_size)


def dequantize(data, ggml_type, shape, *, endian: str | None = None,
               chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> np.ndarray:
    """Dequantize the raw bytes of a tensor of ``ggml_type`` with numpy ``shape`` to float32.

    ``data``: any array or buffer holding exactly the tensor's bytes (a uint8 view of a
    memory map, or a typed view for the plain types).  ``endian``: ``"<"`` or ``">"``; by
    default taken from ``data``'s dtype (``">f4"`` views are big-endian), else little.
    """
    t, codec = _codec(ggml_type, False)
    tr = TYPE_TRAITS[t]
    shape = tuple(int(s) for s in shape)
    arr = np.asarray(data) if not isinstance(data, (bytes, bytearray, memoryview)) else np.frombuffer(data, np.uint8)
    if endian is None:
        endian = ">" if arr.dtype.byteorder == ">" and arr.dtype.itemsize > 1 else "<"
    if endian not in "<>" or len(endian) != 1:
        raise ValueError(f"endian must be '<' or '>', not {endian!r}")
    raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    n_el = 1
    for s in shape:
        n_el *= s
    n = shape[-1] if shape else 1
    if n % tr.block_size:
        raise ValueError(f"{t.name}: last dimension {n} is not a multiple of the block size {tr.block_size}")
    n_blocks = n_el // tr.block_size
    if raw.size != n_blocks * tr.type_size:
        raise ValueError(f"{t.name} tensor of shape {shape} needs {n_blocks * tr.type_size} bytes, got {raw.size}")
    blocks = raw.reshape(n_blocks, tr.type_size)
    if endian == ">":
        blocks = swap_block_bytes(blocks, t).reshape(n_blocks, tr.type_size)
    out = np.empty((n_blocks, tr.block_size), np.float32)
    step = _chunk_blocks(tr.block_size, chunk_elements)
    with np.errstate(all="ignore"):  # NaN/inf scales in the data give NaN/inf, as in C
        for i in range(0, n_blocks, step):
            if codec.dequantize_into is not None:
                codec.dequantize_into(blocks[i : i + step], out[i : i + step])
            else:
                out[i : i + step] = codec.dequantize(blocks[i : i + step])
    return out.reshape(shape)


def swap_block_bytes(data, ggml_type) -> np.ndarray:
    """Byte-swap every multi-byte field inside the blocks of ``data`` (little ↔ big endian).

    ``data``: raw bytes of whole blocks.  Returns a new flat uint8 array; the input is not
    modified.  The plain types swap each element; block types swap their f16/u16/u32/f32
    fields (e.g. Q4_K: ``d`` and ``dmin``; Q8_K: ``d`` and the 16 ``bsums``); byte-only
    types such as MXFP4 come back unchanged.
    """
    t = parse_type(ggml_type)
    tr = TYPE_TRAITS.get(t)
    codec = CODECS.get(t)
    if tr is None or codec is None:
        raise ValueError(f"no block layout known for {t.name}")
    raw = np.ascontiguousarray(np.asarray(data)).reshape(-1).view(np.uint8)
    if raw.size % tr.type_size:
        raise ValueError(f"{t.name}: {raw.size} bytes is not a whole number of {tr.type_size}-byte blocks")
    out = raw.reshape(-1, tr.type_size).copy()
    for offset, size, count in codec.swap:
        field = out[:, offset : offset + size * count].reshape(-1, count, size)
        field[...] = field[:, :, ::-1].copy()
    return out.reshape(-1)
