"""Where a decoded token's time goes in our decode loop: ggml compute vs everything Python
does around it (building the mask and positions, copying inputs in, reading logits out,
graph lookup, the argmax).

    python -m bench.profile_decode [--size full|small|7b] [--device cpu|cuda] [--threads N]
                                   [--prompt 64] [--gen 32] [--bandwidth GBPS] [--models DIR] [--no-doc]

The loop is ``LlamaModel.eval_tokens([tok])`` then ``np.argmax`` on the logits, as a greedy
``generate`` does.  ``compute`` is the time inside ``ggml_backend_sched_graph_compute`` (the
scheduler's ``compute`` is wrapped with ``perf_counter`` on this instance only); ``overhead``
is the rest of the step.  The issue's bound: overhead < 5% of a token's time at the 1.1B
shape (``--size full``: TinyLlama-1.1B, F16) on CPU.  Also printed: the weight bytes read per
token over the step time (GB/s), as a share of ``--bandwidth`` when given (the issue's
GPU bound: >= 70% at 7B F16).  Model from ``bench.make_models``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from . import make_models, report  # noqa: E402
from .bench_infer import CACHE, prompt_ids  # noqa: E402


def profile(llm_path: str, device: str, threads: int, n_prompt: int, n_gen: int) -> dict:
    from ggml_bind.backend import Backend
    from ggml_bind.llama import LlamaModel

    backend = Backend(device, n_threads=threads)
    llm = LlamaModel(llm_path, backend, n_ctx=max(512, n_prompt + n_gen + 16))
    sched = llm.sched
    inner = sched.compute
    spent = [0.0]

    def timed_compute(graph):
        t0 = time.perf_counter()
        inner(graph)
        spent[0] += time.perf_counter() - t0

    sched.compute = timed_compute  # this instance only
    ids = prompt_ids(llm.params.n_vocab, n_prompt)
    logits = llm.eval_tokens(ids)
    llm.eval_tokens([int(np.argmax(logits))])  # the decode graph is built here, not in the loop
    steps = []
    for _ in range(n_gen):
        spent[0] = 0.0
        t0 = time.perf_counter()
        logits = llm.eval_tokens([int(np.argmax(logits))])
        t1 = time.perf_counter()
        tok = int(np.argmax(logits))  # noqa: F841  (the sampling a greedy loop does)
        t2 = time.perf_counter()
        steps.append((t2 - t0, spent[0], t2 - t1))
    llm.free()
    import gguflite

    with gguflite.open(llm_path) as f:  # every weight is read once per token, but only one
        # row of token_embd (get_rows)
        weight_bytes = sum(t.nbytes for n, t in f.tensors.items() if n != "token_embd.weight")
    total = statistics.median(s[0] for s in steps)
    compute = statistics.median(s[1] for s in steps)
    argmax = statistics.median(s[2] for s in steps)
    over = [(s[0] - s[1]) / s[0] for s in steps]
    return {"total_ms": total * 1e3, "compute_ms": compute * 1e3, "argmax_ms": argmax * 1e3,
            "overhead_ms": statistics.median(s[0] - s[1] for s in steps) * 1e3,
            "overhead_frac": statistics.median(over), "overhead_frac_max": max(over), "n": len(steps),
            "weight_bytes": weight_bytes, "gbps": weight_bytes / total / 1e9}


def section(r: dict, args) -> str:
    _, llm = make_models.SIZES[args.size]
    cmd = (f"python -m bench.profile_decode --size {args.size} --device {args.device} --threads {args.threads} "
           f"--prompt {args.prompt} --gen {args.gen}")
    verdict = "met" if r["overhead_frac"] < 0.05 else "NOT met"
    return (f"## Decode profile ({args.device.upper()})\n\n"
            f"Measured {report.stamp()} ({report.load_note()}) with size `{args.size}` (LLaMA n_embd {llm.n_embd}, {llm.n_layer} layers, "
            f"{llm.n_head}/{llm.n_head_kv} heads, n_ff {llm.n_ff}, vocab {llm.n_vocab}, F16, random weights), "
            f"{args.threads} threads, after a {args.prompt}-token prompt; medians over {r['n']} decoded tokens. "
            f"Machine: {report.machine(args.device)}. Command: `{cmd}`.\n\n"
            "| per token | ms | share |\n|---|---:|---:|\n"
            f"| whole step (`eval_tokens` + argmax) | {r['total_ms']:.2f} | 100% |\n"
            f"| ggml compute (`ggml_backend_sched_graph_compute`) | {r['compute_ms']:.2f} | "
            f"{100 * r['compute_ms'] / r['total_ms']:.1f}% |\n"
            f"| Python + binding overhead (mask, inputs, logits copy, argmax) | {r['overhead_ms']:.2f} | "
            f"{100 * r['overhead_frac']:.2f}% (max {100 * r['overhead_frac_max']:.2f}%) |\n"
            f"| of which argmax over the logits | {r['argmax_ms']:.3f} | |\n\n"
            f"Weights read per token: {r['weight_bytes'] / 1e9:.2f} GB, i.e. {r['gbps']:.2f} GB/s effective"
            + (f" = {100 * r['gbps'] / args.bandwidth:.0f}% of the {args.bandwidth:g} GB/s given with --bandwidth"
               if args.bandwidth else "") + ".\n\n"
            f"Target: overhead < 5% of a token's time at the 1.1B shape on CPU: **{verdict}** at this size. "
            "A busy machine stretches the compute time, not the overhead: compare the overhead in "
            "ms with the step time of an idle machine before trusting the share.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_decode", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=list(make_models.SIZES), default=None,
                    help="model size (default: $GGUFLITE_BENCH_SIZE, else full on cpu, 7b on cuda)")
    ap.add_argument("--device", default=report.default_device())
    ap.add_argument("--threads", type=int, default=report.available_cores())
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--models", default=os.path.join(CACHE, "models"))
    ap.add_argument("--bandwidth", type=float, default=None,
                    help="the device's memory bandwidth in GB/s, to print decode as a share of it")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    args.size = args.size or report.default_size(args.device)
    m = make_models.make(args.models, args.size)
    r = profile(m.llm, args.device, args.threads, args.prompt, args.gen)
    text = section(r, args)
    print(text)
    if not args.no_doc:
        report.update_section(f"decode-profile-{args.device}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
