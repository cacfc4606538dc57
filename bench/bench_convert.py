"""Conversion of a LLaVA-1.5 checkpoint to (LLM GGUF, mmproj GGUF): ours vs llama.cpp's
legacy route, wall time and peak RSS, each step in its own child process.

    python -m bench.bench_convert [--size small|full|7b|tiny] [--runs 3] [--models DIR] [--no-doc]

- ours: ``python -m gguflite.convert.cli convert-llava LLAVA_DIR --vision-tower CLIP_DIR --outtype f16``
  (one process writes both files);
- llama.cpp (docs/multimodal/llava.md of the llama-cpp-python 0.3.36 source distribution,
  vendor/llama.cpp): ``llava_surgery.py -m LLAVA_DIR`` (extracts ``llava.projector``),
  ``convert_image_encoder_to_gguf.py -m CLIP_DIR --llava-projector LLAVA_DIR/llava.projector``,
  ``convert_legacy_llama.py LLAVA_DIR --skip-unknown --outtype f16``; its time is the sum of
  the three, its peak RSS the largest of the three.

The legacy route writes into its input folder, so every run gets a fresh copy (JSON and
tokenizer files copied, weight shards hard-linked: nothing in the route rewrites them; the
copy is not timed).  The scripts come from the sdist, fetched once with ``pip download
--no-deps --no-binary :all: llama-cpp-python==0.3.36`` into the cache folder
(``$GGUFLITE_BENCH_CACHE``, default ``~/.cache/gguflite-bench``) and unpacked there; nothing
fetched is kept in the repository.  They run with the sdist's own ``gguf-py`` first on
``PYTHONPATH``, as the scripts expect.

Peak RSS comes from ``os.wait4`` on each child (``ru_maxrss``: the largest resident set of
the process).  The source is a checkpoint with random weights at real shapes written by
``bench.make_models --source``.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

if __package__ in (None, ""):  # `python bench/bench_convert.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from . import make_models, report  # noqa: E402

CACHE = os.environ.get("GGUFLITE_BENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gguflite-bench"))
LCP = "llama-cpp-python==0.3.36"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NEEDED = ("vendor/llama.cpp/examples/convert_legacy_llama.py", "vendor/llama.cpp/gguf-py/",
           "vendor/llama.cpp/tools/mtmd/legacy-models/")


def legacy_scripts(cache: str = CACHE) -> str:
    """The unpacked ``vendor/llama.cpp`` folder of the 0.3.36 sdist (fetched on first use)."""
    src = os.path.join(cache, "src")
    found = glob.glob(os.path.join(src, "llama_cpp_python-0.3.36", "vendor", "llama.cpp"))
    if found and os.path.exists(os.path.join(found[0], "examples", "convert_legacy_llama.py")):
        return found[0]
    sdist_dir = os.path.join(cache, "sdist")
    tars = glob.glob(os.path.join(sdist_dir, "llama_cpp_python-0.3.36.tar.gz"))
    if not tars:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", LCP,
                        "-d", sdist_dir], check=True)
        tars = glob.glob(os.path.join(sdist_dir, "llama_cpp_python-0.3.36.tar.gz"))
    os.makedirs(src, exist_ok=True)
    with tarfile.open(tars[0]) as tf:
        members = [m for m in tf.getmembers() if any(n in m.name for n in _NEEDED)]
        tf.extractall(src, members=members, filter="data")
    return legacy_scripts(cache)


def fresh_copy(src: str, dst: str) -> str:
    """Copy a checkpoint folder for one legacy run: small files copied, shards hard-linked."""
    os.makedirs(dst)
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if name.endswith(".bin"):
            try:
                os.link(s, d)
                continue
            except OSError:  # another file system
                pass
        shutil.copy2(s, d)
    return dst


def run_ours(m: make_models.Models, out: str) -> report.ChildRun:
    return report.run_child([sys.executable, "-m", "gguflite.convert.cli", "convert-llava", m.llava_dir, "--vision-tower", m.clip_dir,
                             "--outdir", out, "--outtype", "f16", "--quiet"], cwd=ROOT).check()


def run_legacy(m: make_models.Models, work: str, out: str, lc: str) -> list[report.ChildRun]:
    env = dict(os.environ, PYTHONPATH=os.path.join(lc, "gguf-py"))
    mtmd = os.path.join(lc, "tools", "mtmd", "legacy-models")
    model = fresh_copy(m.llava_dir, os.path.join(work, os.path.basename(m.llava_dir)))
    os.makedirs(out, exist_ok=True)
    steps = [
        [sys.executable, os.path.join(mtmd, "llava_surgery.py"), "-m", model],
        [sys.executable, os.path.join(mtmd, "convert_image_encoder_to_gguf.py"), "-m", m.clip_dir,
         "--llava-projector", os.path.join(model, "llava.projector"), "--output-dir", out],
        [sys.executable, os.path.join(lc, "examples", "convert_legacy_llama.py"), model, "--skip-unknown",
         "--outtype", "f16", "--outfile", os.path.join(out, "llm-f16.gguf")],
    ]
    return [report.run_child(s, cwd=work, env=env).check() for s in steps]


def measure(m: make_models.Models, runs: int, lc: str) -> tuple[list, list]:
    """[(seconds, peak_rss, peak_anon, ...)] for ours and for the legacy route, ``runs`` each,
    interleaved."""
    ours, legacy = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(dir=os.path.dirname(m.llava_dir)) as tmp:
            r = run_ours(m, os.path.join(tmp, "ours"))
            produced = sorted(os.listdir(os.path.join(tmp, "ours")))
            if len(produced) != 2:
                raise RuntimeError(f"our converter produced {produced}")
            ours.append((r.seconds, r.peak_rss, r.peak_anon))
        with tempfile.TemporaryDirectory(dir=os.path.dirname(m.llava_dir)) as tmp:
            steps = run_legacy(m, tmp, os.path.join(tmp, "out"), lc)
            produced = sorted(os.listdir(os.path.join(tmp, "out")))
            if len(produced) != 2:
                raise RuntimeError(f"the legacy route produced {produced}")
            legacy.append((sum(s.seconds for s in steps), max(s.peak_rss for s in steps),
                           max(s.peak_anon for s in steps), [(s.seconds, s.peak_rss) for s in steps]))
    return ours, legacy


def section(ours, legacy, args) -> str:
    import statistics

    clip, llm = make_models.SIZES[args.size]
    cmd = f"python -m bench.bench_convert --size {args.size} --runs {args.runs}"
    mach = report.machine()
    med = statistics.median
    MiB = 2**20
    rows = [
        report.Row("LLaVA-1.5 -> LLM + mmproj GGUF (F16): wall time", med(o[0] for o in ours),
                   med(x[0] for x in legacy), "s", "lower", args.runs, None, cmd, target=1.0, machine=mach),
        report.Row("same: peak RSS (ru_maxrss)", med(o[1] for o in ours) / MiB, med(x[1] for x in legacy) / MiB,
                   "MiB", "lower", args.runs, None, cmd, target=0.25, machine=mach),
        report.Row("same: peak anonymous RSS (sampled /20 ms)", med(o[2] for o in ours) / MiB,
                   med(x[2] for x in legacy) / MiB, "MiB", "lower", args.runs, None, cmd, target=0.25, machine=mach),
    ]
    names = ("llava_surgery.py", "convert_image_encoder_to_gguf.py", "convert_legacy_llama.py")
    per_step = "; ".join(f"`{n}` {med(x[3][i][0] for x in legacy):.1f} s / {med(x[3][i][1] for x in legacy) / MiB:,.0f} MiB"
                         for i, n in enumerate(names))
    src_bytes = sum(os.path.getsize(p) for d in (args._m.llava_dir, args._m.clip_dir)
                    for p in glob.glob(os.path.join(d, "*.bin")))
    return (f"## Conversion (LLaVA-1.5 checkpoint -> GGUF)\n\n"
            f"Measured {report.stamp()} ({report.load_note()}) with size `{args.size}`: source written by "
            f"`python -m bench.make_models DIR --size {args.size} --source --no-gguf` "
            f"({src_bytes / 2**30:.2f} GiB of .bin: LLaMA n_embd {llm.n_embd}, {llm.n_layer} layers, "
            f"vocab {llm.n_vocab}, 2 torch.save shards; two-tower CLIP {clip.width} wide, {clip.layers} layers, "
            f"336 px). Peer: llama.cpp's legacy route from the llama-cpp-python 0.3.36 sdist "
            f"(median per step: {per_step}). Both single-process Python, no thread setting. "
            "`ru_maxrss` counts file pages a process has mapped and touched (page cache, "
            "reclaimable) as well as its private memory; the anonymous row counts private memory "
            "only (sampled, so a short spike can be missed). Ours maps each source shard read-only, "
            "drops its pages from the mapping (`madvise(MADV_DONTNEED)`) as soon as a tensor is written, "
            "and verifies the outputs with buffered reads, so its ru_maxrss stays near its private memory "
            "plus the largest tensor (token_embd).\n\n"
            + report.table(rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=list(make_models.SIZES), default=report.default_size(),
                    help="model size (default: $GGUFLITE_BENCH_SIZE, else full)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", default=os.path.join(CACHE, "models"))
    ap.add_argument("--no-doc", action="store_true", help="print the table, do not touch docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    lc = legacy_scripts()
    args._m = m = make_models.make(args.models, args.size, gguf=False, source=True)
    ours, legacy = measure(m, args.runs, lc)
    text = section(ours, legacy, args)
    print(text)
    if not args.no_doc:
        report.update_section("convert", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
