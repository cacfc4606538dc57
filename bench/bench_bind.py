"""Benchmark: ggml_bind's mul_mat against peers measured in the same run.

    python bench/bench_bind.py [--m 4096 --k 4096 --n 512] [--threads N] [--repeat 5]
                               [--types f32,f16,q8_0,q4_0] [--device cpu]

The op is ``y = x @ W.T`` with W (m, k) and x (n, k): 2*m*k*n flops (17.2 GFLOP at the
default 4096x4096 by 4096x512).  Rows printed, all in this process with the same threads:

- ``ggml_bind``   a Graph built once, recomputed (the weights stay in a WEIGHTS buffer; x
                  is copied in each call, as a real graph input would be);
- ``raw cffi``    the same ggml graph driven by bare cffi calls, without ggml_bind's checks
                  (what the checks and wrappers cost: should be ~1.0x);
- ``torch``       torch.matmul on the CPU (F32; F16 weights upcast, as torch's CPU path
                  would be slow otherwise) with torch.set_num_threads(threads);
- ``numpy``       numpy's BLAS (F32 only).

The issue's target peer, the same graph built in C by llama.cpp's clip, needs a clip
binary that llama-cpp-python does not ship; its ViT-L/14-336 benchmark belongs with the
CLIP graph (ggml_bind/clip.py).  Printed: median ms, GFLOPS, and ratio peer/ours (>= 1
means ggml_bind is at least as fast).  The ``bind`` section of docs/BENCHMARKS.md gets the
table (ours/peer in ms, target <= 1/0.95 against raw cffi) unless ``--no-doc``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ggml_bind import Backend, Context, Graph, Scheduler, lib, ops, quant  # noqa: E402
from ggml_bind.backend import default_threads  # noqa: E402
from gguflite.types import GGMLType  # noqa: E402


SETTLE_S = 0.3  # OpenBLAS and OpenMP worker threads spin ~0.1-0.2 s after a call returns


def interleaved(steps: dict, repeat: int) -> dict[str, float]:
    """Median seconds per step, timed round-robin so that load changes hit all alike.

    Each step starts after a pause of ``SETTLE_S``: numpy's OpenBLAS threads keep spinning
    after a matmul returns, and on a 2-core machine they took ~14% of the cores from
    whichever step ran next."""
    for fn in steps.values():
        fn()  # warm-up
    times = {name: [] for name in steps}
    for _ in range(repeat):
        for name, fn in steps.items():
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def weight_blocks(w: np.ndarray, type_name: str) -> tuple[int, np.ndarray]:
    t = int(GGMLType[type_name.upper()])
    if t == GGMLType.F32:
        return t, w
    if t == GGMLType.F16:
        return t, w.astype(np.float16)
    return t, quant.quantize_chunk(t, w)


def setup_ours(backend, sched, w_type, w_data, shape_w, x):
    wctx = Context(n_tensors=1)
    W = wctx.new_tensor(w_type, shape_w, "W")
    wctx.allocate(backend, "weights")
    W.set(w_data)

    def build(ctx):
        return {"y": ops.mul_mat(ctx, W, ctx.input("x", "f32", x.shape))}

    g = Graph(sched, build, max_nodes=8)
    out = {}

    def step():
        out["y"] = g.compute({"x": x})["y"]

    def done():
        g.free()
        wctx.free()

    return step, out, done


def setup_raw(backend, w_type, w_data, shape_w, x):
    """The same graph with bare cffi calls: gallocr on the CPU backend, no checks."""
    C, ffi = lib.C(), lib.ffi()
    m, k = shape_w
    n = x.shape[0]
    wctx = C.ggml_init({"mem_size": C.ggml_tensor_overhead() * 4, "mem_buffer": ffi.NULL, "no_alloc": True})
    W = C.ggml_new_tensor_2d(wctx, w_type, k, m)
    wbuf = C.ggml_backend_alloc_ctx_tensors(wctx, backend.ptr)
    wd = np.ascontiguousarray(w_data)
    C.ggml_backend_tensor_set(W, ffi.from_buffer(wd), 0, wd.nbytes)
    gsize = 8
    gctx = C.ggml_init({"mem_size": C.ggml_tensor_overhead() * 8 + C.ggml_graph_overhead_custom(gsize, False),
                        "mem_buffer": ffi.NULL, "no_alloc": True})
    X = C.ggml_new_tensor_2d(gctx, C.GGML_TYPE_F32, k, n)
    C.ggml_set_input(X)
    Y = C.ggml_mul_mat(gctx, W, X)
    C.ggml_set_output(Y)
    gf = C.ggml_new_graph_custom(gctx, gsize, False)
    C.ggml_build_forward_expand(gf, Y)
    galloc = C.ggml_gallocr_new(C.ggml_backend_get_default_buffer_type(backend.ptr))
    C.ggml_gallocr_alloc_graph(galloc, gf)
    y = np.empty((n, m), np.float32)

    def step():
        C.ggml_backend_tensor_set(X, ffi.from_buffer(x), 0, x.nbytes)
        C.ggml_backend_graph_compute(backend.ptr, gf)
        C.ggml_backend_tensor_get(Y, ffi.from_buffer(y), 0, y.nbytes)

    def done():
        C.ggml_gallocr_free(galloc)
        C.ggml_free(gctx)
        C.ggml_backend_buffer_free(wbuf)
        C.ggml_free(wctx)

    return step, {"y": y}, done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--types", default="f32,f16,q8_0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    from bench import report

    cmd = " ".join(["python -m bench.bench_bind", *(argv if argv is not None else sys.argv[1:])])
    rows_doc = []

    rng = np.random.default_rng(0)
    w = rng.standard_normal((args.m, args.k), dtype=np.float32)
    x = rng.standard_normal((args.n, args.k), dtype=np.float32)
    flops = 2.0 * args.m * args.k * args.n
    backend = Backend(args.device, n_threads=args.threads)
    cpu = backend if backend.is_cpu else Backend("cpu", n_threads=args.threads)
    sched = Scheduler([backend], graph_size=64)
    print(f"mul_mat W({args.m}x{args.k}) x({args.n}x{args.k}), {args.threads} threads, device {backend.name}, "
          f"ggml {lib.load().version}, cpu features: "
          + ",".join(k for k, v in lib.cpu_features().items() if v))
    print(f"{'type':6} {'impl':10} {'ms':>9} {'GFLOPS':>8} {'peer/ours':>9}")

    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # pragma: no cover
        torch = None

    for tname in args.types.split(","):
        w_type, w_data = weight_blocks(w, tname)
        steps, outs, cleanup = {}, {}, []
        steps["ggml_bind"], outs["ggml_bind"], done = setup_ours(backend, sched, w_type, w_data, w.shape, x)
        cleanup.append(done)
        if backend.is_cpu:
            steps["raw cffi"], outs["raw cffi"], done = setup_raw(cpu, w_type, w_data, w.shape, x)
            cleanup.append(done)
        if torch is not None and tname in ("f32", "f16"):
            wt = torch.from_numpy(w if tname == "f32" else w_data.astype(np.float32))
            xt = torch.from_numpy(x)
            steps["torch"] = lambda wt=wt, xt=xt: (xt @ wt.T).numpy()
        if tname == "f32":
            steps["numpy"] = lambda: x @ w.T
        times = interleaved(steps, args.repeat)
        if "raw cffi" in outs and not np.allclose(outs["ggml_bind"]["y"], outs["raw cffi"]["y"], atol=1e-3, rtol=1e-3):
            print(f"  WARNING: ggml_bind and raw cffi results differ for {tname}")
        for done in cleanup:
            done()
        t_ours = times["ggml_bind"]
        for name, t in times.items():
            print(f"{tname:6} {name:10} {t * 1e3:9.1f} {flops / t / 1e9:8.1f} {t / t_ours:9.2f}", flush=True)
            if name == "ggml_bind":
                continue
            rows_doc.append(report.Row(
                f"mul_mat {args.m}x{args.k} by {args.n}x{args.k}, {tname} weights, vs {name}",
                t_ours * 1e3, t * 1e3, "ms", "lower", args.repeat, args.threads, cmd,
                target=round(1 / 0.95, 3) if name == "raw cffi" else None,
                machine=report.machine(args.device),
            ))
    body = (
        f"## ggml_bind mul_mat\n\nMeasured {report.stamp()} ({report.load_note()}) with `{cmd.strip()}`: "
        f"y = x @ W.T, {flops / 1e9:.1f} GFLOP per call, timed round-robin (medians of {args.repeat}, "
        f"{SETTLE_S} s pause before each call so that the BLAS peers' spinning threads are parked), "
        "same threads. "
        "`raw cffi` drives the same ggml graph with bare cffi calls (the cost of ggml_bind's checks "
        "and wrappers); torch (F32 weights) and numpy are independent peers. llama.cpp's clip "
        "(the issue's peer) is not shipped by llama-cpp-python; the CLIP benchmark belongs with "
        "ggml_bind/clip.py (see the inference section: ViT-L/14-336 against libmtmd).\n\n"
        + report.table(rows_doc)
    )
    print(body)
    if not args.no_doc:
        report.update_section("bind", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
