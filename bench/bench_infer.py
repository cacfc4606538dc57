"""Inference, ours (ggml_bind) vs llama.cpp (libllama + libmtmd through llama-cpp-python), on
the same GGUF files, the same device and the same number of threads.

    python -m bench.bench_infer [--size small|full|7b] [--device cpu|cuda] [--threads N] [--runs 2]
                                [--rounds 2] [--prompt 128] [--gen 32] [--models DIR] [--no-doc]

Figures: medians of ``--rounds`` x ``--runs`` runs; each round starts one child process per
side (the side going first alternates), which loads the models, warms up once, then times
``--runs`` runs:

- image encode ms: one 336x336 image through the CLIP tower + projector, preprocessing
  excluded on both sides (ours: ``ClipEncoder.encode_tile`` on a normalised tile; peer:
  ``mtmd_encode_chunk`` on the image chunk ``mtmd_tokenize`` made);
- prompt tokens/s: ``--prompt`` token ids (BOS + random ids) from an empty cache, last-token
  logits (ours: ``LlamaModel.eval_tokens``; peer: ``llama_decode`` of one batch);
- eval tokens/s: ``--gen`` greedy tokens after that prompt, one ``decode`` each (ours:
  argmax in numpy; peer: llama.cpp's greedy sampler).

Ours runs ``ggml_bind.llama.LlamaModel`` and ``ggml_bind.clip.ClipEncoder`` (what
``ggml_bind.llava.LlavaModel`` drives).  Each side runs in its own child processes
(``--worker ours|peer``), so neither's memory, threads or caches affect the other.  The
models come from ``bench.make_models`` (random weights at real shapes; written once into
``--models``, default ``~/.cache/gguflite-bench/models``).  ``--device cuda`` needs a GPU, the
CUDA build of llama-cpp-python (``make cuda``), and offloads every layer on both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # `python bench/bench_infer.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from . import make_models, report  # noqa: E402

CACHE = os.environ.get("GGUFLITE_BENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gguflite-bench"))
RESULT = "BENCH_RESULT "


def prompt_ids(n_vocab: int, n: int, seed: int = 0) -> np.ndarray:
    """BOS then random normal-piece ids (past <unk>, <s>, </s> and the 256 byte pieces)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([[1], rng.integers(259, n_vocab, n - 1)]).astype(np.int32)


# --------------------------------------------------------------------------- ours


class Ours:
    """ggml_bind's decoder and CLIP encoder on one backend."""

    name = "ggml_bind"

    def __init__(self, llm: str, mmproj: str, device: str, n_threads: int, n_ctx: int):
        from ggml_bind.backend import Backend
        from ggml_bind.clip import ClipEncoder
        from ggml_bind.llama import LlamaModel

        self.backend = Backend(device, n_threads=n_threads)
        self.llm = LlamaModel(llm, self.backend, n_ctx=n_ctx)
        self.clip = ClipEncoder(mmproj, self.backend)
        self.n_vocab = self.llm.params.n_vocab
        S = self.clip.params.image_size
        self.tile = np.random.default_rng(0).standard_normal((3, S, S)).astype(np.float32)

    def encode(self) -> float:
        t0 = time.perf_counter()
        self.clip.encode_tile(self.tile)
        return time.perf_counter() - t0

    def prompt(self, ids: np.ndarray) -> float:
        self.llm.reset()
        t0 = time.perf_counter()
        self._logits = self.llm.eval_tokens(ids)
        return time.perf_counter() - t0

    def generate(self, n: int) -> float:
        t0 = time.perf_counter()
        logits = self._logits
        for _ in range(n):
            logits = self.llm.eval_tokens([int(np.argmax(logits))])
        return time.perf_counter() - t0


# --------------------------------------------------------------------------- peer


