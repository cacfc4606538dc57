"""SIGKILL while writing, editing or converting: the previous file survives intact, and the
next run leaves no temporary files behind.

A child process runs one operation (``GGUFWriter.write``, ``gguflite.Editor.commit`` in
rewrite and in-place mode, ``convert_llava``) over files that already exist, and is killed
with SIGKILL either after a random delay (uniform over 1.2 times the operation's measured
duration, counted from the end of the child's imports, so kills land during the header,
the data, fsync, rename and after) or at the worst moment: right
after the temp file was created (the child announces it; that instrumentation only wraps
``AtomicFile.__enter__`` inside the child).  Afterwards every target holds exactly its old
bytes or exactly the bytes an uninterrupted run writes, and opens and validates.

The short versions run a few kills per operation; the ``fuzz``-marked one runs many.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gguflite

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)

CHILD = r"""
import json, os, sys, time
op, args = sys.argv[1], json.loads(sys.argv[2])
if args.get("pause"):
    # announce the temp file, then wait to be killed there
    import gguflite.writer as W
    enter = W.AtomicFile.__enter__
    def paused(self):
        fh = enter(self)
        print("TEMP", self.tmp, flush=True)
        time.sleep(120)
        return fh
    W.AtomicFile.__enter__ = paused
from tests.test_kill import build, edit
print("START", flush=True)  # imports done: the parent times the operation from here
if op == "write":
    build(args["path"], args["version"])
elif op == "edit":
    edit(args["path"], args["in_place"])
elif op == "convert":
    from gguflite.convert.llava import convert_llava
    convert_llava(args["model_dir"], vision_tower=args["tower"], outdir=args["outdir"], progress=False)
print("DONE", flush=True)
"""


def build(path, version: int) -> None:
    """A 2 MB file whose every byte depends on ``version``."""
    import numpy as np

    w = gguflite.GGUFWriter(path)
    w.add("general.architecture", "llama")
    w.add("kill.version", version)
    w.add("kill.tokens", [f"tok{i}.{version}" for i in range(2000)])
    for i in range(8):
        w.add_tensor(f"blk.{i}.weight", (256, 256), "f32",
                     lambda i=i: np.full((256, 256), version * 100 + i, np.float32))
    w.write()


def edit(path, in_place: bool) -> None:
    """Change a value; in place keeps the header size, the rewrite grows it."""
    from gguflite.edit import Editor

    with Editor(path) as e:
        if in_place:
            e.set("kill.version", 7)
        else:
            e.set("general.name", "edited " * 500)


def run_child(op: str, args: dict, *, kill_after: float | None = None, pause: bool = False) -> int:
    """Run the operation in a child; SIGKILL it after ``kill_after`` seconds or once it has
    created its temp file (``pause``).  Returns the exit status (negative: killed)."""
    args = dict(args, pause=pause)
    p = subprocess.Popen([sys.executable, "-c", CHILD, op, json.dumps(args)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        if pause:
            for line in p.stdout:
                if line.startswith("TEMP"):
                    break
            p.kill()
        elif kill_after is not None:
            p.stdout.readline()  # START: kill_after counts from the start of the operation
            try:
                p.wait(kill_after)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({p.returncode}): {err[-2000:]}")
    return p.returncode


def timed(op: str, args: dict) -> float:
    """Seconds the operation itself takes in a child (imports excluded)."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, op, json.dumps(dict(args, pause=False))], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.stdout.readline().startswith("START"), p.stderr.read()
    t0 = time.perf_counter()
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and "DONE" in out, err[-2000:]
    return time.perf_counter() - t0


def assert_old_or_new(path: Path, old: bytes, new: bytes) -> str:
    raw = path.read_bytes()
    assert raw in (old, new), f"{path.name}: {len(raw)} bytes, neither the old ({len(old)}) nor the new ({len(new)})"
    gguflite.validate(path)
    return "old" if raw == old else "new"


