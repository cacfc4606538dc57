"""ggml_bind: a cffi (ABI mode) binding to the ggml library built by llama-cpp-python.

Importing this package loads no C code; the library is loaded on first use
(:func:`ggml_bind.lib.load`).  Every misuse raises :class:`GGMLError` before reaching C.

    import numpy as np
    from ggml_bind import Backend, Scheduler, Graph, ops, load_weights

    sched = Scheduler([Backend("cpu", n_threads=4)])        # or Backend("cuda") first
    W = load_weights("model.gguf", sched.backends[0])      # one WEIGHTS buffer
    def build(ctx):                                        # runs once
        x = ctx.input("x", "f32", (8, 64))                 # numpy-order shapes
        return {"y": ops.gelu(ctx, ops.add(ctx, ops.mul_mat(ctx, W["fc.weight"], x), W["fc.bias"]))}
    g = Graph(sched, build, max_nodes=16)                  # checked, reserved
    y = g.compute({"x": np.ones((8, 64), np.float32)})["y"]   # recompute with new x any time

Modules, in reading order: ``errors`` (exceptions), ``lib`` (loading, checks, logging),
``quant`` (ggml's quantizer as an oracle), ``backend`` (devices, buffers, scheduler),
``tensor`` (numpy <-> ggml, the one ne <-> shape reversal), ``ops`` (validated ops),
``graph`` (build once, reserve, recompute), ``weights`` (GGUF weights into a backend buffer).
On top of them, ``llava.LlavaModel`` (also ``ggml_bind.LlavaModel``) runs an LLM + mmproj pair.
"""
from .errors import *  # noqa: F401,F403  (the exception hierarchy is part of the API)

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy re-exports: `from ggml_bind import Backend` imports the module (no C loaded yet).
    import importlib

    where = {
        "Backend": "backend", "Buffer": "backend", "Scheduler": "backend", "devices": "backend",
        "has_cuda": "backend", "Context": "tensor", "Tensor": "tensor", "Graph": "graph",
        "load_weights": "weights", "Weights": "weights", "LlavaModel": "llava",
    }
    if name in where:
        return getattr(importlib.import_module(f".{where[name]}", __name__), name)
    if name in ("ops", "quant", "lib", "backend", "tensor", "graph", "weights"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ggml_bind' has no attribute {name!r}")