class Peer:
    """llama.cpp's libllama (low-level API) and libmtmd, as llama-cpp-python exposes them."""

    name = "llama.cpp"

    def __init__(self, llm: str, mmproj: str, device: str, n_threads: int, n_ctx: int):
        import ctypes

        import llama_cpp
        from llama_cpp import mtmd_cpp

        self.L, self.M, self.ct = llama_cpp, mtmd_cpp, ctypes
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0 if device == "cpu" else 999
        self.model = llama_cpp.llama_model_load_from_file(llm.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {llm}")
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, 512, 512
        cp.n_threads = cp.n_threads_batch = n_threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.sampler = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(self.sampler, llama_cpp.llama_sampler_init_greedy())

        mtp = mtmd_cpp.mtmd_context_params_default()
        mtp.use_gpu = device != "cpu"
        mtp.n_threads = n_threads
        mtp.print_timings = False
        mtp.warmup = True
        self.mtmd = mtmd_cpp.mtmd_init_from_file(mmproj.encode(), self.model, mtp)
        if not self.mtmd:
            raise RuntimeError(f"libmtmd could not load {mmproj}")
        size = 336
        rgb = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        self._rgb = (ctypes.c_uint8 * rgb.size).from_buffer_copy(rgb.tobytes())
        bitmap = mtmd_cpp.mtmd_bitmap_init(size, size, self._rgb)
        self.chunks = mtmd_cpp.mtmd_input_chunks_init()
        marker = mtmd_cpp.mtmd_default_marker()
        text = mtmd_cpp.mtmd_input_text(marker, len(marker), False, True)
        bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
        rc = mtmd_cpp.mtmd_tokenize(self.mtmd, self.chunks, ctypes.byref(text), bitmaps, 1)
        mtmd_cpp.mtmd_bitmap_free(bitmap)
        if rc != 0:
            raise RuntimeError(f"mtmd_tokenize failed ({rc})")
        self.image_chunk = None
        for i in range(mtmd_cpp.mtmd_input_chunks_size(self.chunks)):
            c = mtmd_cpp.mtmd_input_chunks_get(self.chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(c) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                self.image_chunk = c
        if self.image_chunk is None:
            raise RuntimeError("mtmd_tokenize produced no image chunk")
        self.image_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(self.image_chunk)

    def encode(self) -> float:
        t0 = time.perf_counter()
        rc = self.M.mtmd_encode_chunk(self.mtmd, self.image_chunk)
        dt = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"mtmd_encode_chunk failed ({rc})")
        return dt

    def _decode(self, ids: np.ndarray) -> None:
        arr = (self.L.llama_token * len(ids))(*[int(i) for i in ids])
        rc = self.L.llama_decode(self.ctx, self.L.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc})")

    def prompt(self, ids: np.ndarray) -> float:
        self.L.llama_memory_clear(self.mem, True)
        t0 = time.perf_counter()
        self._decode(ids)
        return time.perf_counter() - t0

    def generate(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            tok = self.L.llama_sampler_sample(self.sampler, self.ctx, -1)
            self._decode(np.array([tok]))
        return time.perf_counter() - t0


# --------------------------------------------------------------------------- worker / driver


def worker(side: str, llm: str, mmproj: str, device: str, threads: int, runs: int, n_prompt: int, n_gen: int) -> dict:
    cls = {"ours": Ours, "peer": Peer}[side]
    r = cls(llm, mmproj, device, threads, n_ctx=max(512, n_prompt + n_gen + 16))
    ids = prompt_ids(r.n_vocab, n_prompt)
    out = {"encode_s": [], "prompt_s": [], "eval_s": []}
    for i in range(runs + 1):  # run 0 is the warm-up
        enc = r.encode()
        pr = r.prompt(ids)
        ev = r.generate(n_gen)
        if i:
            out["encode_s"].append(enc)
            out["prompt_s"].append(pr)
            out["eval_s"].append(ev)
    return out


def run_side(side: str, args, m: make_models.Models) -> tuple[dict, report.ChildRun]:
    argv = [sys.executable, "-m", "bench.bench_infer", "--worker", side, "--llm", m.llm, "--mmproj", m.mmproj,
            "--device", args.device, "--threads", str(args.threads), "--runs", str(args.runs),
            "--prompt", str(args.prompt), "--gen", str(args.gen)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = report.run_child(argv, cwd=root).check()
    line = [ln for ln in child.output_tail.splitlines() if ln.startswith(RESULT)][-1]
    return json.loads(line[len(RESULT):]), child


def rows(ours: dict, peer: dict, args, machine: str) -> list[report.Row]:
    cmd = (f"python -m bench.bench_infer --size {args.size} --device {args.device} --threads {args.threads} "
           f"--runs {args.runs} --rounds {args.rounds} --prompt {args.prompt} --gen {args.gen}")
    med = lambda xs: float(np.median(xs))  # noqa: E731
    common = dict(runs=args.runs * args.rounds, threads=args.threads, command=cmd, machine=machine, target=0.95)
    return [
        report.Row("image encode (336 px, 1 image)", med(ours["encode_s"]) * 1e3, med(peer["encode_s"]) * 1e3,
                   "ms", "lower", **dict(common, target=1 / 0.95)),
        report.Row(f"prompt ({args.prompt} tokens)", args.prompt / med(ours["prompt_s"]),
                   args.prompt / med(peer["prompt_s"]), "tok/s", "higher", **common),
        report.Row(f"eval ({args.gen} tokens, greedy)", args.gen / med(ours["eval_s"]),
                   args.gen / med(peer["eval_s"]), "tok/s", "higher", **common),
    ]


def section(rws: list[report.Row], args, m: make_models.Models) -> str:
    clip, llm = make_models.SIZES[args.size]
    return (f"## Inference ({args.device.upper()})\n\n"
            f"Measured {report.stamp()} ({report.load_note()}) with size `{args.size}`: CLIP {clip.width} wide, "
            f"{clip.layers - 1} blocks run, 336 px / 14 px + mlp projector; LLaMA n_embd {llm.n_embd}, "
            f"{llm.n_layer} layers, {llm.n_head}/{llm.n_head_kv} heads, n_ff {llm.n_ff}, vocab {llm.n_vocab}; "
            f"all F16, random weights (`python -m bench.make_models DIR --size {args.size}`). "
            "Peer: llama.cpp through llama-cpp-python 0.3.36 (libllama low-level API + libmtmd). "
            "For the image encode the ratio is ours/peer *milliseconds* (target <= 1/0.95); for the "
            "throughputs it is ours/peer tokens/s (target >= 0.95).\n\n" + report.table(rws))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_infer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=[s for s in make_models.SIZES], default=None,
                    help="model size (default: $GGUFLITE_BENCH_SIZE, else full on cpu, 7b on cuda)")
    ap.add_argument("--device", default=report.default_device(), help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=report.available_cores())
    ap.add_argument("--runs", type=int, default=2, help="timed runs per child process (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="child processes per side, sides alternating")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--models", default=os.path.join(CACHE, "models"))
    ap.add_argument("--no-doc", action="store_true", help="print the table, do not touch docs/BENCHMARKS.md")
    ap.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--llm", help=argparse.SUPPRESS)
    ap.add_argument("--mmproj", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.size = args.size or report.default_size(args.device)
    if args.worker:
        res = worker(args.worker, args.llm, args.mmproj, args.device, args.threads, args.runs, args.prompt, args.gen)
        print(RESULT + json.dumps(res), flush=True)
        return 0
    m = make_models.make(args.models, args.size)
    ours = {"encode_s": [], "prompt_s": [], "eval_s": []}
    peer = {"encode_s": [], "prompt_s": [], "eval_s": []}
    for i in range(args.rounds):  # alternate which side goes first: load drifts on shared machines
        for side in (("ours", "peer") if i % 2 == 0 else ("peer", "ours")):
            res, _ = run_side(side, args, m)
            for k, v in res.items():
                (ours if side == "ours" else peer)[k].extend(v)
    rws = rows(ours, peer, args, report.machine(args.device))
    text = section(rws, args, m)
    print(text)
    if not args.no_doc:
        report.update_section(f"inference-{args.device}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