def assert_one_stale_temp(folder: Path, *targets: str) -> None:
    """The killed child left exactly one temp file, named for one of ``targets``, next to
    the targets (so that the next run has something to clean up)."""
    extra = sorted(set(os.listdir(folder)) - set(targets))
    assert len(extra) == 1 and any(extra[0].startswith(f".{t}.") for t in targets), extra
    assert extra[0].endswith(".gguflite-tmp"), extra


# --------------------------------------------------------------------------- writing


@pytest.fixture(scope="module")
def write_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("kw")
    build(d / "old.gguf", 1)
    build(d / "new.gguf", 2)
    work = d / "work"
    work.mkdir()
    shutil.copy(d / "old.gguf", work / "m.gguf")
    seconds = timed("write", {"path": str(work / "m.gguf"), "version": 2})
    return (d / "old.gguf").read_bytes(), (d / "new.gguf").read_bytes(), seconds


def _kill_writes(tmp_path, write_case, n: int, seed: int):
    old, new, seconds = write_case
    rng = random.Random(seed)
    seen = []
    for i in range(n):
        work = tmp_path / f"w{i}"
        work.mkdir()
        (work / "m.gguf").write_bytes(old)
        run_child("write", {"path": str(work / "m.gguf"), "version": 2}, kill_after=rng.uniform(0, 1.2 * seconds))
        seen.append(assert_old_or_new(work / "m.gguf", old, new))
    return seen


def test_sigkill_at_random_points_while_writing_leaves_the_old_or_the_new_file(tmp_path, write_case):
    _kill_writes(tmp_path, write_case, 4, seed=0)


def test_sigkill_after_the_temp_file_exists_leaves_the_old_file(tmp_path, write_case):
    old, new, _ = write_case
    (tmp_path / "m.gguf").write_bytes(old)
    assert run_child("write", {"path": str(tmp_path / "m.gguf"), "version": 2}, pause=True) == -signal.SIGKILL
    assert assert_old_or_new(tmp_path / "m.gguf", old, new) == "old"


def test_the_next_write_after_a_sigkill_leaves_no_temporary_file(tmp_path, write_case):
    old, new, _ = write_case
    (tmp_path / "m.gguf").write_bytes(old)
    run_child("write", {"path": str(tmp_path / "m.gguf"), "version": 2}, pause=True)
    assert_one_stale_temp(tmp_path, "m.gguf")
    assert run_child("write", {"path": str(tmp_path / "m.gguf"), "version": 2}) == 0
    assert assert_old_or_new(tmp_path / "m.gguf", old, new) == "new"
    assert sorted(os.listdir(tmp_path)) == ["m.gguf"]


@pytest.mark.fuzz
@pytest.mark.slow
def test_fuzz_sigkill_at_many_random_points_while_writing(tmp_path, write_case):
    seen = _kill_writes(tmp_path, write_case, int(os.environ.get("KILL_RUNS", "40")), seed=int(time.time()))
    print(f"kills: {len(seen)}, old file left: {seen.count('old')}, new file: {seen.count('new')}")


# --------------------------------------------------------------------------- editing


@pytest.fixture(scope="module")
def edit_cases(tmp_path_factory):
    """in_place -> (old bytes, new bytes, seconds) for an edit of a version-1 file."""
    d = tmp_path_factory.mktemp("ke")
    build(d / "old.gguf", 1)
    old = (d / "old.gguf").read_bytes()
    cases = {}
    for in_place in (False, True):
        p = d / f"new-{in_place}.gguf"
        p.write_bytes(old)
        seconds = timed("edit", {"path": str(p), "in_place": in_place})
        cases[in_place] = (old, p.read_bytes(), seconds)
    assert cases[True][1] != old and cases[False][1] != old
    assert len(cases[True][1]) == len(old) and len(cases[False][1]) > len(old)  # in place vs rewrite
    return cases


@pytest.mark.parametrize("in_place", [False, True], ids=["rewrite", "in-place"])
def test_sigkill_at_random_points_while_editing_leaves_the_old_or_the_new_file(tmp_path, edit_cases, in_place):
    old, new, seconds = edit_cases[in_place]
    rng = random.Random(1)
    for i in range(4):
        p = tmp_path / f"e{i}.gguf"
        p.write_bytes(old)
        run_child("edit", {"path": str(p), "in_place": in_place}, kill_after=rng.uniform(0, 1.2 * seconds))
        assert_old_or_new(p, old, new)


