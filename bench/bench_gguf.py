"""Benchmark: gguflite's reader and writer against gguf-py 0.19.0 and ``cp``, same run.

    python -m bench.bench_gguf [--write-size 2G] [--runs 3] [--peer-runs 1] [--write-runs 5] [--no-doc]

Parse: a file like a real LLM's header (150k-token vocabulary: tokens, scores, token
types, 150k merges; 300 small tensors, about 7 MB) is opened in a fresh child process by
each reader, which then touches every key and every tensor's shape.  Reported: seconds
measured inside the child around the parse (imports excluded), and the child's peak RSS
(interpreter and numpy included, for both).  gguflite's string arrays stay lazy; a second
row also decodes all 300k strings to Python str.

Write: ``--write-size`` bytes of F32 tensors (64 MiB each) written by GGUFWriter in a
child process, (a) from numpy arrays in memory and (b) re-written from a GGUF file (the
editor's and splitter's path, copied in-kernel with copy_file_range), against ``cp`` of
the same bytes; both sides fsync their output (``cp`` then ``sync FILE``), so the figures
are durable-write throughput.  Each measurement starts after a global ``sync`` and the
order rotates between rounds; on a shared machine the spread is still large.

Prints a markdown table and, unless --no-doc, replaces the ``gguf`` section of
docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402

N_VOCAB = 150_000
N_TENSORS = 300
BLOCK = 64 << 20  # bytes per write-benchmark tensor


# --------------------------------------------------------------------------- inputs


def make_vocab_file(path: str) -> None:
    from gguflite import GGUFWriter, ValueType as V

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzĠé"))
    lens = rng.integers(1, 12, N_VOCAB)
    chars = rng.choice(letters, int(lens.sum()))
    pos = np.concatenate([[0], np.cumsum(lens)])
    tokens = ["".join(chars[pos[i]:pos[i + 1]]) for i in range(N_VOCAB)]
    merges = [f"{tokens[i]} {tokens[(i * 7) % N_VOCAB]}" for i in range(N_VOCAB)]
    w = GGUFWriter(path)
    w.add("general.architecture", "llama")
    w.add("general.name", "bench-vocab")
    w.add("llama.context_length", 4096, V.UINT32)
    w.add("tokenizer.ggml.model", "gpt2")
    w.add("tokenizer.ggml.tokens", tokens)
    w.add("tokenizer.ggml.scores", rng.standard_normal(N_VOCAB).astype(np.float32))
    w.add("tokenizer.ggml.token_type", np.ones(N_VOCAB, np.int32))
    w.add("tokenizer.ggml.merges", merges)
    block = rng.standard_normal((16, 64)).astype(np.float32)
    for i in range(N_TENSORS):
        w.add_tensor(f"blk.{i // 9}.t{i % 9}.weight", block.shape, "f32", block)
    w.write()


# --------------------------------------------------------------------------- children


def vm_hwm() -> int:
    """This process's peak RSS in bytes from /proc/self/status (VmHWM belongs to the
    process's own address space; rusage's ru_maxrss can carry the parent's peak over
    fork+exec), falling back to ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_parse(kind: str, path: str) -> dict:
    if kind == "import-only":
        import gguf  # noqa: F401
        import gguflite  # noqa: F401

        return {"seconds": 0.0}
    if kind == "gguf-py":
        import gguf

        t0 = time.perf_counter()
        r = gguf.GGUFReader(path)
        n = len(r.fields)
        shapes = [tuple(t.shape) for t in r.tensors]
        dt = time.perf_counter() - t0
        return {"seconds": dt, "fields": n, "tensors": len(shapes)}
    import gguflite

    t0 = time.perf_counter()
    with gguflite.open(path) as f:
        values = [f.metadata[k] for k in f.metadata]
        shapes = [t.shape for t in f.tensors.values()]
        if kind == "ours-decode":
            values = [f.metadata["tokenizer.ggml.tokens"].tolist(), f.metadata["tokenizer.ggml.merges"].tolist()]
    dt = time.perf_counter() - t0
    return {"seconds": dt, "fields": len(values), "tensors": len(shapes)}


