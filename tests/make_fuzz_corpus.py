"""Write the committed fuzz corpus: small crafted GGUF and safetensors files, each with the
outcome it must have, into tests/fuzz_corpus/ (``MANIFEST.json``: file -> "ok" or the
GGUFError subclass(es) it must raise, "|"-separated when either is right).

    python tests/make_fuzz_corpus.py [OUTDIR]

The hostile files are built byte by byte with ``tests.gguf_builders.Raw`` (straight from
the format description, not with our writer); the valid ones (v1, v2, big-endian, odd
alignments, nested arrays, splits) with ``GGUFWriter`` and ``gguflite.split``.  The files
are the seeds of tests/fuzz_gguf.py's byte-level mutations and are run by
``test_corpus.py``-style checks in fuzz_gguf.py / fuzz_safetensors.py.  Deterministic:
running it again gives the same bytes.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gguflite import GGUFWriter, ValueType as V  # noqa: E402
from tests.gguf_builders import Raw, pad_to  # noqa: E402

HUGE = 2**64 - 1


def gguf_cases(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected outcome)."""
    r, r1, rb = Raw(), Raw(version=1), Raw(">")
    cases: dict[str, tuple[bytes, str]] = {}

    def add(name, raw, expect):
        assert name not in cases, name
        cases[name + ".gguf"] = (raw, expect)

    def written(name, expect="ok", **kw):
        p = tmp / "w.gguf"
        build = kw.pop("build")
        w = GGUFWriter(p, **kw)
        build(w)
        w.write()
        add(name, p.read_bytes(), expect)

    def everything(w):
        w.add("general.architecture", "llama")
        w.add("u8", 200, V.UINT8)
        w.add("i64", -(2**62), V.INT64)
        w.add("f64", 1.25, V.FLOAT64)
        w.add("b", True)
        w.add("s", "héllo")
        w.add("tok", ["a", "", "ßc"])
        w.add("ints", np.arange(5, dtype=np.int16))
        w.add_tensor("a", (2, 3), "f32", np.arange(6, dtype=np.float32).reshape(2, 3))
        w.add_tensor("q", (32,), "q8_0", np.arange(34, dtype=np.uint8))
        w.add_tensor("h", (5,), "f16", np.ones(5, np.float16))

    # ---- valid files in every version and byte order
    written("valid_v3_le", build=everything)
    written("valid_v3_be", build=everything, endian=">")
    written("valid_v2_le", build=everything, version=2)
    written("valid_v1_le", build=everything, version=1)
    written("valid_v1_be", build=everything, version=1, endian=">")
    written("valid_alignment_1", build=everything, alignment=1)
    written("valid_alignment_4096", build=everything, alignment=4096)
    written("valid_no_tensors", build=lambda w: w.add("k", "v"))
    written("valid_nested_arrays", build=lambda w: w.add("n", [[1, 2], [[3], [4, 5]], ["x"]], (V.ARRAY, V.ARRAY)),
            allow_nested=True)
    written("written_invalid_utf8_value", build=lambda w: w.add("s", b"a\xffb", V.STRING), expect="BadValue")  # validate()
    add("empty", b"", "TruncatedFile")
    add("three_bytes", b"GGU", "TruncatedFile")
    add("magic_only", b"GGUF", "TruncatedFile")
    add("bad_magic", b"GGML" + r.p("I", 3) + r.p("Q", 0) * 2, "BadMagic")
    add("lowercase_magic", b"gguf" + r.p("I", 3) + r.p("Q", 0) * 2, "BadMagic")
    add("header_only", r.header(0, 0), "ok")

    # ---- versions and byte orders
    add("version_0", r.header(0, 0, version=0), "BadVersion")
    add("version_4", r.header(0, 0, version=4), "BadVersion")
    add("version_2^32-1", r.header(0, 0, version=2**32 - 1), "BadVersion")
    add("be_version_4", rb.header(0, 0, version=4), "BadVersion")
    add("swapped_version_0xffff", b"GGUF" + struct.pack("<I", 0xFFFF0000) + r.p("Q", 0) * 2, "BadVersion")
    add("be_header_le_counts", b"GGUF" + struct.pack(">I", 3) + r.p("Q", 1) + r.p("Q", 0), "TruncatedFile")
    add("v1_header_read_as_v3", b"GGUF" + r.p("I", 3) + r1.p("I", 0) + r1.p("I", 1) + r1.kv("k", V.UINT8, 1),
        "TruncatedFile|BadValue")
    add("v1_2^32-1_kv", r1.header(0, 2**32 - 1) + r1.kv("k", V.UINT8, 1), "TruncatedFile")
    add("v1_string_2^32-1", r1.header(0, 1) + r1.p("I", 2**32 - 1) + b"k", "BadValue")
    add("be_valid_header_only", rb.header(0, 0), "ok")

    # ---- huge counts and lengths
    add("kv_count_2^64-1", r.header(0, HUGE) + r.kv("k", V.UINT8, 1), "TruncatedFile")
    add("kv_count_2^63", r.header(0, 2**63) + r.kv("k", V.UINT8, 1), "TruncatedFile")
    add("tensor_count_2^64-1", r.header(HUGE, 0) + r.tensor_info("t", [1], 0, 0), "TruncatedFile")
    add("tensor_count_wraps_entry_size", r.header(2**64 // 21 + 1, 0) + r.tensor_info("t", [1], 0, 0), "TruncatedFile")
    add("more_kv_than_present", r.header(0, 3) + r.kv("k", V.UINT8, 1), "TruncatedFile")
    add("key_length_2^64-1", r.header(0, 1) + r.p("Q", HUGE) + b"k", "BadValue")
    add("key_length_past_end", r.header(0, 1) + r.p("Q", 100) + b"k", "TruncatedFile")
    add("string_1GiB+1", r.header(0, 1) + r.string("k") + r.p("I", V.STRING) + r.p("Q", 2**30 + 1), "BadValue")
    add("string_wraps_position", r.header(0, 1) + r.string("k") + r.p("I", V.STRING) + r.p("Q", 2**64 - 8) + b"x" * 8,
        "BadValue")
    add("array_2^63_elements", r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.UINT8) + r.p("Q", 2**63),
        "BadValue")
    add("array_2^30_u64_past_end",
        r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.UINT64) + r.p("Q", 2**30), "TruncatedFile")
    add("array_bytes_wrap_2^64",
        r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.UINT64) + r.p("Q", 2**61), "BadValue")
    add("string_array_2^29", r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.STRING) + r.p("Q", 2**29),
        "TruncatedFile")
    add("string_array_element_past_end",
        r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.STRING) + r.p("Q", 2) + r.string("a")
        + r.p("Q", 100) + b"b", "TruncatedFile")
    add("string_array_element_2^40",
        r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.STRING) + r.p("Q", 2) + r.string("a")
        + r.p("Q", 2**40) + b"b", "BadValue")
    add("string_array_element_2^64-1",
        r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.STRING) + r.p("Q", 1) + r.p("Q", HUGE),
        "BadValue|TruncatedFile")

    # ---- value types, bools, UTF-8
    add("value_type_13", r.header(0, 1) + r.string("k") + r.p("I", 13), "BadValue")
    add("value_type_2^32-1", r.header(0, 1) + r.string("k") + r.p("I", 2**32 - 1), "BadValue")
    add("element_type_13", r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", 13) + r.p("Q", 0), "BadValue")
    add("bool_2", r.header(0, 1) + r.string("k") + r.p("I", V.BOOL) + b"\x02", "BadValue")
    add("bool_array_255", r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.BOOL) + r.p("Q", 3)
        + b"\x00\x01\xff", "BadValue")
    add("empty_key", r.header(0, 1) + r.kv("", V.UINT8, 1), "BadValue")
    add("duplicate_key", r.header(0, 2) + r.kv("k", V.UINT8, 1) + r.kv("k", V.INT8, 1), "DuplicateKey")
    add("key_invalid_utf8", r.header(0, 1) + r.kv(b"\xff\xfe", V.UINT8, 1), "BadValue")
    add("key_overlong_utf8", r.header(0, 1) + r.kv(b"\xc0\xaf", V.UINT8, 1), "BadValue")
    add("key_surrogate_utf8", r.header(0, 1) + r.kv(b"\xed\xa0\x80", V.UINT8, 1), "BadValue")
    add("key_truncated_utf8", r.header(0, 1) + r.kv(b"a\xe2\x82", V.UINT8, 1), "BadValue")
    add("value_invalid_utf8_validate", r.header(0, 1) + r.kv("k", V.STRING, b"\xf4\x90\x80\x80"), "BadValue")
    add("string_array_invalid_utf8_validate", r.header(0, 1) + r.kv_array("k", V.STRING, [b"ok", b"\xc3\x28"]),
        "BadValue")
    add("tensor_name_invalid_utf8", pad_to(r.header(1, 0) + r.tensor_info(b"\xff", [1], 0, 0)) + b"\0" * 32,
        "BadTensorInfo")

    # ---- nesting
    def nested(depth):
        return (r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + (r.p("I", V.ARRAY) + r.p("Q", 1)) * (depth - 1)
                + r.p("I", V.UINT8) + r.p("Q", 0))

    add("nested_depth_8", nested(8), "ok")
    add("nested_depth_9", nested(9), "BadValue")
    add("nested_depth_1000", nested(1000), "BadValue")
    add("nested_2^29_arrays", r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.ARRAY) + r.p("Q", 2**29),
        "TruncatedFile")
    add("nested_inner_count_2^63",
        r.header(0, 1) + r.string("k") + r.p("I", V.ARRAY) + r.p("I", V.ARRAY) + r.p("Q", 1) + r.p("I", V.UINT8)
        + r.p("Q", 2**63), "BadValue")

    # ---- alignment
    def aligned(vtype, value, fmt="I"):
        kv = r.string("general.alignment") + r.p("I", vtype) + r.p(fmt, value)
        return r.header(1, 1) + kv + r.tensor_info("t", [4], 0, 0)

    for v, expect in [(0, "BadAlignment"), (3, "BadAlignment"), (48, "BadAlignment"), (2**32 - 1, "BadAlignment")]:
        add(f"alignment_{v}", pad_to(aligned(V.UINT32, v)) + b"\0" * 32, expect)
    add("alignment_as_uint64", pad_to(aligned(V.UINT64, 32, "Q")) + b"\0" * 32, "BadAlignment")
    add("alignment_as_int32", pad_to(aligned(V.INT32, 32, "i")) + b"\0" * 32, "BadAlignment")
    add("alignment_as_string", pad_to(r.header(1, 1) + r.kv("general.alignment", V.STRING, "32")
                                      + r.tensor_info("t", [4], 0, 0)) + b"\0" * 32, "BadAlignment")
    add("alignment_2^31_padding_past_end", aligned(V.UINT32, 2**31) + b"\0" * 64, "TruncatedFile")
    add("alignment_2^31_no_tensors", r.header(0, 1) + r.kv("general.alignment", V.UINT32, 2**31), "ok")

    # ---- tensor infos
    add("tensor_5_dims", pad_to(r.header(1, 0) + r.tensor_info("t", [1] * 5, 0, 0)) + b"\0" * 32, "BadTensorInfo")
    add("tensor_2^32-1_dims", r.header(1, 0) + r.string("t") + r.p("I", 2**32 - 1), "BadTensorInfo")
    add("tensor_ne_2^63", pad_to(r.header(1, 0) + r.tensor_info("t", [2**63], 0, 0)), "BadTensorInfo")
    add("tensor_elements_wrap_2^64", pad_to(r.header(1, 0) + r.tensor_info("t", [2**32] * 2, 0, 0)), "BadTensorInfo")
    add("tensor_elements_wrap_to_zero", pad_to(r.header(1, 0) + r.tensor_info("t", [2**16] * 4, 0, 0)),
        "BadTensorInfo")
    add("tensor_bytes_wrap_size_t", pad_to(r.header(1, 0) + r.tensor_info("t", [2**62], 0, 0)) + b"\0" * 32,
        "BadTensorInfo")
    add("tensor_bytes_past_end", pad_to(r.header(1, 0) + r.tensor_info("t", [2**40], 0, 0)) + b"\0" * 32,
        "TensorOutOfBounds")
    add("tensor_offset_2^64-1", pad_to(r.header(1, 0) + r.tensor_info("t", [1], 0, HUGE)) + b"\0" * 32,
        "TensorOutOfBounds")
    add("tensor_offset_plus_size_wraps", pad_to(r.header(2, 0) + r.tensor_info("a", [8], 0, 0)
                                                + r.tensor_info("b", [8], 0, 2**64 - 16)) + b"\0" * 64,
        "TensorOutOfBounds")
    add("tensors_overlap", pad_to(r.header(2, 0) + r.tensor_info("a", [8], 0, 0) + r.tensor_info("b", [8], 0, 0))
        + b"\0" * 64, "TensorOutOfBounds")
    add("tensors_partly_overlap", pad_to(r.header(2, 0) + r.tensor_info("a", [16], 0, 0)
                                         + r.tensor_info("b", [8], 0, 32)) + b"\0" * 128, "TensorOutOfBounds")
    add("tensors_out_of_order", pad_to(r.header(2, 0) + r.tensor_info("a", [8], 0, 32) + r.tensor_info("b", [8], 0, 0))
        + b"\0" * 64, "TensorOutOfBounds")
    add("tensor_gap", pad_to(r.header(2, 0) + r.tensor_info("a", [8], 0, 0) + r.tensor_info("b", [8], 0, 64))
        + b"\0" * 96, "TensorOutOfBounds")
    add("tensor_unaligned_offset", pad_to(r.header(1, 0) + r.tensor_info("a", [1], 0, 4)) + b"\0" * 32,
        "TensorOutOfBounds")
    add("tensor_data_one_byte_short", pad_to(r.header(1, 0) + r.tensor_info("a", [8], 0, 0)) + b"\0" * 31,
        "TensorOutOfBounds")
    add("tensor_duplicate_name", pad_to(r.header(2, 0) + r.tensor_info("a", [8], 0, 0) + r.tensor_info("a", [8], 0, 32))
        + b"\0" * 64, "DuplicateTensor")
    add("tensor_name_64_bytes", pad_to(r.header(1, 0) + r.tensor_info("x" * 64, [1], 0, 0)) + b"\0" * 32,
        "BadTensorInfo")
    add("tensor_ne0_not_block_multiple", pad_to(r.header(1, 0) + r.tensor_info("q", [31], 8, 0)) + b"\0" * 64,
        "BadTensorInfo")
    add("tensor_unknown_type_ok", pad_to(r.header(2, 0) + r.tensor_info("u", [1], 77, 0) + r.tensor_info("b", [1], 0, 32))
        + b"\0" * 64, "ok")
    add("tensor_unknown_type_then_earlier_offset",
        pad_to(r.header(2, 0) + r.tensor_info("u", [1], 77, 32) + r.tensor_info("b", [1], 0, 0)) + b"\0" * 64,
        "TensorOutOfBounds")
    add("tensor_unknown_type_2^32-1_past_end",
        pad_to(r.header(2, 0) + r.tensor_info("u", [1], 2**32 - 1, 0) + r.tensor_info("b", [1], 0, 2**40)) + b"\0" * 32,
        "TensorOutOfBounds")
    add("data_section_missing", pad_to(r.header(1, 0) + r.tensor_info("a", [0], 0, 0))[:-1], "TruncatedFile")
    add("be_tensor_ok", pad_to(rb.header(1, 0) + rb.tensor_info("a", [2], 0, 0)) + struct.pack(">2f", 1.5, -2) + b"\0" * 24,
        "ok")
    add("v1_tensor_ne_u32", pad_to(r1.header(1, 0) + r1.tensor_info("a", [2**32 - 1, 2], 0, 0)) + b"\0" * 32,
        "TensorOutOfBounds")
    return cases


