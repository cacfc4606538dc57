"""Fuzzing the GGUF reader: structure-aware and byte-level mutations of valid files.

Property (for every input): opening it with ``gguflite.open`` and then touching every
metadata value (string arrays walked and decoded, nested arrays recursed), every tensor's
data view, and ``validate()``, either succeeds with a self-consistent result, or raises a
``GGUFError``.  Nothing else: no other exception, no more than ``ALLOC_SLACK`` bytes
allocated beyond the file's size (tracemalloc peak), no input taking more than
``TIME_LIMIT`` seconds of CPU time (a wall-clock timer stops runaway inputs at 10x).

"Self-consistent" when the read succeeds: every tensor lies inside the file, in order and
aligned, its view has the byte size the type table gives; and where gguf-py 0.19.0 (the
incumbent, written by others) can read the same file, it sees the same keys, tensor
names, numpy-order shapes, types, absolute offsets and bytes.

Inputs start from valid files written by ``GGUFWriter`` (every value type, v1-v3, both byte
orders, odd alignments, nested arrays, invalid UTF-8 strings) and from the committed corpus
(tests/fuzz_corpus).  Structure-aware mutations use the offsets the reader reports
(``Field.offset``/``value_offset``, ``TensorInfo.info_offset``) to overwrite one
structural field (a count, a length, a type id, n_dims, a dimension, an offset, the
alignment value, the version) with an interesting value (0, 1, 2^30, 2^32-1, 2^63, 2^64-1,
the file size, the old value +-1, ...) in the file's byte order and length width; byte
mutations flip bits, overwrite, insert, delete, truncate and append.

The short versions run in ``make test``; the ``fuzz``-marked versions run FUZZ_SCALE times
the profile's example count (``make fuzz``; HYPOTHESIS_PROFILE=expensive for long runs).
"""
from __future__ import annotations

import os
import struct
import time
import tracemalloc
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings, strategies as st

import gguflite
from gguflite import GGUFError, GGUFWriter, ValueType as V
from gguflite.errors import WriteError
from gguflite.types import TYPE_TRAITS
from tests.fuzz_bounds import ALLOC_SLACK, TIME_LIMIT, run_bounded

CORPUS = Path(__file__).parent / "fuzz_corpus"
FUZZ_SCALE = int(os.environ.get("FUZZ_SCALE", "10"))

pytestmark = pytest.mark.timeout(900)


# --------------------------------------------------------------------------- the property


def _touch(value) -> None:
    """Access a metadata value completely without keeping copies alive."""
    if isinstance(value, gguflite.StringArray):
        for _ in value:
            pass
    elif isinstance(value, list):
        for v in value:
            _touch(v)
    elif isinstance(value, np.ndarray):
        value.sum() if value.dtype != np.bool_ else value.any()


def use_everything(path) -> dict:
    """Open ``path``, touch every value and every tensor's data, validate, and check the
    tensor layout; returns a summary of what was read (for differential checks)."""
    with gguflite.open(path) as f:
        for k in f.metadata:
            _touch(f.metadata[k])
        ends = {}  # per shard (a split model's tensors live in several files)
        for t in f.tensors.values():
            g = t.file
            assert t.abs_offset == g.data_offset + t.offset and t.offset % g.alignment == 0
            assert t.abs_offset >= ends.get(g.path, g.data_offset) and t.abs_offset + t.nbytes <= g.size, t
            ends[g.path] = t.abs_offset + t.nbytes
            traits = TYPE_TRAITS.get(t.type)
            if traits is not None:
                assert t.nbytes == t.n_elements // traits.block_size * traits.type_size
            data = t.data
            assert data.nbytes == t.nbytes
            if traits is not None and traits.dtype is not None:
                assert data.shape == t.shape
            int(t.raw.sum(dtype=np.uint64))
        f.validate()
        return {
            "version": f.version,
            "keys": list(f.fields),
            "tensors": [(t.name, t.shape, t.type, t.abs_offset, t.nbytes) for t in f.tensors.values()],
        }