def child_write(kind: str, src: str, out: str, size: int) -> dict:
    from gguflite import GGUFWriter, open as gguf_open

    if kind == "arrays":
        block = np.random.default_rng(1).standard_normal(BLOCK // 4).astype(np.float32).reshape(-1, 4096)
        t0 = time.perf_counter()
        w = GGUFWriter(out)
        w.add("general.architecture", "llama")
        for i in range(size // BLOCK):
            w.add_tensor(f"t{i}", block.shape, "f32", block)  # the same 64 MiB, size // BLOCK times
        w.write()
        return {"seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    with gguf_open(src) as f:
        w = GGUFWriter(out, alignment=f.alignment)
        for fld in f.fields.values():
            w.add_field(fld)
        for t in f.tensors.values():
            w.add_tensor_from(t)
        w.write()
    return {"seconds": time.perf_counter() - t0}


def _child(args: list[str], cwd: str) -> tuple[dict, report.ChildRun]:
    run = report.run_child([sys.executable, "-m", "bench.bench_gguf", "--child", *args], cwd=cwd).check()
    last = run.output_tail.strip().splitlines()[-1]
    return json.loads(last), run


# --------------------------------------------------------------------------- main


def _parse_size(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(t[:-1]) * mult[t[-1]]) if t[-1] in mult else int(t)


def _size_str(n: int) -> str:
    for unit, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def bench_parse(tmp: str, runs: int, peer_runs: int, root: str, cmd: str) -> tuple[float, list[report.Row]]:
    path = os.path.join(tmp, "vocab.gguf")
    _child(["make-vocab", path], root)
    size_mb = os.path.getsize(path) / 1e6
    res: dict[str, list] = {}
    for kind in ("ours", "ours-decode", "gguf-py", "import-only"):
        for _ in range({"gguf-py": peer_runs, "import-only": 1}.get(kind, runs)):
            out, _ = _child([kind, path], root)
            res.setdefault(kind, []).append((out["seconds"], out["peak_rss"]))
    med = {k: float(np.median([s for s, _ in v])) for k, v in res.items()}
    rss = {k: float(np.median([m for _, m in v])) / 2**20 for k, v in res.items()}
    what = f"parse {size_mb:.1f} MB GGUF (150k vocab + merges, 300 tensors)"
    print(f"(baseline RSS of a child that only imports numpy, gguf and gguflite: {rss['import-only']:.0f} MiB)")
    n = f"{runs}/{peer_runs}" if peer_runs != runs else runs
    return rss["import-only"], [
        report.Row(what, med["ours"], med["gguf-py"], "s", "lower", n, 1, cmd, target=1 / 50),
        report.Row(what + ", peak RSS", rss["ours"], rss["gguf-py"], "MiB", "lower", n, 1, cmd, target=0.1),
        report.Row(what + " + decode all 300k strings", med["ours-decode"], med["gguf-py"], "s", "lower", n, 1, cmd),
    ]


def bench_write(tmp: str, size: int, runs: int, root: str, cmd: str) -> tuple[str, list[report.Row]]:
    size = max(BLOCK, size // BLOCK * BLOCK)
    gb = size / 1e9
    src = os.path.join(tmp, "src.gguf")
    _child(["write", "arrays", "-", src, str(size)], root)  # the source for cp and the rewrite
    times: dict[str, list[float]] = {"arrays": [], "rewrite": [], "cp": []}
    order = list(times)
    for r in range(runs):
        for kind in order[r % 3:] + order[: r % 3]:  # rotate, so that no side always goes first
            report.run_child(["sync"]).check()  # start each measurement with no dirty pages
            out = os.path.join(tmp, f"{kind}.gguf")
            if kind == "cp":
                t0 = time.perf_counter()
                report.run_child(["sh", "-c", f"cp {shlex.quote(src)} {shlex.quote(out)} && sync {shlex.quote(out)}"]).check()
                times[kind].append(time.perf_counter() - t0)
            else:
                times[kind].append(_child(["write", kind, src, out, str(size)], root)[0]["seconds"])
            os.unlink(out)
    tput = {k: gb / float(np.median(v)) for k, v in times.items()}
    per_round = {k: ", ".join(f"{c / o:.2f}" for o, c in zip(times[k], times["cp"])) for k in ("arrays", "rewrite")}
    note = (f"Per-round ours/cp throughput ratios (the spread on this machine): from arrays {per_round['arrays']}; "
            f"rewrite {per_round['rewrite']}.")
    return note, [
        report.Row(f"write {gb:.2f} GB of F32 tensors from numpy arrays (fsync) vs cp + sync", tput["arrays"],
                   tput["cp"], "GB/s", "higher", runs, 1, cmd, target=0.9),
        report.Row(f"rewrite a {gb:.2f} GB GGUF through GGUFWriter (fsync) vs cp + sync", tput["rewrite"],
                   tput["cp"], "GB/s", "higher", runs, 1, cmd, target=0.9),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_gguf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-size", type=_parse_size, default=2 << 30, help="bytes of tensors to write (default 2G)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each gguflite measurement and of cp")
    ap.add_argument("--peer-runs", type=int, default=1, help="runs of gguf-py's parse (slow: ~10-90 s each)")
    ap.add_argument("--write-runs", type=int, default=5, help="rounds of the write comparison (noisy: use several)")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    ap.add_argument("--skip-write", action="store_true")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: the system temp folder)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.child[0] == "make-vocab":
            make_vocab_file(args.child[1])
            out = {}
        elif args.child[0] == "write":
            out = child_write(args.child[1], args.child[2], args.child[3], int(args.child[4]))
        else:
            out = child_parse(args.child[0], args.child[1])
        out["peak_rss"] = vm_hwm()
        print(json.dumps(out))
        return 0
    root = str(Path(__file__).resolve().parents[1])
    cmd = "python -m bench.bench_gguf" + ("" if args.write_size == 2 << 30 else f" --write-size {_size_str(args.write_size)}") \
        + ("" if args.runs == 3 else f" --runs {args.runs}") + ("" if args.peer_runs == 1 else f" --peer-runs {args.peer_runs}") \
        + ("" if args.write_runs == 5 else f" --write-runs {args.write_runs}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        baseline, rows = bench_parse(tmp, args.runs, args.peer_runs, root, cmd)
        note = ""
        if not args.skip_write:
            note, write_rows = bench_write(tmp, args.write_size, args.write_runs, root, cmd)
            rows += write_rows
    body = (f"## GGUF parse/write\n\nMeasured {report.stamp()} with `{cmd}`; medians of {args.runs} runs ({args.peer_runs} of gguf-py's "
            f"slow parse, {args.write_runs} rounds of the write comparison in rotating order, each measurement "
            "after a `sync`), each in a fresh child process. Parse time is measured inside the child around the parse (imports excluded); "
            "peak RSS is the child's VmHWM (interpreter and numpy included, for both readers; a child that only "
            f"imports numpy, gguf and gguflite peaks at {baseline:.0f} MiB). Write throughput "
            "includes fsync on both sides (`cp` is followed by `sync FILE`). The machine was shared with other "
            "jobs, so expect noise.\n\n" + report.table(rows) + (f"\n{note}\n" if note else ""))
    print(body)
    if not args.no_doc:
        report.update_section("gguf", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
