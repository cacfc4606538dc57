"""Compute graphs: built once, allocated through a scheduler, recomputed with new inputs.

This is llama.cpp's recipe (graphs are "single-use in terms of allocation, multi-use in
terms of computation", ggml-backend.h): build the graph once in its own metadata context,
reserve the scheduler's compute buffers for the worst case, then for each call only copy
the new inputs in and compute.  Nothing is rebuilt while shapes stay the same.

    import numpy as np
    from ggml_bind import Backend, Scheduler, Graph, ops
    from ggml_bind.weights import load_weights

    sched = Scheduler([Backend("cpu", n_threads=2)])
    W = load_weights("model.gguf", sched.backends[0])      # name -> Tensor in a WEIGHTS buffer

    def build(ctx):                                        # runs once
        x = ctx.input("x", "f32", (n_tokens, 64))           # numpy-order shapes
        h = ops.add(ctx, ops.mul_mat(ctx, W["fc.weight"], x), W["fc.bias"])
        return {"y": ops.gelu(ctx, h)}

    g = Graph(sched, build, max_nodes=64)                  # builds, checks, reserves
    y = g.compute({"x": np.ones((n_tokens, 64), np.float32)})["y"]
    y = g.compute({"x": other})["y"]                       # same graph, new input

Checks done here (ggml would abort instead): the graph fits ``max_nodes``; some backend of
the scheduler supports every node (``ggml_backend_supports_op``); every input is given with
its exact shape; index inputs of get_rows/set_rows hold values inside their table.

When several graphs share one scheduler (e.g. one per sequence length), the one computed
last holds the compute buffers; computing another re-allocates (cheap, no rebuild).  Call
``sched.reserve(worst_case_graph)`` once first so re-allocation never grows the buffers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import lib as _lib
from .backend import Scheduler
from .errors import GGMLError, GGMLShapeError
from .tensor import Context, Tensor


class Graph:
    """One ggml graph over weights and named inputs, bound to a :class:`Scheduler`.

    Args:
        sched: the scheduler that allocates and runs it.
        build: ``build(ctx) -> Tensor | dict[str, Tensor] | list[Tensor]``; creates inputs
            with ``ctx.input(name, type, shape)`` and ops with ``ops.*(ctx, ...)``; may call
            ``ctx.graph.expand(t)`` for side-effect nodes (KV cache writes).
        max_nodes: upper bound on graph nodes (``build`` may create twice as many tensors).
        reserve: reserve the scheduler for this graph (pass False for graphs smaller than
            one already reserved).
    """

    def __init__(self, sched: Scheduler, build: Callable, *, max_nodes: int = 2048, reserve: bool = True):
        C, ffi = _lib.C(), _lib.ffi()
        if not isinstance(sched, Scheduler):
            raise GGMLError(f"sched must be a Scheduler, got {type(sched).__name__}")
        if max_nodes > sched.graph_size:
            raise GGMLError(f"max_nodes {max_nodes} exceeds the scheduler's graph_size {sched.graph_size}")
        self.sched = sched
        self.max_nodes = int(max_nodes)
        self._allocated = False
        self._ever_allocated = False
        # inputs and views count as tensors too: room for twice as many tensors as nodes
        self.ctx = Context(n_tensors=2 * self.max_nodes, graph_size=self.max_nodes)
        self.ctx.graph = self
        self.ptr = C.ggml_new_graph_custom(self.ctx.ptr, self.max_nodes, False)
        self._seen: set[int] = set()
        self.n_nodes = self.n_leafs = 0
        outs = build(self.ctx)
        self.outputs = _named_outputs(outs)
        for t in self.outputs.values():
            C.ggml_set_output(t.ptr)
            self.expand(t)
        inputs = [t for t in self.ctx.tensors() if t.ptr.flags & C.GGML_TENSOR_FLAG_INPUT]
        self.inputs = {t.name: t for t in inputs}
        if len(self.inputs) != len(inputs) or "" in self.inputs:
            raise GGMLError(f"graph inputs need distinct non-empty names, got {[t.name for t in inputs]}")
        unused = [n for n, t in self.inputs.items() if int(ffi.cast("uintptr_t", t.ptr)) not in self._seen]
        if unused:
            raise GGMLError(f"inputs {unused} are not used by any output (they would get no memory)")
        self._index_bounds = {
            name: self.ctx.index_bounds[int(ffi.cast("uintptr_t", t.ptr))]
            for name, t in self.inputs.items()
            if int(ffi.cast("uintptr_t", t.ptr)) in self.ctx.index_bounds
        }
        self._check_supported()
        # Shapes never change: precompute each input's and output's numpy layout so that a
        # call only compares and copies (the per-token path of a decoder).
        self._layouts = {name: t.numpy_layout() for name, t in {**self.inputs, **self.outputs}.items()}
        if reserve:
            sched.reserve(self)

    # ---------------------------------------------------------------- checks
    def expand(self, t: Tensor) -> None:
        """Add ``t`` and everything it depends on to the graph, in order (``ggml_build_forward_expand``).

        Outputs are expanded after ``build`` returns; call ``ctx.graph.expand(t)`` inside
        ``build`` for nodes that must run but are not outputs, at the point they must run
        (e.g. a ``set_rows`` write into a KV cache before the attention that reads it).
        """
        C, ffi = _lib.C(), _lib.ffi()
        t.ctx.check()
        # Count the nodes and leafs this adds: build_forward_expand aborts past max_nodes.
        seen, nodes, leafs = set(), 0, 0
        stack = [t.ptr]
        while stack:
            p = stack.pop()
            key = int(ffi.cast("uintptr_t", p))
            if key in seen or key in self._seen:
                continue
            seen.add(key)
            if p.op == C.GGML_OP_NONE:
                leafs += 1
                if p.data == ffi.NULL and not p.flags & C.GGML_TENSOR_FLAG_INPUT:
                    name = ffi.string(p.name).decode("utf-8", "replace")
                    raise GGMLError(
                        f"tensor {name!r} has no data and is not a graph input: allocate its context "
                        "(weights, cache) first, or create it with ctx.input"
                    )
            else:
                nodes += 1
            for s in p.src:
                if s != ffi.NULL:
                    stack.append(s)
        nodes += self.n_nodes
        leafs += self.n_leafs
        if nodes > self.max_nodes or leafs > self.max_nodes:
            raise GGMLError(f"graph would have {nodes} nodes and {leafs} leafs; max_nodes={self.max_nodes} is too small")
        C.ggml_build_forward_expand(self.ptr, t.ptr)
        self._seen |= seen
        self.n_nodes, self.n_leafs = nodes, leafs

    def _check_supported(self) -> None:
        C, ffi = _lib.C(), _lib.ffi()
        for i in range(C.ggml_graph_n_nodes(self.ptr)):
            node = C.ggml_graph_node(self.ptr, i)
            if not any(C.ggml_backend_supports_op(b.ptr, node) for b in self.sched.backends):
                t = Tensor(self.ctx, node)
                srcs = [Tensor(self.ctx, s) for s in node.src if s != ffi.NULL]
                desc = ", ".join(f"{s.type_name} {s.shape}" for s in srcs)
                opname = ffi.string(C.ggml_op_desc(node)).decode()
                raise GGMLError(
                    f"no backend ({', '.join(b.name for b in self.sched.backends)}) supports {opname} "
                    f"on ({desc}) -> {t.type_name} {t.shape}", op=opname, tensor=t.name or None
                )

    def _check_sched(self, sched: Scheduler) -> None:
        self.ctx.check()
        if sched is not self.sched:
            raise GGMLError("this graph belongs to another scheduler")

    # ---------------------------------------------------------------- running
    def alloc(self) -> None:
        """Allocate the graph's tensors in the scheduler (done by :meth:`compute` when needed).

        ggml's allocator leaves a tensor that already has a data pointer where it is, so
        before allocating a graph again (after another graph used, and maybe regrew, the
        compute buffers) the placement of every tensor of its own context is cleared;
        weights and caches live in other contexts, and views of them are re-initialised
        from their sources by the allocator.
        """
        if self._ever_allocated:
            null = _lib.ffi().NULL
            for t in self.ctx.tensors():
                p = t.ptr
                p.data = null
                p.buffer = null
        self.sched.alloc(self)
        self._allocated = self._ever_allocated = True

    def set_inputs(self, inputs: dict) -> None:
        """Copy numpy arrays into the named inputs (all of them, exact shapes)."""
        unknown = set(inputs) - set(self.inputs)
        missing = set(self.inputs) - set(inputs)
        if unknown or missing:
            raise GGMLError(
                f"graph inputs are {sorted(self.inputs)}; unknown: {sorted(unknown)}, missing: {sorted(missing)}"
            )
        for name, (bound, op) in self._index_bounds.items():
            v = np.asarray(inputs[name])
            if v.size and (v.min() < 0 or v.max() >= bound):
                raise GGMLShapeError(
                    f"index input {name!r} has values in [{v.min()}, {v.max()}], must be in [0, {bound})", op=op
                )
        if not self._allocated:
            self.alloc()
        C, ffi = _lib.C(), _lib.ffi()
        for name, t in self.inputs.items():
            a = inputs[name]
            dtype, shape = self._layouts[name]
            if isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == shape and a.flags.c_contiguous:
                C.ggml_backend_tensor_set(t._ptr, ffi.from_buffer(a), 0, a.nbytes)  # checked fast path
            else:
                t.set(a)  # casts, or a precise error

    def compute(self, inputs: dict | None = None, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Set ``inputs``, run the graph, return the named outputs as numpy arrays.

        Thread-safe per scheduler: calls on graphs sharing a scheduler run one at a time."""
        with self.sched.lock:
            return self._compute(inputs, outputs)

    def _compute(self, inputs, outputs):
        self.ctx.check_deps()
        self.set_inputs(inputs or {})
        self.sched.compute(self)
        names = list(self.outputs) if outputs is None else outputs
        C, ffi = _lib.C(), _lib.ffi()
        result = {}
        for n in names:
            t = self.outputs[n]
            if not t.contiguous:
                result[n] = t.get()  # raises the layout error
                continue
            dtype, shape = self._layouts[n]
            out = np.empty(shape, dtype)
            C.ggml_backend_tensor_get(t._ptr, ffi.from_buffer(out), 0, out.nbytes)
            result[n] = out
        return result

    def free(self) -> None:
        """Free the graph's context now (its tensors become invalid)."""
        if self.sched.current is self:
            self.sched.reset()
        self._allocated = False
        self.ctx.free()

    def __getitem__(self, name: str) -> Tensor:
        if name in self.outputs:
            return self.outputs[name]
        if name in self.inputs:
            return self.inputs[name]
        raise KeyError(name)


def _named_outputs(outs) -> dict[str, Tensor]:
    if isinstance(outs, Tensor):
        outs = {outs.name or "out": outs}
    elif isinstance(outs, (list, tuple)):
        outs = {(t.name or f"out{i}"): t for i, t in enumerate(outs)}
    if not isinstance(outs, dict) or not outs or not all(isinstance(t, Tensor) for t in outs.values()):
        raise GGMLError("build() must return a Tensor, a non-empty list of Tensors or a dict name -> Tensor")
    for name, t in outs.items():
        t.ctx.check()
        if t.name == "":
            t.name = name
    return dict(outs)


__all__ = ["Graph"]
