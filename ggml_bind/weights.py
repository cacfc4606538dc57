"""GGUF weights into one backend buffer, straight from gguflite's memory map.

    W = load_weights("model.gguf", backend)              # or an open gguflite.GGUFFile
    W["blk.0.attn_q.weight"]                             # Tensor (numpy-order shape, file type)
    W = load_weights(f, backend, select=lambda n: n.startswith("v."))

As llama.cpp does: one metadata context with a tensor per file tensor (same type: quantized
weights are used as they are), one backend buffer marked WEIGHTS for all of them, then each
tensor's bytes go from the read-only map to the buffer with ``ggml_backend_tensor_set``
(``ffi.from_buffer`` over the mapped view: no intermediate copy in Python).

Big-endian files hold byte-swapped numbers, which ggml cannot use; their plain-type
tensors are swapped on the way (one copy each) and block-type tensors are refused.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import numpy as np

from gguflite.types import TYPE_TRAITS

from . import lib as _lib
from .errors import GGMLError, GGMLTypeError
from .tensor import MAX_NAME, Context, Tensor


class Weights(Mapping):
    """Name -> :class:`Tensor` for weights living in one backend buffer.

    Owns the context and (through it) the buffer; ``free()`` releases both now.
    """

    def __init__(self, ctx: Context, tensors: dict[str, Tensor], buffer, path: str | None):
        self.ctx = ctx
        self.buffer = buffer
        self.path = path
        self._tensors = tensors

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"no weight named {name!r} in {self.path or 'these weights'}") from None

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def nbytes(self) -> int:
        return self.buffer.size

    def free(self) -> None:
        self.ctx.free()

    def __repr__(self) -> str:
        return f"<Weights {len(self)} tensors, {self.nbytes} bytes on {self.buffer.backend.name}>"


def load_weights(source, backend, *, select: Callable[[str], bool] | None = None) -> Weights:
    """Load the tensors of a GGUF file (path or open ``gguflite.GGUFFile``) into ``backend``.

    Args:
        source: a path, or an open GGUF file (left open; a path is opened and closed here).
        backend: the :class:`~ggml_bind.backend.Backend` whose memory receives the weights.
        select: optional predicate on tensor names; only those tensors are loaded.
    Raises:
        GGMLError if a tensor has a type ggml does not know, a name too long for ggml, or is
        a block type in a big-endian file; gguflite.GGUFError for file problems.
    """
    import gguflite

    own = not hasattr(source, "tensors")
    f = gguflite.open(source) if own else source
    try:
        return _load(f, backend, select)
    finally:
        if own:
            f.close()


def _load(f, backend, select) -> Weights:
    C, ffi = _lib.C(), _lib.ffi()
    path = str(getattr(f, "path", "") or "") or None
    infos = [ti for name, ti in f.tensors.items() if select is None or select(name)]
    if not infos:
        raise GGMLError(f"no tensors to load from {path}")
    big_endian = getattr(f, "endian", "<") == ">"
    for ti in infos:
        tr = TYPE_TRAITS.get(ti.type)
        if tr is None or C.ggml_blck_size(ti.type) == 0:
            raise GGMLTypeError(f"{path}: tensor {ti.name!r} has type id {ti.type}, unknown to ggml", tensor=ti.name)
        if len(ti.name.encode()) > MAX_NAME:
            raise GGMLError(f"{path}: tensor name longer than {MAX_NAME} bytes", tensor=ti.name)
        if big_endian and tr.dtype is None:
            raise GGMLTypeError(
                f"{path}: {tr.name} blocks in a big-endian file cannot be used by ggml", tensor=ti.name
            )
    ctx = Context(n_tensors=len(infos) + 1)
    tensors = {ti.name: ctx.new_tensor(ti.type, ti.shape or (1,), ti.name) for ti in infos}
    buffer = ctx.allocate(backend, usage="weights")
    try:
        for ti in infos:
            t = tensors[ti.name]
            if t.nbytes != ti.nbytes:  # both sides computed the size; they must agree
                raise GGMLError(f"{path}: ggml sizes tensor {ti.name!r} at {t.nbytes} bytes, file at {ti.nbytes}")
            raw = ti.raw  # read-only uint8 view of the map, bounds-checked by gguflite
            if big_endian:
                raw = ti.data.astype(ti.data.dtype.newbyteorder("=")).reshape(-1).view(np.uint8)
            C.ggml_backend_tensor_set(t.ptr, ffi.from_buffer(raw), 0, t.nbytes)
    except BaseException:
        ctx.free()
        raise
    return Weights(ctx, tensors, buffer, path)
