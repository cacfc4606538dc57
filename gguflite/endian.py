"""Byte-order conversion of GGUF files, vectorized with numpy.

Metadata is re-encoded by ``GGUFWriter``.  Tensor data: plain types swap every element;
block types swap only the multi-byte fields inside each block, as laid out in ggml's
``ggml-common.h``.  The field table is the quantization package's
(``gguflite.quant.swap_block_bytes``, one ``Codec.swap`` per type), so every type that
``gguflite.quant`` knows converts (NVFP4, Q1_0, Q2_0 and the grid IQ types included).  Unknown
type ids are refused with an error rather than converted wrongly.
"""
from __future__ import annotations

import numpy as np

from .errors import GGUFError, WriteError
from .quant import CODECS, swap_block_bytes
from .reader import GGUFFile
from .types import TYPE_TRAITS
from .writer import GGUFWriter

__all__ = ["swap_tensor_bytes", "can_swap", "convert_endian"]


def can_swap(type_id: int) -> bool:
    """Whether the byte order of ``type_id`` data can be changed (its layout is known)."""
    return type_id in TYPE_TRAITS and type_id in CODECS


def swap_tensor_bytes(raw: np.ndarray, type_id: int) -> np.ndarray:
    """A byte-swapped copy of one tensor's raw bytes (uint8 [nbytes])."""
    if not can_swap(type_id):
        t = TYPE_TRAITS.get(type_id)
        name = t.name if t else f"TYPE_{type_id}"
        raise WriteError(f"cannot change the byte order of {name} data: its block layout is not described here")
    return swap_block_bytes(np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1), type_id)


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
                             + ", ".join(TYPE_TRAITS[k].name for k in CODECS if TYPE_TRAITS[k].dtype is None),
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

