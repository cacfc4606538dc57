"""Fuzzing the safetensors reader (``gguflite.convert.safetensors.SafetensorsFile``).

Property (for every input): opening the file and loading every tensor either succeeds
with a result the ``safetensors`` package (0.x, Rust; written by others) agrees with, or
raises ``CheckpointError``; nothing else, within TIME_LIMIT seconds and the file's size
plus ALLOC_SLACK bytes of allocations.

Inputs: valid files written by ``safetensors.numpy.save``, mutated structurally through
their JSON header (dtypes, shapes, data_offsets, extra and duplicate entries,
``__metadata__``, the u64 header size: header-size bombs, offsets past the end,
overlapping ranges, bad dtypes, non-JSON, deep nesting, invalid UTF-8) and at the byte
level; plus the committed corpus (tests/fuzz_corpus/safetensors).

The bounds themselves (time, allocation, the error naming the file) are
tests/fuzz_bounds.py's, shared with the other fuzzers.  Findings so far are fixed and
pinned by the plain tests at the end.
"""
from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from gguflite.convert.safetensors import SafetensorsFile
from gguflite.errors import CheckpointError
from tests.fuzz_bounds import ALLOC_SLACK, run_bounded
from tests.fuzz_gguf import FUZZ_SCALE

CORPUS = Path(__file__).parent / "fuzz_corpus"
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL",
          "F8_E4M3", "F8_E5M2"]

pytestmark = pytest.mark.timeout(900)


# --------------------------------------------------------------------------- the property


def use_everything(path) -> dict:
    with SafetensorsFile(path) as f:
        out = {}
        for name, t in f.tensors.items():
            a = t.load()
            assert a.nbytes == t.nbytes and tuple(a.shape) == t.shape
            out[name] = (t.dtype, t.shape, a.tobytes() if a.nbytes <= 4096 else None)
            del a
        return out


def run_input(path):
    """(summary or None, CheckpointError or None), within the bounds."""
    out = run_bounded(path, use_everything, CheckpointError)
    return out.result, out.error


def check_bytes(raw: bytes, path) -> None:
    Path(path).write_bytes(raw)
    summary, error = run_input(path)
    event("read" if summary is not None else "CheckpointError")
    if summary is not None:
        compare_with_safetensors(path, summary)


def compare_with_safetensors(path, summary: dict) -> None:
    """The Rust reader must accept what we accept and see the same tensors: any
    disagreement is a bug on one side and fails the test."""
    from safetensors import safe_open

    if any(d in ("BF16", "F8_E4M3", "F8_E5M2") for d, _, _ in summary.values()):
        return  # no numpy dtype for these in safetensors.numpy
    try:
        with safe_open(str(path), framework="numpy") as g:
            keys = set(g.keys())
            theirs = {k: g.get_tensor(k) for k in keys}
    except Exception as e:  # noqa: BLE001  (any refusal of a file we accepted is the finding)
        pytest.fail(f"safetensors refuses a file gguflite accepted: {type(e).__name__}: {e}")
    assert keys == set(summary)
    for k, (dtype, shape, raw) in summary.items():
        assert tuple(theirs[k].shape) == shape, k
        if raw is not None:
            assert theirs[k].tobytes() == raw, k


# --------------------------------------------------------------------------- inputs


@st.composite
def valid_files(draw) -> tuple[dict, bytes]:
    """(header dict, file bytes) written by safetensors.numpy.save."""
    from safetensors.numpy import save

    arrays = {}
    for i in range(draw(st.integers(0, 4))):
        dt = draw(st.sampled_from(["<f4", "<f2", "<f8", "<i8", "<i4", "<i2", "i1", "u1", "<u2", "?"]))
        shape = tuple(draw(st.lists(st.integers(0, 3), min_size=0, max_size=3)))
        n = int(np.prod(shape))
        arrays[f"t{i}"] = np.frombuffer(draw(st.binary(min_size=n * np.dtype(dt).itemsize,
                                                       max_size=n * np.dtype(dt).itemsize)),
                                        dtype=np.uint8).view(dt).reshape(shape) if dt != "?" else \
            (np.frombuffer(draw(st.binary(min_size=n, max_size=n)), np.uint8) & 1).astype("?").reshape(shape)
    # (safetensors 0.8.0 writes invalid JSON for no tensors and an empty metadata dict)
    meta = draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=5), min_size=1, max_size=2)))
    raw = save(arrays, metadata=meta)
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw


JSON_JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)
BIG = [0, 1, 2, 7, 8, 2**31, 2**32 - 1, 2**32, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100, -1, -(2**63)]


@st.composite
def header_mutation(draw, header: dict) -> dict:
    """One structural change to a parsed header."""
    h = json.loads(json.dumps(header))
    names = [k for k, v in h.items() if k != "__metadata__" and isinstance(v, dict)
             and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    kind = draw(st.sampled_from(["dtype", "shape", "offsets", "extra", "dup_range", "metadata", "entry", "junk"]))
    if names and kind in ("dtype", "shape", "offsets", "extra", "entry"):
        e = h[draw(st.sampled_from(names))]
        if kind == "dtype":
            e["dtype"] = draw(st.one_of(st.sampled_from(DTYPES + ["F128", "f32", "", "Q4_0"]), JSON_JUNK))
        elif kind == "shape":
            e["shape"] = draw(st.one_of(
                st.lists(st.sampled_from(BIG + [3, 4]), max_size=5),
                st.just([1] * draw(st.integers(33, 80))),
                st.just([0] + [2**40] * draw(st.integers(1, 3))),
                st.just([0] * draw(st.integers(60, 80))),
                JSON_JUNK))
        elif kind == "offsets":
            b, en = e["data_offsets"]
            near = [en + 1, en - 1] if isinstance(en, int) else []  # an earlier mutation may have made them junk
            e["data_offsets"] = draw(st.one_of(
                st.tuples(st.sampled_from(BIG + [b, en]), st.sampled_from(BIG + [b, en] + near)).map(list),
                st.just([en, b]), st.just([b]), st.just([b, en, en]), JSON_JUNK))
        elif kind == "extra":
            e[draw(st.text(min_size=1, max_size=4))] = draw(JSON_JUNK)
        else:
            h[draw(st.sampled_from(names))] = draw(JSON_JUNK)
    elif kind == "dup_range" and names:
        src = h[draw(st.sampled_from(names))]
        h[draw(st.text(min_size=1, max_size=4))] = json.loads(json.dumps(src))  # overlapping range
    elif kind == "metadata":
        h["__metadata__"] = draw(JSON_JUNK)
    else:
        h[draw(st.text(max_size=4))] = draw(JSON_JUNK)
    return h


def assemble(header, data: bytes, size_field: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if size_field is None else size_field
    return struct.pack("<Q", n % 2**64) + raw + data


@st.composite
def mutated_files(draw) -> bytes:
    header, raw = draw(valid_files())
    n = struct.unpack("<Q", raw[:8])[0]
    data = raw[8 + n:]
    kind = draw(st.sampled_from(["header", "header", "header", "size", "text", "data", "bytes"]))
    if kind == "header":
        for _ in range(draw(st.integers(1, 3))):
            header = draw(header_mutation(header))
        return assemble(header, data)
    if kind == "size":  # header-size bombs and off-by-ones
        size = draw(st.sampled_from([n - 1, n + 1, 0, 2**64 - 1, 2**63, 100_000_001, 100_000_000, len(raw), len(raw) - 7]))
        return assemble(raw[8:8 + n], data, size)
    if kind == "text":  # not JSON, not UTF-8, deep nesting, numbers JSON can barely hold
        text = raw[8:8 + n]
        text = draw(st.sampled_from([
            text[: max(len(text) - 1, 0)], text.replace(b"{", b"[", 1), b"\xff" + text, text + b"\x00",
            b"[" * 5000 + b"]" * 5000, b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}", b"nan", b"",
            text.replace(b"0", b"1" * 5000, 1), text.replace(b'"', b"'"), b"\xef\xbb\xbf" + text,
            text.replace(b"}", b', "\xed\xa0\x80": 1}', 1)]))
        return assemble(text, data)
    if kind == "data":
        return assemble(raw[8:8 + n], draw(st.sampled_from([data[:-1], data + b"\0", b"", data * 2])))
    from tests.fuzz_gguf import byte_mutation

    return draw(byte_mutation(raw))


# --------------------------------------------------------------------------- the tests


def _fuzz_once(raw: bytes, tmp_path_factory) -> None:
    check_bytes(raw, tmp_path_factory.mktemp("st") / "x.safetensors")


_SHORT = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_LONG = settings(max_examples=max(settings.default.max_examples * FUZZ_SCALE, 100), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SHORT
@given(raw=mutated_files())
def test_mutated_files_end_in_a_read_the_rust_reader_agrees_with_or_a_checkpointerror(raw, tmp_path_factory):
    _fuzz_once(raw, tmp_path_factory)


@pytest.mark.fuzz
@pytest.mark.slow
@_LONG
@given(raw=mutated_files())
def test_fuzz_mutated_safetensors_files(raw, tmp_path_factory):
    _fuzz_once(raw, tmp_path_factory)


@pytest.mark.fuzz
@pytest.mark.slow
@_LONG
@given(raw=st.binary(max_size=300))
def test_fuzz_random_bytes_as_safetensors(raw, tmp_path_factory):
    _fuzz_once(raw, tmp_path_factory)


def _manifest() -> dict[str, str]:
    p = CORPUS / "MANIFEST.json"
    return {k: v for k, v in json.loads(p.read_text()).items() if k.startswith("safetensors/")} if p.exists() else {}


@pytest.mark.parametrize("name", sorted(_manifest()))
def test_every_safetensors_corpus_file_gives_its_expected_outcome(name):
    summary, error = run_input(CORPUS / name)
    got = "ok" if summary is not None else type(error).__name__
    assert got in _manifest()[name].split("|"), f"{name}: got {got}: {error}"


def test_a_header_size_bomb_reads_no_more_than_the_file(tmp_path):
    """A header size just under the cap in a tiny file: refused before anything is read."""
    p = tmp_path / "bomb.safetensors"
    p.write_bytes(assemble(b"{}", b"", 99_999_999))
    summary, error = run_input(p)
    assert error is not None and "past the end" in str(error)


def test_a_valid_file_with_every_dtype_agrees_with_the_rust_reader(tmp_path):
    from safetensors.numpy import save

    arrays = {d: np.arange(6).astype(d).reshape(2, 3) for d in ["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1",
                                                                 "<u8", "<u4", "<u2", "u1", "?"]}
    p = tmp_path / "all.safetensors"
    p.write_bytes(save(arrays))
    summary, error = run_input(p)
    assert error is None
    compare_with_safetensors(p, summary)


# --------------------------------------------------------------------------- findings (fixed; were strict xfails)


def _refused(tmp_path, raw: bytes):
    p = tmp_path / "f.safetensors"
    p.write_bytes(raw)
    with pytest.raises(CheckpointError):
        with SafetensorsFile(p) as f:
            for t in f.tensors.values():
                t.load()


def test_a_deeply_nested_json_header_is_refused_with_a_checkpointerror(tmp_path):
    _refused(tmp_path, assemble(b"[" * 100_000 + b"]" * 100_000, b""))


def test_an_unhashable_dtype_is_refused_with_a_checkpointerror(tmp_path):
    _refused(tmp_path, assemble({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4))


def test_a_zero_size_tensor_with_a_huge_dimension_is_refused_or_loaded(tmp_path):
    _refused(tmp_path, assemble({"a": {"dtype": "F32", "shape": [0, 2**63], "data_offsets": [0, 0]}}, b""))


def test_a_shape_with_more_dims_than_numpy_allows_is_refused(tmp_path):
    _refused(tmp_path, assemble({"a": {"dtype": "F32", "shape": [1] * 70, "data_offsets": [0, 4]}}, b"\0" * 4))


def test_a_header_of_many_tiny_json_values_allocates_about_the_file_size(tmp_path):
    p = tmp_path / "lists.safetensors"
    p.write_bytes(assemble(b'{"x": [' + b",".join([b"[]"] * 330_000) + b"]}", b""))
    size = p.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError):
            SafetensorsFile(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 2 * size + ALLOC_SLACK, f"peak {peak} bytes for a {size}-byte file"


@pytest.mark.parametrize("meta", [[], "", 0, False])
def test_a_non_object_metadata_is_refused_like_the_rust_reader_does(tmp_path, meta):
    _refused(tmp_path, assemble({"__metadata__": meta}, b""))