@dataclass
class Outcome:
    summary: dict | None  # what was read, or None
    error: GGUFError | None
    peak: int
    seconds: float


def _names_its_file(error: GGUFError, path) -> None:
    """The file itself, or another shard of its split model beside it; an offset in the
    file itself lies inside it."""
    assert os.path.dirname(str(error.path)) == os.path.dirname(str(path)), f"error does not name the file: {error}"
    if str(error.path) == str(path):
        size = os.path.getsize(path)
        assert error.offset is None or 0 <= error.offset <= size, f"offset outside the file: {error}"


def run_input(path) -> Outcome:
    """Run the property on one file and enforce the time and allocation bounds."""
    out = run_bounded(path, use_everything, GGUFError, _names_its_file)
    return Outcome(out.result, out.error, out.peak, out.seconds)


def check_bytes(raw: bytes, path) -> Outcome:
    Path(path).write_bytes(raw)
    out = run_input(path)
    if currently_in_test_context():  # (atheris_gguf.py calls this outside hypothesis)
        event("read" if out.error is None else type(out.error).__name__)
    if out.summary is not None:
        compare_with_gguf_py(path, out.summary)
    return out


# --------------------------------------------------------------------------- differential check


def compare_with_gguf_py(path, summary: dict) -> None:
    """Where gguf-py 0.19.0 reads the file too, it must agree on the structure.  gguf-py
    accepts only v2/v3 and no unknown tensor types; it flattens nested arrays (same keys);
    its shapes are in ne order and its offsets absolute."""
    if summary["version"] not in (2, 3) or len(summary["tensors"]) > 64:
        return
    if any(t[2] not in TYPE_TRAITS for t in summary["tensors"]):
        return
    try:
        from gguf import GGUFReader
    except ImportError:  # the test extra is part of the environment; see pyproject
        pytest.fail("gguf (the incumbent reader, test peer) is not installed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = GGUFReader(path)
    except Exception:  # gguf-py is less tolerant in places (e.g. empty names); not our concern
        return
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys == summary["keys"]
    theirs = [(t.name, tuple(int(d) for d in reversed(t.shape.tolist())), int(t.tensor_type), int(t.data_offset))
              for t in r.tensors]
    ours = [(n, s if s else (1,), ty, off) for n, s, ty, off, _ in summary["tensors"]]
    theirs = [(n, s if s else (1,), ty, off) for n, s, ty, off in theirs]
    assert theirs == ours


# --------------------------------------------------------------------------- seed files


@st.composite
def seed_files(draw) -> bytes:
    """A valid file from GGUFWriter: a few keys of every kind, a few small tensors."""
    from tests.gguf_builders import metadata, tensors

    version = draw(st.sampled_from([3, 3, 2, 1]))
    endian = draw(st.sampled_from("<<>"))
    alignment = draw(st.sampled_from([None, 1, 2, 8, 32, 64]))
    nested = draw(st.booleans())
    md = draw(metadata)
    ts = draw(tensors(max_tensors=3))
    w = GGUFWriter(_scratch() / "seed.gguf", alignment=alignment, endian=endian, version=version,
                   allow_nested=nested)
    for k, (vt, et, v) in md.items():
        try:
            w.add(k, v, (V.ARRAY, et) if vt == V.ARRAY else vt)
        except WriteError:  # a value the writer's type rules refuse: not a seed's business
            pass
    if nested:
        w.add("fuzz.nested", [[1, 2], [3], [[4], [5, 6]]], (V.ARRAY, V.ARRAY))
    if draw(st.booleans()):
        w.add("fuzz.bad_utf8", b"ok\xff\xc3\x28\xed\xa0\x80", V.STRING)
    if draw(st.booleans()):
        w.add("fuzz.strings", ["", "a", "ß", "x" * 40])
    for name, shape, t, arr in ts:
        w.add_tensor(name, shape, t, arr)
    w.write()
    return (_scratch() / "seed.gguf").read_bytes()


_SCRATCH: Path | None = None


def _scratch() -> Path:
    """One scratch folder per process for seed construction (hypothesis strategies cannot
    use pytest fixtures)."""
    global _SCRATCH
    if _SCRATCH is None:
        import tempfile

        _SCRATCH = Path(tempfile.mkdtemp(prefix="fuzz_gguf_"))
    return _SCRATCH


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.gguf"))


# --------------------------------------------------------------------------- structure-aware mutation


INTERESTING = [0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 31, 32, 63, 64, 65, 255, 256, 4095, 4096,
               2**16 - 1, 2**16, 2**29, 2**30 - 1, 2**30, 2**30 + 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
               2**61, 2**62, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1]


@dataclass
class Slot:
    """One structural field of a parsed file: where it is, its width, what it is."""

    offset: int
    width: int  # bytes: 4 or 8
    what: str


def structural_slots(path) -> tuple[list[Slot], str, int]:
    """The fields a mutation can aim at, from the reader's own offsets."""
    with gguflite.open(path) as f:
        L = f.len_size
        slots = [Slot(4, 4, "version"), Slot(8, L, "n_tensors"), Slot(8 + L, L, "n_kv")]
        for fld in f.fields.values():
            slots.append(Slot(fld.offset, L, f"key length {fld.key}"))
            slots.append(Slot(fld.value_offset, 4, f"value type {fld.key}"))
            v = fld.value_offset + 4
            if fld.type == V.STRING:
                slots.append(Slot(v, L, f"string length {fld.key}"))
            elif fld.type == V.ARRAY:
                slots.append(Slot(v, 4, f"element type {fld.key}"))
                slots.append(Slot(v + 4, L, f"array count {fld.key}"))
                if fld.elem_type == V.STRING and len(fld.value):
                    slots.append(Slot(v + 4 + L, L, f"first string length {fld.key}"))
                if fld.elem_type == V.ARRAY and len(fld.value):
                    slots.append(Slot(v + 4 + L, 4, f"inner element type {fld.key}"))
                    slots.append(Slot(v + 8 + L, L, f"inner count {fld.key}"))
            elif fld.key == "general.alignment":
                slots.append(Slot(v, 4, "alignment value"))
            else:
                slots.append(Slot(v, min(VALUE_WIDTH.get(fld.type, 4), 8), f"scalar {fld.key}"))
        for t in f.tensors.values():
            p = t.info_offset
            slots.append(Slot(p, L, f"name length {t.name}"))
            p += L + len(t.name.encode("utf-8"))
            slots.append(Slot(p, 4, f"n_dims {t.name}"))
            p += 4
            for i in range(len(t.shape)):
                slots.append(Slot(p, L, f"ne[{i}] {t.name}"))
                p += L
            slots.append(Slot(p, 4, f"type {t.name}"))
            slots.append(Slot(p + 4, 8, f"offset {t.name}"))
        return slots, f.endian, f.size


VALUE_WIDTH = {V.UINT8: 1, V.INT8: 1, V.BOOL: 1, V.UINT16: 2, V.INT16: 2, V.UINT32: 4, V.INT32: 4,
               V.FLOAT32: 4, V.UINT64: 8, V.INT64: 8, V.FLOAT64: 8}
_WIDTH_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


@st.composite
def structured_mutations(draw, raw: bytes, path) -> bytes:
    """Overwrite 1-3 structural fields of ``raw`` (a file the reader accepts) with
    interesting values, then maybe apply one byte-level mutation."""
    Path(path).write_bytes(raw)
    slots, endian, size = structural_slots(path)
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        s = draw(st.sampled_from(slots))
        old = int.from_bytes(out[s.offset:s.offset + s.width], "little" if endian == "<" else "big")
        v = draw(st.one_of(
            st.sampled_from(INTERESTING),
            st.sampled_from([old + 1, old - 1, old * 2, size, size - s.offset, size + 1, old ^ (1 << 31)]),
            st.integers(0, 2**64 - 1),
        ))
        if s.what == "version":
            v = draw(st.sampled_from([0, 1, 2, 3, 4, 0x00030000, 0x03000000, 0x01000000, 0xFFFF0000, v]))
        v %= 1 << (8 * s.width)
        struct.pack_into(endian + _WIDTH_FMT[s.width], out, s.offset, v)
    if draw(st.booleans()):
        out = bytearray(draw(byte_mutation(bytes(out))))
    return bytes(out)


@st.composite
def byte_mutation(draw, raw: bytes) -> bytes:
    """One byte-level edit: flips, an interesting integer, insert, delete, truncate, append,
    or an invalid UTF-8 sequence written over some bytes."""
    out = bytearray(raw)
    n = max(len(out), 1)
    kind = draw(st.sampled_from(["flip", "int", "insert", "delete", "truncate", "append", "utf8"]))
    lo = 4 if n > 8 and draw(st.integers(0, 9)) else 0  # mostly past the magic
    pos = draw(st.integers(lo, n - 1))
    if kind == "flip" and out:
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(lo, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "int":
        width = draw(st.sampled_from([1, 2, 4, 8]))
        v = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
        out[pos:pos + width] = v.to_bytes(width, draw(st.sampled_from(["little", "big"])))
    elif kind == "insert":
        out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        del out[pos:pos + draw(st.integers(1, 16))]
    elif kind == "truncate":
        del out[pos:]
    elif kind == "append":
        out += draw(st.binary(min_size=1, max_size=64))
    else:
        out[pos:pos + 3] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]))
    return bytes(out)