def split_cases(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """Split models, intact and broken (each case gets its own stem)."""
    from gguflite.split import split_file

    src = tmp / "whole.gguf"
    w = GGUFWriter(src)
    w.add("general.architecture", "llama")
    for i in range(3):
        w.add_tensor(f"t{i}", (4,), "f32", np.full(4, i, np.float32))
    w.write()
    cases: dict[str, tuple[bytes, str]] = {}

    def shards(stem):
        paths = split_file(src, str(tmp / stem), max_tensors=1)
        return [Path(p).read_bytes() for p in paths]

    s = shards("split_ok")
    for i, b in enumerate(s):
        cases[f"split_ok-{i + 1:05d}-of-00003.gguf"] = (b, "ok")
    s = shards("split_truncated")
    cases["split_truncated-00001-of-00003.gguf"] = (s[0], "TensorOutOfBounds|TruncatedFile")
    cases["split_truncated-00002-of-00003.gguf"] = (s[1][: len(s[1]) - 20], "TensorOutOfBounds|TruncatedFile")
    cases["split_truncated-00003-of-00003.gguf"] = (s[2], "ok")
    s = shards("split_missing")
    cases["split_missing-00001-of-00003.gguf"] = (s[0], "GGUFError")  # shard 2 is absent
    cases["split_missing-00003-of-00003.gguf"] = (s[2], "ok")
    s = shards("split_renumbered")
    cases["split_renumbered-00001-of-00002.gguf"] = (s[0], "BadSplit")  # the name says 2 shards, split.count 3
    cases["split_renumbered-00002-of-00002.gguf"] = (s[1], "ok")  # not the first shard: opens alone
    s = shards("split_swapped")
    cases["split_swapped-00001-of-00003.gguf"] = (s[0], "BadSplit")
    cases["split_swapped-00002-of-00003.gguf"] = (s[2], "ok")
    cases["split_swapped-00003-of-00003.gguf"] = (s[1], "ok")
    return cases


def safetensors_cases() -> dict[str, tuple[bytes, str]]:
    def st(header, data=b"", size=None):
        h = header if isinstance(header, bytes) else json.dumps(header).encode()
        return struct.pack("<Q", len(h) if size is None else size) + h + data

    f4 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    c = {
        "valid.safetensors": (st({"a": f4, "__metadata__": {"format": "pt"}}, b"\0" * 8), "ok"),
        "valid_empty.safetensors": (st({}), "ok"),
        "too_small.safetensors": (b"\x01\x00", "CheckpointError"),
        "header_size_2^64-1.safetensors": (st(b"{}", size=2**64 - 1), "CheckpointError"),
        "header_size_past_end.safetensors": (st(b"{}", size=1000), "CheckpointError"),
        "header_not_json.safetensors": (st(b"{'a': 1}"), "CheckpointError"),
        "header_not_utf8.safetensors": (st(b'{"\xff": 1}'), "CheckpointError"),
        "header_is_list.safetensors": (st([1, 2]), "CheckpointError"),
        "duplicate_name.safetensors": (st(b'{"a": %s, "a": %s}' % (json.dumps(f4).encode(), json.dumps(f4).encode()),
                                          b"\0" * 8), "CheckpointError"),
        "unknown_dtype.safetensors": (st({"a": {**f4, "dtype": "F128"}}, b"\0" * 8), "CheckpointError"),
        "offsets_past_end.safetensors": (st({"a": {**f4, "data_offsets": [0, 8]}}, b"\0" * 4), "CheckpointError"),
        "offsets_reversed.safetensors": (st({"a": {**f4, "data_offsets": [8, 0]}}, b"\0" * 8), "CheckpointError"),
        "offsets_2^64.safetensors": (st({"a": {"dtype": "U8", "shape": [2**64], "data_offsets": [0, 2**64]}}),
                                     "CheckpointError"),
        "overlap.safetensors": (st({"a": f4, "b": f4}, b"\0" * 8), "CheckpointError"),
        "gap.safetensors": (st({"a": f4, "b": {**f4, "data_offsets": [16, 24]}}, b"\0" * 24), "CheckpointError"),
        "size_mismatch.safetensors": (st({"a": {**f4, "shape": [3]}}, b"\0" * 8), "CheckpointError"),
        "negative_dim.safetensors": (st({"a": {**f4, "shape": [-2]}}, b"\0" * 8), "CheckpointError"),
        "float_offsets.safetensors": (st({"a": {**f4, "data_offsets": [0.0, 8.0]}}, b"\0" * 8), "CheckpointError"),
        "trailing_bytes.safetensors": (st({"a": f4}, b"\0" * 9), "CheckpointError"),
        "metadata_not_strings.safetensors": (st({"__metadata__": {"a": 1}}), "CheckpointError"),
        "extra_field.safetensors": (st({"a": {**f4, "evil": 1}}, b"\0" * 8), "CheckpointError"),
        "huge_int.safetensors": (st(b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 8]}}'),
                                 "CheckpointError"),
    }
    return c


def main(argv=None) -> None:
    import tempfile

    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).parent / "fuzz_corpus"
    out.mkdir(parents=True, exist_ok=True)
    (out / "safetensors").mkdir(exist_ok=True)
    manifest = {}
    with tempfile.TemporaryDirectory() as d:
        cases = {**gguf_cases(Path(d)), **split_cases(Path(d))}
    for name, (raw, expect) in cases.items():
        name = name.replace("^", "pow")
        (out / name).write_bytes(raw)
        manifest[name] = expect
    for name, (raw, expect) in safetensors_cases().items():
        name = name.replace("^", "pow")
        (out / "safetensors" / name).write_bytes(raw)
        manifest["safetensors/" + name] = expect
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum(os.path.getsize(out / n) for n in manifest)
    print(f"{len(manifest)} files, {total} bytes in {out}")


if __name__ == "__main__":
    main()
