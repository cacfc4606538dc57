"""Hostile files: truncations at every offset, bit flips, huge counts and lengths, wrapped
sizes, overlapping tensors.  Opening (and then using) such a file raises only GGUFError,
fails fast and allocates no more than about the file's size."""
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gguflite
from gguflite import GGUFError, GGUFWriter, ValueType as V
from gguflite.errors import (BadTensorInfo, BadValue, DuplicateKey, TensorOutOfBounds, TruncatedFile)
from tests.gguf_builders import Raw, pad_to

pytestmark = pytest.mark.timeout(120)


def sample_file(path, endian="<") -> bytes:
    """A small file with every value type, a nested-free string array and three tensors."""
    w = GGUFWriter(path, endian=endian, alignment=16)
    w.add("general.architecture", "llama")
    for t in V:
        if t not in (V.ARRAY, V.STRING, V.BOOL):
            w.add(f"k.{t.name}", 1, t)
    w.add("k.bool", True)
    w.add("k.str", "héllo")
    w.add("k.tok", ["a", "", "bc"])
    w.add("k.f", [1.5, 2.5])
    w.add("k.b", [True, False])
    w.add_tensor("a", (2, 3), "f32", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.add_tensor("q", (32,), "q8_0", np.arange(34, dtype=np.uint8))
    w.add_tensor("h", (5,), "f16", np.ones(5, np.float16))
    w.write()
    return path.read_bytes()


def use_everything(path):
    """Open, touch every value and tensor, validate: what a careless user would do."""
    with gguflite.open(path) as f:
        for k in f.metadata:
            v = f.metadata[k]
            if isinstance(v, gguflite.StringArray):
                v.tolist()
        for t in f.tensors.values():
            t.data.tobytes()
        f.validate()


def open_only_gguf_errors(path):
    try:
        use_everything(path)
    except GGUFError:
        return False
    return True


@pytest.mark.parametrize("endian", ["<", ">"])
def test_truncation_at_every_offset_raises_only_gguferror(tmp_path, endian):
    raw = sample_file(tmp_path / "ok.gguf", endian)
    with gguflite.open(tmp_path / "ok.gguf") as f:
        data_end = max(t.abs_offset + t.nbytes for t in f.tensors.values())
    p = tmp_path / "cut.gguf"
    for n in range(len(raw)):
        p.write_bytes(raw[:n])
        ok = open_only_gguf_errors(p)
        assert ok == (n >= data_end), n  # only the trailing padding may go


@pytest.mark.slow
@settings(max_examples=300)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4))
def test_random_bit_flips_raise_only_gguferror(tmp_path_factory, flips):
    d = tmp_path_factory.mktemp("flip")
    raw = bytearray(sample_file(d / "ok.gguf"))
    for pos, bit in flips:
        raw[pos % len(raw)] ^= 1 << bit
    (d / "bad.gguf").write_bytes(bytes(raw))
    open_only_gguf_errors(d / "bad.gguf")


@settings(max_examples=200)
@given(data=st.binary(min_size=0, max_size=200))
def test_random_bytes_after_a_valid_header_raise_only_gguferror(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("rnd") / "r.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<I", 3) + data)
    open_only_gguf_errors(p)


r = Raw()
HUGE = 2**64 - 1