# --------------------------------------------------------------------------- the tests


def _structured(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("mut")
    raw = data.draw(seed_files())
    check_bytes(raw, d / "seed.gguf")  # the seed itself reads
    mutated = data.draw(structured_mutations(raw, d / "scratch.gguf"))
    check_bytes(mutated, d / "m.gguf")


def _bytes_of_corpus(data, tmp_path_factory):
    files = corpus_files()
    assert files, "tests/fuzz_corpus is empty: run python tests/make_fuzz_corpus.py"
    d = tmp_path_factory.mktemp("cor")
    raw = data.draw(st.sampled_from(files)).read_bytes()
    for _ in range(data.draw(st.integers(1, 3))):
        raw = data.draw(byte_mutation(raw))
    check_bytes(raw, d / "c.gguf")


_SHORT = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_LONG = settings(max_examples=max(settings.default.max_examples * FUZZ_SCALE, 100), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SHORT
@given(data=st.data())
def test_structured_mutations_end_in_a_read_or_a_gguferror(data, tmp_path_factory):
    _structured(data, tmp_path_factory)


@_SHORT
@given(data=st.data())
def test_byte_mutations_of_the_corpus_end_in_a_read_or_a_gguferror(data, tmp_path_factory):
    _bytes_of_corpus(data, tmp_path_factory)


@pytest.mark.fuzz
@pytest.mark.slow
@_LONG
@given(data=st.data())
def test_fuzz_structured_mutations(data, tmp_path_factory):
    _structured(data, tmp_path_factory)


@pytest.mark.fuzz
@pytest.mark.slow
@_LONG
@given(data=st.data())
def test_fuzz_byte_mutations_of_the_corpus(data, tmp_path_factory):
    _bytes_of_corpus(data, tmp_path_factory)


@pytest.mark.fuzz
@pytest.mark.slow
@_LONG
@given(raw=st.binary(max_size=512))
def test_fuzz_random_bytes_behind_the_magic(raw, tmp_path_factory):
    check_bytes(b"GGUF" + raw, tmp_path_factory.mktemp("rnd") / "r.gguf")


# --------------------------------------------------------------------------- amplification


def _peak_during(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_opening_many_empty_nested_arrays_allocates_about_the_file_size(tmp_path):
    """20k empty inner arrays (12 bytes each in the file) must not cost a Python object
    each beyond what the file's size allows."""
    from tests.gguf_builders import Raw

    r, n = Raw(), 20_000
    inner = r.p("I", V.UINT8) + r.p("Q", 0)
    p = tmp_path / "nested.gguf"
    p.write_bytes(r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.ARRAY) + r.p("Q", n) + inner * n)
    size = p.stat().st_size

    def go():
        with gguflite.open(p) as f:
            assert len(f.fields["k"].value) == n

    peak = _peak_during(go)
    assert peak <= 2 * size + ALLOC_SLACK, f"peak {peak} bytes for a {size}-byte file"


def test_validating_many_empty_strings_allocates_about_the_file_size(tmp_path):
    """``validate()`` walks every string of a 50k-string array (8 bytes each in the file);
    its docstring promises about the file's size in allocations."""
    from tests.gguf_builders import Raw

    r, n = Raw(), 50_000
    p = tmp_path / "strings.gguf"
    p.write_bytes(r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.STRING) + r.p("Q", n) + r.p("Q", 0) * n)
    size = p.stat().st_size
    peak = _peak_during(lambda: gguflite.validate(p))
    assert peak <= 2 * size + ALLOC_SLACK, f"peak {peak} bytes for a {size}-byte file"


# --------------------------------------------------------------------------- the committed corpus


def _manifest() -> dict[str, str]:
    import json

    path = CORPUS / "MANIFEST.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("name", sorted(n for n in _manifest() if n.endswith(".gguf")))
def test_every_corpus_file_gives_its_expected_outcome_within_the_bounds(name):
    """Each crafted file (tests/make_fuzz_corpus.py says why it is there) ends exactly as
    the manifest says: read, or the named GGUFError subclass; within time and memory."""
    expect = _manifest()[name].split("|")
    out = run_input(CORPUS / name)
    got = "ok" if out.error is None else type(out.error).__name__
    assert got in expect, f"{name}: expected {expect}, got {got}: {out.error}"
    if out.summary is not None and name.startswith("valid_v3_le"):
        compare_with_gguf_py(CORPUS / name, out.summary)


def test_the_corpus_is_what_make_fuzz_corpus_writes(tmp_path):
    """The committed files are exactly what the generator writes (so their reasons in
    make_fuzz_corpus.py stay true)."""
    from tests.make_fuzz_corpus import main

    main([str(tmp_path)])
    assert _manifest() == __import__("json").loads((tmp_path / "MANIFEST.json").read_text())
    for name in _manifest():
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name


@pytest.mark.slow
def test_opening_a_megabyte_of_nested_arrays_takes_under_a_second(tmp_path):
    from tests.gguf_builders import Raw

    r, n = Raw(), 100_000
    inner = r.p("I", V.UINT8) + r.p("Q", 0)
    p = tmp_path / "nested.gguf"
    p.write_bytes(r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.ARRAY) + r.p("Q", n) + inner * n)
    t0 = time.process_time()
    with gguflite.open(p) as f:
        assert len(f.fields["k"].value) == n
    assert time.process_time() - t0 < TIME_LIMIT


def test_the_atheris_entry_point_runs_the_same_property_over_the_corpus():
    from tests.atheris_gguf import TestOneInput

    for name in sorted(n for n in _manifest() if n.endswith(".gguf"))[:20]:
        TestOneInput((CORPUS / name).read_bytes())


def test_a_zero_size_tensor_with_huge_other_dims_gives_its_data_or_a_gguferror(tmp_path):
    """Found by atheris: ne=[0, 2^62] f32 has 0 elements (ggml accepts it) but numpy cannot
    hold the shape; TensorInfo.data raised numpy's ValueError until the reader refused it."""
    from tests.gguf_builders import Raw, pad_to

    r = Raw()
    p = tmp_path / "z.gguf"
    p.write_bytes(pad_to(r.header(1, 0) + r.tensor_info("t", [0, 2**62], 0, 0)))
    try:
        with gguflite.open(p) as f:
            assert f.tensors["t"].data.size == 0
    except GGUFError:
        pass
