"""Byte-order conversion of GGUF files, vectorized with numpy.

Metadata is re-encoded by ``GGUFWriter``.  Tensor data: plain types swap every element;
block types swap only the multi-byte fields inside each block, as laid out in ggml's
``ggml-common.h`` (``BLOCK_FIELDS`` below).  Types whose layout is not described here
(IQ2_*, IQ3_*, IQ1_*, NVFP4, Q1_0, Q2_0 and unknown ids: some read packed u16/u32 words
from their quant bytes) are refused with an error rather than converted wrongly.
"""
from __future__ import annotations

import numpy as np

from .errors import GGUFError, WriteError
from .reader import GGUFFile
from .types import TYPE_TRAITS, GGMLType
from .writer import GGUFWriter

__all__ = ["BLOCK_FIELDS", "swap_tensor_bytes", "can_swap", "convert_endian"]

G = GGMLType
# type -> [(byte offset in the block, field width in bytes, number of such fields)]
BLOCK_FIELDS: dict[int, list[tuple[int, int, int]]] = {
    G.Q4_0: [(0, 2, 1)],  # f16 d, 16 B nibbles
    G.Q4_1: [(0, 2, 2)],  # f16 d, f16 m, 16 B
    G.Q5_0: [(0, 2, 1), (2, 4, 1)],  # f16 d, u32 qh (read with memcpy: host order), 16 B
    G.Q5_1: [(0, 2, 2), (4, 4, 1)],  # f16 d, f16 m, u32 qh, 16 B
    G.Q8_0: [(0, 2, 1)],  # f16 d, 32 i8
    G.Q8_1: [(0, 2, 2)],  # f16 d, f16 s, 32 i8
    G.Q2_K: [(80, 2, 2)],  # scales[16], qs[64], f16 d, f16 dmin
    G.Q3_K: [(108, 2, 1)],  # hmask[32], qs[64], scales[12], f16 d
    G.Q4_K: [(0, 2, 2)],  # f16 d, f16 dmin, scales[12], qs[128]
    G.Q5_K: [(0, 2, 2)],  # f16 d, f16 dmin, scales[12], qh[32], qs[128]
    G.Q6_K: [(208, 2, 1)],  # ql[128], qh[64], scales[16], f16 d
    G.Q8_K: [(0, 4, 1), (260, 2, 16)],  # f32 d, qs[256], i16 bsums[16]
    G.IQ4_NL: [(0, 2, 1)],  # f16 d, qs[16]
    G.IQ4_XS: [(0, 2, 2)],  # f16 d, u16 scales_h, scales_l[4], qs[128]
    G.TQ1_0: [(52, 2, 1)],  # qs[48], qh[4], f16 d
    G.TQ2_0: [(64, 2, 1)],  # qs[64], f16 d
    G.MXFP4: [],  # u8 e8m0 scale, qs[16]: nothing to swap
}
del G


def can_swap(type_id: int) -> bool:
    t = TYPE_TRAITS.get(type_id)
    return t is not None and (t.dtype is not None or type_id in BLOCK_FIELDS)


def swap_tensor_bytes(raw: np.ndarray, type_id: int) -> np.ndarray:
    """A byte-swapped copy of one tensor's raw bytes (uint8 [nbytes])."""
    t = TYPE_TRAITS.get(type_id)
    if t is None or not can_swap(type_id):
        name = t.name if t else f"TYPE_{type_id}"
        raise WriteError(f"cannot change the byte order of {name} data: its block layout is not described here")
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if t.dtype is not None:
        w = t.dtype.itemsize
        return raw.reshape(-1, w)[:, ::-1].reshape(-1).copy()
    blocks = raw.reshape(-1, t.type_size).copy()  # [n_blocks, type_size]
    for off, width, count in BLOCK_FIELDS[type_id]:
        if width == 1:
            continue
        field = blocks[:, off : off + width * count].reshape(len(blocks), count, width)
        blocks[:, off : off + width * count] = field[:, :, ::-1].reshape(len(blocks), count * width)
    return blocks.reshape(-1)


def convert_endian(src, out, to: str = "swap") -> str:
    """Write ``src`` to ``out`` (atomic; may equal ``src``) in byte order ``to``:
    ``"<"``/``"little"``, ``">"``/``"big"``, ``"native"``, or ``"swap"``.
    Every tensor type is checked before anything is written."""
    with GGUFFile(src) as f:
        target = {"little": "<", "big": ">", "<": "<", ">": ">", "swap": ">" if f.endian == "<" else "<",
                  "native": "<" if np.little_endian else ">"}.get(to)
        if target is None:
            raise GGUFError(f"unknown byte order {to!r} (little, big, native or swap)")
        bad = [t for t in f.tensors.values() if not can_swap(t.type)] if target != f.endian else []
        if bad:
            raise WriteError(f"cannot change the byte order of {bad[0].type_name} data "
                             f"({len(bad)} tensor(s)); supported block types: "
                             + ", ".join(TYPE_TRAITS[k].name for k in BLOCK_FIELDS),
                             path=f.path, tensor=bad[0].name)
        w = GGUFWriter(out, endian=target, version=f.version, alignment=f.alignment, allow_nested=True)
        for fld in f.fields.values():
            w.add_field(fld)
        for t in f.tensors.values():
            if target == f.endian:
                w.add_tensor_from(t)
            else:
                w.add_tensor(t.name, t.shape, t.type, lambda t=t: swap_tensor_bytes(t.raw, t.type))
        return w.write()

