"""numpy <-> ggml tensors, and the contexts that own them.

**The one place of the shape reversal in ggml_bind.**  Public shapes are numpy order (last
axis fastest); ggml stores ``ne[0]`` fastest.  :func:`ne_from_shape` and
:func:`shape_from_ne` are the only functions that reverse; everything else asks them.

    ctx = Context(n_tensors=16)                     # metadata only (no_alloc)
    w = ctx.new_tensor(GGMLType.F32, (4, 8), "w")   # numpy shape (rows=4, cols=8): ne = [8, 4]
    buf = ctx.allocate(backend, usage="weights")    # one backend buffer for all its tensors
    w.set(np.ones((4, 8), np.float32)); w.get()    # bounds- and dtype-checked copies

Ownership: a :class:`Context` owns its ``ggml_context`` (``ffi.gc(ggml_free)``) and the
buffers holding its tensors' data.  A :class:`Tensor` is a borrowed pointer plus its
context; once the context is freed (``ctx.free()`` or garbage collection) every wrapper
raises :class:`~ggml_bind.errors.GGMLFreedError` instead of touching freed memory.  Tensors
of a graph context are valid for ``get``/``set`` only while the graph is allocated in its
scheduler (see :mod:`ggml_bind.graph`).
"""
from __future__ import annotations

import numpy as np

from gguflite.types import TYPE_TRAITS, GGMLType

from . import lib as _lib
from .errors import GGMLError, GGMLFreedError, GGMLLayoutError, GGMLMemoryError, GGMLShapeError, GGMLTypeError

MAX_DIMS = 4
MAX_NAME = 63  # bytes; ggml names are char[64] with the terminator


# --------------------------------------------------------------------------- shape <-> ne


def ne_from_shape(shape) -> list[int]:
    """numpy shape (1..4 dims) -> ggml ``ne`` (4 entries, fastest first, padded with 1)."""
    dims = [int(d) for d in shape]
    if not 1 <= len(dims) <= MAX_DIMS:
        raise GGMLShapeError(f"ggml tensors have 1 to {MAX_DIMS} dims, got shape {tuple(dims)}")
    if any(d < 1 for d in dims):
        raise GGMLShapeError(f"every dim must be at least 1, got shape {tuple(dims)}")
    ne = dims[::-1] + [1] * (MAX_DIMS - len(dims))
    total = 1
    for d in ne:
        total *= d
    if total >= 2**62:
        raise GGMLShapeError(f"shape {tuple(dims)} has too many elements")
    return ne


def shape_from_ne(ne, ndim: int) -> tuple[int, ...]:
    """ggml ``ne`` -> numpy shape with ``ndim`` dims (the dims beyond must be 1)."""
    ne = [int(x) for x in ne]
    return tuple(ne[:ndim][::-1])


def ggml_axis(axis: int, ndim: int, op: str | None = None) -> int:
    """numpy axis (negative allowed) of an ``ndim``-dim tensor -> ggml dim index."""
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise GGMLShapeError(f"axis {axis} is out of range for {ndim} dims", op=op)
    return ndim - 1 - (axis % ndim)


def ggml_permutation(axes, ndim: int, op: str | None = None) -> list[int]:
    """numpy ``transpose`` axes -> the 4 arguments of ``ggml_permute``.

    numpy: ``out.shape[i] = a.shape[axes[i]]``.  ggml: source dim ``s`` moves to position
    ``perm[s]``.  Leading size-1 axes pad both to 4 dims.
    """
    axes = [int(a) for a in axes]
    if sorted(a % ndim if -ndim <= a < ndim else -1 for a in axes) != list(range(ndim)) or len(axes) != ndim:
        raise GGMLShapeError(f"axes {tuple(axes)} are not a permutation of {ndim} dims", op=op)
    pad = MAX_DIMS - ndim
    full = list(range(pad)) + [pad + a % ndim for a in axes]
    perm = [0] * MAX_DIMS
    for i, src in enumerate(full):
        perm[MAX_DIMS - 1 - src] = MAX_DIMS - 1 - i
    return perm