HOSTILE = {
    # the 43-byte file that makes gguf-py hang: an array declaring 2^63 elements
    "array of 2^63 elements": (r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.UINT8) + r.p("Q", 2**63), BadValue),
    "array just under the 2^30 limit but past the end":
        (r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.UINT64) + r.p("Q", 2**30), TruncatedFile),
    "string array of 2^29 strings": (r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.STRING) + r.p("Q", 2**29), TruncatedFile),
    "nested array of 2^29 arrays": (r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.ARRAY) + r.p("Q", 2**29), TruncatedFile),
    "string of 2^64-1 bytes": (r.header(0, 1) + r.p("Q", HUGE) + b"k", BadValue),
    "string of 1 GiB + 1 bytes": (r.header(0, 1) + r.string("k") + r.p("I", V.STRING) + r.p("Q", 2**30 + 1), BadValue),
    "string past the end": (r.header(0, 1) + r.p("Q", 100) + b"k", TruncatedFile),
    "2^64-1 KV pairs": (r.header(0, HUGE) + r.kv("k", V.UINT8, 1), TruncatedFile),
    "2^64-1 tensors": (r.header(HUGE, 0) + r.tensor_info("t", [1], 0, 0), TruncatedFile),
    "more KV pairs than present": (r.header(0, 3) + r.kv("k", V.UINT8, 1), TruncatedFile),
    "value type 13": (r.header(0, 1) + r.string("k") + r.p("I", 13), BadValue),
    "element type 2^32-1": (r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", 2**32 - 1) + r.p("Q", 0), BadValue),
    "empty key": (r.header(0, 1) + r.kv("", V.UINT8, 1), BadValue),
    "key not UTF-8": (r.header(0, 1) + r.kv(b"\xff", V.UINT8, 1), BadValue),
    "bool 2": (r.header(0, 1) + r.kv("k", V.BOOL, True)[:-1] + b"\x02", BadValue),
    "bool array with 7": (r.header(0, 1) + r.kv_array("k", V.UINT8, [0, 7])[:-15] + r.p("I", V.BOOL) + r.p("Q", 2) + b"\x00\x07", BadValue),
    "nesting 100 deep": (r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + (r.p("I", V.ARRAY) + r.p("Q", 1)) * 100 + r.p("I", V.UINT8) + r.p("Q", 0), BadValue),
    "duplicate key": (r.header(0, 2) + r.kv("k", V.UINT8, 1) * 2, DuplicateKey),
    "5 dims": (pad_to(r.header(1, 0) + r.tensor_info("t", [1] * 5, 0, 0)) + b"\0" * 32, BadTensorInfo),
    "2^32-1 dims": (r.header(1, 0) + r.string("t") + r.p("I", 2**32 - 1), BadTensorInfo),
    "ne of 2^63": (pad_to(r.header(1, 0) + r.tensor_info("t", [2**63], 0, 0)), BadTensorInfo),
    "element count wrapping 2^64": (pad_to(r.header(1, 0) + r.tensor_info("t", [2**32, 2**32], 0, 0)), BadTensorInfo),
    "element count of int64 max": (pad_to(r.header(1, 0) + r.tensor_info("t", [2**62, 2], 0, 0)), BadTensorInfo),
    "byte size past the end": (pad_to(r.header(1, 0) + r.tensor_info("t", [2**61], 0, 0)) + b"\0" * 32, TensorOutOfBounds),
    "offset 2^64-1": (pad_to(r.header(1, 0) + r.tensor_info("t", [1], 0, HUGE)) + b"\0" * 32, TensorOutOfBounds),
    "overlapping tensors": (pad_to(r.header(2, 0) + r.tensor_info("a", [8], 0, 0) + r.tensor_info("b", [8], 0, 0)) + b"\0" * 64, TensorOutOfBounds),
    "gap between tensors": (pad_to(r.header(2, 0) + r.tensor_info("a", [8], 0, 0) + r.tensor_info("b", [8], 0, 64)) + b"\0" * 96, TensorOutOfBounds),
    "unaligned offset": (pad_to(r.header(1, 0) + r.tensor_info("a", [1], 0, 4)) + b"\0" * 32, TensorOutOfBounds),
    "64-byte name": (pad_to(r.header(1, 0) + r.tensor_info("x" * 64, [1], 0, 0)) + b"\0" * 32, BadTensorInfo),
    "ne[0] not a multiple of the block": (pad_to(r.header(1, 0) + r.tensor_info("q", [31], 8, 0)) + b"\0" * 64, BadTensorInfo),
    "unknown type past the end": (pad_to(r.header(2, 0) + r.tensor_info("u", [1], 77, 0) + r.tensor_info("b", [1], 0, 2**40)) + b"\0" * 32, TensorOutOfBounds),
    "unknown type then an earlier offset": (pad_to(r.header(2, 0) + r.tensor_info("u", [1], 77, 32) + r.tensor_info("b", [1], 0, 0)) + b"\0" * 64, TensorOutOfBounds),
    "data section missing": (pad_to(r.header(1, 0) + r.tensor_info("a", [0], 0, 0))[:-1], TruncatedFile),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_headers_fail_fast_with_a_specific_error_and_bounded_memory(tmp_path, name):
    raw, error = HOSTILE[name]
    p = tmp_path / "h.gguf"
    p.write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(error) as e:
            gguflite.open(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024 + 16 * len(raw), f"{name}: peak allocation {peak} bytes"
    assert e.value.offset is not None and 0 <= e.value.offset <= len(raw)
    assert str(p) in str(e.value)


def test_many_tiny_strings_are_walked_without_per_string_objects(tmp_path):
    n = 200_000
    body = r.p("Q", 0) * n  # 200k empty strings: 1.6 MB
    p = tmp_path / "many.gguf"
    p.write_bytes(r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.STRING) + r.p("Q", n) + body)
    tracemalloc.start()
    try:
        with gguflite.open(p) as f:
            s = f.metadata["k"]
            assert len(s) == n
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # no per-string objects at open


def test_validate_accepts_a_good_file_and_rejects_a_bad_one(tmp_path):
    sample_file(tmp_path / "ok.gguf")
    gguflite.validate(tmp_path / "ok.gguf")
    (tmp_path / "bad.gguf").write_bytes(HOSTILE["overlapping tensors"][0])
    with pytest.raises(TensorOutOfBounds):
        gguflite.validate(tmp_path / "bad.gguf")


def test_a_zero_size_tensor_whose_shape_numpy_cannot_hold_raises_gguferror_on_access(tmp_path):
    p = tmp_path / "z.gguf"
    p.write_bytes(pad_to(r.header(1, 0) + r.tensor_info("t", [0, 2**62], 0, 0)))
    with gguflite.open(p) as f:  # ggml accepts it: zero elements
        assert f.tensors["t"].nbytes == 0
        with pytest.raises(BadTensorInfo, match="numpy cannot represent"):
            f.tensors["t"].data