def test_sigkill_during_a_rewrite_edit_leaves_the_old_file(tmp_path, edit_cases):
    old, new, _ = edit_cases[False]
    p = tmp_path / "e.gguf"
    p.write_bytes(old)
    assert run_child("edit", {"path": str(p), "in_place": False}, pause=True) == -signal.SIGKILL
    assert assert_old_or_new(p, old, new) == "old"


def test_the_next_edit_after_a_sigkill_leaves_no_temporary_file(tmp_path, edit_cases):
    old, new, _ = edit_cases[False]
    p = tmp_path / "e.gguf"
    p.write_bytes(old)
    run_child("edit", {"path": str(p), "in_place": False}, pause=True)
    assert_one_stale_temp(tmp_path, "e.gguf")
    assert run_child("edit", {"path": str(p), "in_place": False}) == 0
    assert assert_old_or_new(p, old, new) == "new"
    assert sorted(os.listdir(tmp_path)) == ["e.gguf"]


def test_an_in_place_edit_after_a_sigkilled_rewrite_leaves_no_temporary_file(tmp_path, edit_cases):
    old, new, _ = edit_cases[False]
    p = tmp_path / "e.gguf"
    p.write_bytes(old)
    run_child("edit", {"path": str(p), "in_place": False}, pause=True)
    assert_one_stale_temp(tmp_path, "e.gguf")
    assert run_child("edit", {"path": str(p), "in_place": True}) == 0
    assert assert_old_or_new(p, old, edit_cases[True][1]) == "new"
    assert sorted(os.listdir(tmp_path)) == ["e.gguf"]


# --------------------------------------------------------------------------- converting


@pytest.fixture(scope="module")
def convert_case(tmp_path_factory):
    from tests.checkpoints import make_checkpoint

    root = tmp_path_factory.mktemp("kc")
    fx = make_checkpoint("llava-1.6-vicuna", root / "ck")
    args = {"model_dir": fx.model_dir, "tower": fx.vision_tower}
    ref = root / "ref"
    seconds = timed("convert", dict(args, outdir=str(ref)))
    new = {p.name: p.read_bytes() for p in sorted(ref.iterdir())}
    assert len(new) == 2
    # "previous" outputs: other valid GGUF files under the same names
    old = {}
    for i, name in enumerate(new):
        build(root / "prev.gguf", 10 + i)
        old[name] = (root / "prev.gguf").read_bytes()
    return args, old, new, seconds


def _prepare(outdir: Path, old: dict) -> None:
    outdir.mkdir()
    for name, raw in old.items():
        (outdir / name).write_bytes(raw)


def test_sigkill_at_random_points_while_converting_leaves_old_or_new_outputs(tmp_path, convert_case):
    args, old, new, seconds = convert_case
    rng = random.Random(2)
    for i in range(4):
        out = tmp_path / f"c{i}"
        _prepare(out, old)
        run_child("convert", dict(args, outdir=str(out)), kill_after=rng.uniform(0, 1.2 * seconds))
        for name in new:
            assert_old_or_new(out / name, old[name], new[name])


def test_sigkill_while_converting_leaves_the_previous_outputs(tmp_path, convert_case):
    args, old, new, _ = convert_case
    out = tmp_path / "c"
    _prepare(out, old)
    assert run_child("convert", dict(args, outdir=str(out)), pause=True) == -signal.SIGKILL
    for name in new:
        assert assert_old_or_new(out / name, old[name], new[name]) == "old"


def test_the_next_conversion_after_a_sigkill_leaves_no_temporary_files(tmp_path, convert_case):
    args, old, new, _ = convert_case
    out = tmp_path / "c"
    _prepare(out, old)
    run_child("convert", dict(args, outdir=str(out)), pause=True)
    assert_one_stale_temp(out, *new)
    assert run_child("convert", dict(args, outdir=str(out))) == 0
    for name in new:
        assert (out / name).read_bytes() == new[name]
    assert sorted(os.listdir(out)) == sorted(new)
