"""Shared helpers for the benchmarks: timing (median of N runs), child processes with their
peak RSS, a description of the machine, markdown rows, and the rewrite of ONE named section
of docs/BENCHMARKS.md.

    from bench import report
    t = report.median_of(lambda: work(), runs=5, warmup=1)     # Timing(median, runs)
    run = report.run_child([sys.executable, "-m", "x"], cwd=d)   # ChildRun(seconds, peak_rss, ...)
    row = report.Row("parse 1.1B GGUF", ours=t.median, peer=p.median, unit="s",
                     better="lower", runs=5, threads=1, command="python -m bench.bench_gguf")
    report.update_section("gguf", "## GGUF parse/write\n\n" + report.table([row]))

Sections are delimited by ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` lines; only
the named one is replaced (appended at the end when it does not exist yet), so every bench
module owns its own section and they can run in any order.  The file is rewritten
atomically (temp file in the same folder, fsync, rename).

A ratio is always ``ours / peer`` of the figure as measured; ``better`` says which direction
wins ("lower" for seconds and bytes, "higher" for tokens/s), and ``target`` is the bound the
ratio must meet (e.g. ``0.95`` for a throughput, ``0.25`` for a memory ratio).
"""
from __future__ import annotations

import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "BENCHMARKS.md")


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall-clock seconds of each run; ``median`` is what tables report."""

    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median: a quick noise indicator for the table's notes."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median else 0.0


def median_of(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times, each timed with perf_counter."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return Timing(out)


@dataclass
class ChildRun:
    """One child process: wall seconds, peak RSS in bytes (``ru_maxrss``: of the child and the
    children it waited for, file-backed mapped pages included), exit status, the tail of its
    output, and the largest anonymous (private, not file-backed) RSS seen when sampling
    ``/proc/PID/status`` every 20 ms (0 where there is no /proc)."""

    argv: list[str]
    seconds: float
    peak_rss: int
    returncode: int
    output_tail: str
    peak_anon: int = 0

    def check(self) -> "ChildRun":
        if self.returncode != 0:
            raise RuntimeError(f"command failed with status {self.returncode}: {shlex.join(self.argv)}\n"
                               f"{self.output_tail}")
        return self


# Runs the command and reports its own wall time, ru_maxrss and the largest RssAnon seen
# (sampled every 20 ms from /proc).  A separate small process, because Linux carries the
# *parent's* RSS high-water mark into a child across fork + exec (exec_mmap records the old
# mm's hiwater), so wait4 from a big benchmark process would report the benchmark's own size.
_MEASURE = (
    "import os, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "anon = 0\n"
    "while True:\n"
    "    pid, st, ru = os.wait4(p.pid, os.WNOHANG)\n"
    "    if pid:\n"
    "        break\n"
    "    try:\n"
    "        for line in open(f'/proc/{p.pid}/status'):\n"
    "            if line.startswith('RssAnon:'):\n"
    "                anon = max(anon, int(line.split()[1]))\n"
    "    except OSError:\n"
    "        pass\n"
    "    time.sleep(0.02)\n"
    "dt = time.perf_counter() - t0\n"
    "open(sys.argv[1], 'w').write(f'{dt!r} {ru.ru_maxrss} {anon}')\n"
    "code = os.waitstatus_to_exitcode(st)\n"
    "sys.exit(code if code >= 0 else 128 - code)\n"
)


def run_child(argv: Sequence[str], *, cwd: str | None = None, env: dict | None = None,
              tail: int = 4000) -> ChildRun:
    """Run ``argv`` to completion; wall time and peak RSS (``ru_maxrss`` from ``os.wait4``)
    are taken by a small launcher process, so several measurements in one process do not
    mix and the caller's own size does not leak in.  Output goes to a temp file, not a
    pipe, so a chatty child cannot block."""
    argv = [os.fspath(a) for a in argv]
    with tempfile.TemporaryFile() as log, tempfile.NamedTemporaryFile("r", suffix=".rss") as res:
        launcher = [sys.executable, "-I", "-S", "-c", _MEASURE, res.name]
        rc = subprocess.run(launcher + argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL).returncode
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        measured = res.read().split()
    if len(measured) != 3:
        raise RuntimeError(f"the measuring launcher failed (status {rc}): {shlex.join(argv)}\n{text[-tail:]}")
    return ChildRun(argv, float(measured[0]), int(measured[1]) * 1024, rc, text[-tail:], int(measured[2]) * 1024)


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name from nvidia-smi, or None when there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [s.strip() for s in out.stdout.splitlines() if s.strip()]
    return names[0] if out.returncode == 0 and names else None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine(device: str = "cpu") -> str:
    """One line for the table: CPU model and the cores this process may use, RAM, and the GPU
    when ``device`` is not the CPU."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        ram_s = f", {ram:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram_s = ""
    s = f"{_cpu_model()}, {available_cores()} cores{ram_s}"
    if device != "cpu":
        s += f", GPU: {gpu_name() or 'none found'}"
    return s


def load_note() -> str:
    """"load average X over N cores": how busy the machine was while measuring."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {available_cores()} cores"


def default_size(device: str = "cpu") -> str:
    """Model size for benches run without arguments (``make bench``): $GGUFLITE_BENCH_SIZE,
    else the issue's real shapes: ``full`` (CLIP ViT-L/14-336 + TinyLlama-1.1B) on the CPU,
    ``7b`` (LLaMA-7B) on a GPU."""
    return os.environ.get("GGUFLITE_BENCH_SIZE", "7b" if device == "cuda" else "full")


def default_device() -> str:
    """Device for benches run without arguments: $GGUFLITE_BENCH_DEVICE (default cpu)."""
    return os.environ.get("GGUFLITE_BENCH_DEVICE", "cpu")


# --------------------------------------------------------------------------- table


@dataclass
class Row:
    """One line of a benchmark table."""

    what: str
    ours: float
    peer: float
    unit: str  # "s", "ms", "MiB", "tok/s", ...
    better: str  # "lower" or "higher"
    runs: int  # median of this many runs
    threads: int | None
    command: str
    target: float | None = None  # bound on ours/peer (<= for "lower", >= for "higher")
    machine: str = field(default_factory=machine)

    def __post_init__(self):
        if self.better not in ("lower", "higher"):
            raise ValueError(f"better must be 'lower' or 'higher', not {self.better!r}")

    @property
    def ratio(self) -> float:
        return self.ours / self.peer if self.peer else math.nan

    @property
    def met(self) -> bool | None:
        if self.target is None or math.isnan(self.ratio):
            return None
        return self.ratio <= self.target if self.better == "lower" else self.ratio >= self.target


HEADER = ("| benchmark | ours | peer | ours/peer | target | median of | threads | machine | command |\n"
          "|---|---:|---:|---:|---|---:|---:|---|---|")


def fmt(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def table_row(r: Row) -> str:
    if r.target is None:
        target = "-"
    else:
        sign = "<=" if r.better == "lower" else ">="
        target = f"{sign} {r.target:.3g} ({'met' if r.met else 'NOT met'})"
    cmd = r.command.replace("|", "\\|")
    return (f"| {r.what} | {fmt(r.ours)} {r.unit} | {fmt(r.peer)} {r.unit} | {fmt(r.ratio)} | {target} | "
            f"{r.runs} | {r.threads if r.threads is not None else '-'} | {r.machine} | `{cmd}` |")


def table(rows: Sequence[Row]) -> str:
    return "\n".join([HEADER] + [table_row(r) for r in rows]) + "\n"


# --------------------------------------------------------------------------- BENCHMARKS.md


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name {name!r}: use letters, digits, '_', '.', '-'")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` replaced by ``body`` (appended if absent).  Raises
    ValueError when the markers are unbalanced, so a damaged file is not made worse."""
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    i, j = text.find(start), text.find(end)
    if i < 0 and j < 0:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{text}{sep}{block}\n"
    if i < 0 or j < i or text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"BENCHMARKS.md: markers of section {name!r} are missing, repeated or out of order")
    return text[:i] + block + text[j + len(end):]


def update_section(name: str, body: str, path: str = DOC) -> None:
    """Rewrite section ``name`` of ``path`` (docs/BENCHMARKS.md by default), atomically."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\nEvery figure below comes from the command printed next to it.\n\n"
    new = replace_section(text, name, body)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".BENCHMARKS.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def stamp() -> str:
    """UTC date and time for a section's 'measured on' line."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