def type_id(t) -> int:
    """A ggml type given as GGMLType, int or name ("f16") -> its id, checked."""
    if isinstance(t, str):
        try:
            t = GGMLType[t.upper()]
        except KeyError:
            raise GGMLTypeError(f"unknown ggml type {t!r}") from None
    t = int(t)
    if t not in TYPE_TRAITS:
        raise GGMLTypeError(f"unknown or removed ggml type id {t}")
    return t


def type_name(t: int) -> str:
    tr = TYPE_TRAITS.get(int(t))
    return tr.name if tr else f"TYPE_{t}"


# --------------------------------------------------------------------------- context


class Context:
    """A ``ggml_context`` holding tensor metadata only (``no_alloc``); data lives in backend
    buffers (:meth:`allocate`) or in a scheduler's compute buffers (graphs).

    Args:
        n_tensors: how many tensors (including op results and views) it can hold.
        graph_size: room for one graph of that many nodes (0: none).
    """

    def __init__(self, n_tensors: int = 256, graph_size: int = 0):
        C, ffi = _lib.C(), _lib.ffi()
        if n_tensors < 1 or graph_size < 0:
            raise GGMLError(f"bad context sizes n_tensors={n_tensors} graph_size={graph_size}")
        mem = n_tensors * C.ggml_tensor_overhead()
        if graph_size:
            mem += C.ggml_graph_overhead_custom(graph_size, False)
        ptr = C.ggml_init({"mem_size": mem, "mem_buffer": ffi.NULL, "no_alloc": True})
        if ptr == ffi.NULL:
            raise GGMLMemoryError(f"ggml_init could not allocate {mem} bytes of metadata")
        self.ptr = ffi.gc(ptr, C.ggml_free)
        self.alive = True
        self.graph = None  # the Graph built in this context, if any
        self.buffers: list = []  # backend buffers holding this context's tensors
        # input index tensors (by address) -> (exclusive bound, op): checked by Graph.compute
        self.index_bounds: dict[int, tuple[int, str]] = {}
        # numpy ndim of each tensor (by address): ggml_n_dims forgets leading size-1 axes
        self.ndims: dict[int, int] = {}
        # other contexts whose tensors ops here read (weights, KV cache): kept alive with
        # this one, and checked before computing (see check_deps)
        self.deps: dict[int, "Context"] = {}

    # lifecycle ------------------------------------------------------------
    def check(self) -> None:
        if not self.alive:
            raise GGMLFreedError("the context of this tensor was freed")

    def depend_on(self, other: "Context") -> None:
        if other is not self:
            self.deps[id(other)] = other

    def check_deps(self) -> None:
        """Raise GGMLFreedError if this context or one it reads from was freed."""
        todo, seen = [self], set()
        while todo:
            c = todo.pop()
            if id(c) in seen:
                continue
            seen.add(id(c))
            if not c.alive:
                raise GGMLFreedError("a context this graph reads from (weights, cache) was freed")
            todo.extend(c.deps.values())

    def free(self) -> None:
        """Free the context now; every Tensor of it becomes invalid.  Idempotent."""
        if self.alive:
            self.alive = False
            _lib.ffi().release(self.ptr)  # runs ggml_free exactly once
            self.buffers.clear()
            self.deps.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    # room -----------------------------------------------------------------
    def room(self) -> int:
        """How many more tensors fit (ggml segfaults rather than say so)."""
        C = _lib.C()
        self.check()
        return int((C.ggml_get_mem_size(self.ptr) - C.ggml_used_mem(self.ptr)) // C.ggml_tensor_overhead())

    def ensure_room(self, n: int, op: str | None = None) -> None:
        if self.room() < n:
            raise GGMLMemoryError(
                f"the context is full ({self.room()} tensor slots left, {n} needed); "
                "create it with a larger n_tensors", op=op
            )

    # tensors --------------------------------------------------------------
    def new_tensor(self, ggml_type, shape, name: str | None = None) -> "Tensor":
        """A new tensor of numpy-order ``shape`` (no data until allocated)."""
        C, ffi = _lib.C(), _lib.ffi()
        t = type_id(ggml_type)
        ne = ne_from_shape(shape)
        blck = TYPE_TRAITS[t].block_size
        if ne[0] % blck:
            raise GGMLShapeError(
                f"last dim {ne[0]} is not a multiple of the {type_name(t)} block size {blck}", op="ggml_new_tensor"
            )
        self.ensure_room(1, "ggml_new_tensor")
        ne_c = ffi.new("int64_t[4]", ne)
        ptr = C.ggml_new_tensor(self.ptr, t, len(tuple(shape)), ne_c)
        out = Tensor(self, ptr, len(tuple(shape)))
        if name is not None:
            out.name = name
        return out

    def input(self, name: str, ggml_type, shape) -> "Tensor":
        """A named graph input (``ggml_set_input``), filled by ``Graph.compute(inputs)``."""
        t = self.new_tensor(ggml_type, shape, name)
        _lib.C().ggml_set_input(t.ptr)
        return t

    def tensors(self) -> list["Tensor"]:
        C, ffi = _lib.C(), _lib.ffi()
        self.check()
        out, p = [], C.ggml_get_first_tensor(self.ptr)
        while p != ffi.NULL:
            out.append(Tensor(self, p))
            p = C.ggml_get_next_tensor(self.ptr, p)
        return out

    def get(self, name: str) -> "Tensor":
        C, ffi = _lib.C(), _lib.ffi()
        self.check()
        p = C.ggml_get_tensor(self.ptr, name.encode())
        if p == ffi.NULL:
            raise GGMLError(f"no tensor named {name!r} in this context")
        return Tensor(self, p)

    def allocate(self, backend, usage: str = "any"):
        """Allocate every tensor of this context in one new buffer of ``backend``."""
        from .backend import Buffer

        C, ffi = _lib.C(), _lib.ffi()
        self.check()
        if not self.tensors():
            raise GGMLError("nothing to allocate: the context has no tensors")
        ptr = C.ggml_backend_alloc_ctx_tensors_from_buft(self.ptr, backend.buffer_type)
        if ptr == ffi.NULL:
            need = C.ggml_backend_alloc_ctx_tensors_from_buft_size(self.ptr, backend.buffer_type)
            raise GGMLMemoryError(f"could not allocate {need} bytes on {backend.name} (or all tensors already have data)")
        buf = Buffer(ptr, backend, usage)
        self.buffers.append(buf)
        return buf


# --------------------------------------------------------------------------- tensor


class Tensor:
    """A borrowed ``ggml_tensor *`` with numpy-order accessors and checked data copies."""

    __slots__ = ("ctx", "_ptr", "ndim")

    def __init__(self, ctx: Context, ptr, ndim: int | None = None):
        if ptr == _lib.ffi().NULL:  # ggml returns NULL only on internal failure
            raise GGMLError("ggml returned a NULL tensor")
        self.ctx = ctx
        self._ptr = ptr
        key = int(_lib.ffi().cast("uintptr_t", ptr))
        if ndim is None:
            ndim = ctx.ndims.get(key) or max(1, int(_lib.C().ggml_n_dims(ptr)))
        else:
            ctx.ndims[key] = int(ndim)
        self.ndim = int(ndim)

    @property
    def ptr(self):
        self.ctx.check()
        return self._ptr

    # metadata -------------------------------------------------------------
    @property
    def ne(self) -> tuple[int, int, int, int]:
        return tuple(int(x) for x in self.ptr.ne)

    @property
    def nb(self) -> tuple[int, int, int, int]:
        return tuple(int(x) for x in self.ptr.nb)

    @property
    def shape(self) -> tuple[int, ...]:
        return shape_from_ne(self.ne, self.ndim)

    @property
    def type(self) -> int:
        return int(self.ptr.type)

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    @property
    def name(self) -> str:
        return _lib.ffi().string(self.ptr.name).decode("utf-8", "replace")

    @name.setter
    def name(self, value: str) -> None:
        raw = value.encode()
        if len(raw) > MAX_NAME or b"\0" in raw:
            raise GGMLError(f"tensor name {value!r} is longer than {MAX_NAME} bytes or has a NUL")
        _lib.C().ggml_set_name(self.ptr, raw)

    @property
    def nbytes(self) -> int:
        return int(_lib.C().ggml_nbytes(self.ptr))

    @property
    def n_elements(self) -> int:
        return int(_lib.C().ggml_nelements(self.ptr))

    @property
    def contiguous(self) -> bool:
        return bool(_lib.C().ggml_is_contiguous(self.ptr))

    @property
    def transposed(self) -> bool:
        return bool(_lib.C().ggml_is_transposed(self.ptr))

    @property
    def allocated(self) -> bool:
        p = self.ptr
        return p.data != _lib.ffi().NULL and p.buffer != _lib.ffi().NULL

    def same(self, other: "Tensor") -> bool:
        return self._ptr == other._ptr

    def __repr__(self) -> str:
        if not self.ctx.alive:
            return "<Tensor (freed)>"
        return f"<Tensor {self.name!r} {self.type_name} {self.shape}>"

    # data -----------------------------------------------------------------
    def _check_io(self, what: str) -> None:
        g = self.ctx.graph
        if g is not None and not g._allocated:
            raise GGMLFreedError(
                f"cannot {what} {self.name!r}: its graph is not allocated in its scheduler "
                "(another graph was allocated or the scheduler was reset)"
            )
        if not self.allocated:
            raise GGMLError(f"cannot {what} {self.name!r}: the tensor has no data (allocate its context first)")
        if not self.contiguous:
            raise GGMLLayoutError(f"cannot {what} {self.name!r}: not contiguous (use ops.cont)")

    def numpy_layout(self) -> tuple[np.dtype, tuple[int, ...]]:
        """The dtype and shape :meth:`get` returns: the element dtype and shape for plain
        types (BF16 as raw uint16); uint8 ``(*shape[:-1], row_bytes)`` for block types."""
        tr = TYPE_TRAITS[self.type]
        shape = self.shape
        if tr.dtype is not None:
            return tr.dtype.newbyteorder("="), shape
        return np.dtype(np.uint8), shape[:-1] + (shape[-1] // tr.block_size * tr.type_size,)

    def set(self, array) -> None:
        """Copy ``array`` into the tensor (any backend).  The shape must match exactly;
        plain types accept any array castable within its kind (float64 -> F16 is fine,
        float -> I32 is not); block types take uint8 of :meth:`numpy_layout`'s shape or flat."""
        self._check_io("set")
        dtype, shape = self.numpy_layout()
        a = np.asarray(array)
        if TYPE_TRAITS[self.type].dtype is None:
            if a.dtype != np.uint8 or (a.shape != shape and a.shape != (self.nbytes,)):
                raise GGMLShapeError(
                    f"{self.type_name} tensor {self.name!r} takes uint8 blocks of shape {shape}, got {a.dtype} {a.shape}"
                )
        else:
            if a.shape != shape:
                raise GGMLShapeError(f"tensor {self.name!r} has shape {shape}, got an array of shape {a.shape}")
            if a.dtype != dtype:
                if not np.can_cast(a.dtype, dtype, casting="same_kind"):
                    raise GGMLTypeError(f"cannot store {a.dtype} in {self.type_name} tensor {self.name!r}")
                if dtype.kind in "iu" and a.size and not np.can_cast(a.dtype, dtype, casting="safe"):
                    info = np.iinfo(dtype)  # narrowing ints: refuse values that would wrap
                    if a.min() < info.min or a.max() > info.max:
                        raise GGMLShapeError(f"values of {self.name!r} do not fit in {self.type_name}")
                a = a.astype(dtype)
        a = np.ascontiguousarray(a)
        if a.nbytes != self.nbytes:  # belt and braces: never write past the tensor
            raise GGMLShapeError(f"{a.nbytes} bytes for a tensor of {self.nbytes}")
        _lib.C().ggml_backend_tensor_set(self.ptr, _lib.ffi().from_buffer(a), 0, a.nbytes)

    def get(self) -> np.ndarray:
        """A new numpy array with the tensor's data (see :meth:`numpy_layout`)."""
        self._check_io("read")
        dtype, shape = self.numpy_layout()
        out = np.empty(shape, dtype=dtype)
        if out.nbytes != self.nbytes:
            raise GGMLShapeError(f"layout mismatch: {out.nbytes} bytes vs {self.nbytes}")
        _lib.C().ggml_backend_tensor_get(self.ptr, _lib.ffi().from_buffer(out), 0, out.nbytes)
        return out
