"""The gguflite command: dump/get/set/rm/diff/convert-endian/split/merge, run in-process
through cli.main (and once as a real subprocess), checked against gguf-py 0.19.0."""
import argparse
import builtins
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import gguflite
from gguflite import GGUFWriter, ValueType as V, cli

import gguf


def make(path, endian="<", extra_types=()):
    rng = np.random.default_rng(0)
    w = GGUFWriter(path, endian=endian)
    w.add("general.architecture", "llama")
    w.add("llama.context_length", 4096, V.UINT32)
    w.add("general.name", "tiny")
    w.add("tokenizer.ggml.tokens", ["<s>", "a", "é"])
    w.add("tokenizer.ggml.scores", np.array([0.0, -1.5, 2.0], np.float32))
    w.add_tensor("w", (2, 3), "f32", rng.standard_normal((2, 3)).astype(np.float32))
    w.add_tensor("h", (4, 8), "f16", rng.standard_normal((4, 8)).astype(np.float16))
    for t in ("q4_0", "q8_0", "q4_k", "q6_k") + tuple(extra_types):
        traits = gguflite.TYPE_TRAITS[gguflite.types.parse_type(t)]
        n = 2 * traits.type_size
        w.add_tensor(f"x.{t}", (2, traits.block_size), t, rng.integers(0, 256, n, dtype=np.uint8))
    w.write()
    return str(path)


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_dump_json_has_exactly_metadata_and_tensors_matching_gguf_py(tmp_path, capsys):
    p = make(tmp_path / "m.gguf")
    rc, out, _ = run(capsys, "dump", "--json", p)
    assert rc == 0
    doc = json.loads(out)
    assert set(doc) == {"metadata", "tensors"}
    r = gguf.GGUFReader(p)
    assert doc["metadata"] == {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert doc["tensors"] == [{"name": t.name, "shape": [int(d) for d in reversed(t.shape.tolist())],
                               "type": t.tensor_type.name, "offset": int(t.data_offset) - int(r.tensors[0].data_offset)}
                              for t in r.tensors]
    assert all(set(t) == {"name", "shape", "type", "offset"} for t in doc["tensors"])


def test_dump_table_and_markdown_list_every_key_and_tensor(tmp_path, capsys):
    p = make(tmp_path / "m.gguf")
    for flag in ([], ["--markdown"]):
        rc, out, _ = run(capsys, "dump", *flag, p)
        assert rc == 0
        for k in ("llama.context_length", "tokenizer.ggml.tokens", "x.q6_k", "UINT32", "ARRAY[STRING]", "2x3"):
            assert k in out
    assert "| key | type | value |" in out


def test_get_prints_scalars_plainly_and_arrays_as_json(tmp_path, capsys):
    p = make(tmp_path / "m.gguf")
    assert run(capsys, "get", p, "general.name")[1] == "tiny\n"
    assert run(capsys, "get", p, "llama.context_length")[1] == "4096\n"
    assert json.loads(run(capsys, "get", p, "tokenizer.ggml.tokens")[1]) == ["<s>", "a", "é"]


def test_set_keeps_the_type_or_takes_the_given_one_and_gguf_py_agrees(tmp_path, capsys):
    p = make(tmp_path / "m.gguf")
    assert run(capsys, "set", p, "llama.context_length", "8192")[0] == 0
    assert run(capsys, "set", p, "general.name", "a longer name")[0] == 0
    assert run(capsys, "set", p, "new.eps", "1e-5", "--type", "f32")[0] == 0
    assert run(capsys, "set", p, "new.ids", "[1, 2, 3]", "--type", "array:u32")[0] == 0
    assert run(capsys, "set", p, "new.flag", "true")[0] == 0
    r = gguf.GGUFReader(p)
    f = r.fields
    assert f["llama.context_length"].contents() == 8192 and f["llama.context_length"].types == [gguf.GGUFValueType.UINT32]
    assert f["general.name"].contents() == "a longer name"
    assert f["new.eps"].types == [gguf.GGUFValueType.FLOAT32] and abs(f["new.eps"].contents() - 1e-5) < 1e-12
    assert f["new.ids"].contents() == [1, 2, 3] and f["new.ids"].types[-1] == gguf.GGUFValueType.UINT32
    assert f["new.flag"].contents() is True


def test_rm_deletes_keys(tmp_path, capsys):
    p = make(tmp_path / "m.gguf")
    assert run(capsys, "rm", p, "general.name", "tokenizer.ggml.scores")[0] == 0
    with gguflite.open(p) as f:
        assert "general.name" not in f.metadata and "tokenizer.ggml.scores" not in f.metadata
        assert "llama.context_length" in f.metadata


def test_diff_exits_0_for_equal_files_and_1_with_the_differences(tmp_path, capsys):
    a = make(tmp_path / "a.gguf")
    b = shutil.copy(a, tmp_path / "b.gguf")
    assert run(capsys, "diff", a, b)[:2] == (0, "")
    run(capsys, "set", b, "llama.context_length", "1")
    run(capsys, "rm", b, "general.name")
    with gguflite.Editor(b) as e:
        e.drop_tensor("w")
    rc, out, _ = run(capsys, "diff", a, b)
    assert rc == 1
    assert "~ llama.context_length: 4096 -> 1" in out and "- general.name" in out and "- tensor w" in out


def test_diff_sees_tensor_data_changes_and_ignores_byte_order(tmp_path, capsys):
    a = make(tmp_path / "a.gguf")
    be = tmp_path / "be.gguf"
    assert run(capsys, "convert-endian", a, "--to", "big", "-o", be)[0] == 0
    assert run(capsys, "diff", a, be)[:2] == (0, "")
    raw = bytearray(open(a, "rb").read())
    with gguflite.open(a) as f:
        raw[f.tensors["x.q6_k"].abs_offset + 5] ^= 0xFF  # inside the last tensor's data
    (tmp_path / "c.gguf").write_bytes(bytes(raw))
    rc, out, _ = run(capsys, "diff", a, tmp_path / "c.gguf")
    assert rc == 1 and "data differs" in out


def _ggpy_convert(path, order):
    from gguf.scripts import gguf_convert_endian as ce

    r = gguf.GGUFReader(path, "r+")
    real_input = builtins.input
    builtins.input = lambda prompt="": "YES"
    try:
        ce.convert_byteorder(r, argparse.Namespace(order=order, dry_run=False))
    finally:
        builtins.input = real_input
    r.data.flush()
    del r


def test_convert_endian_matches_gguf_py_byte_for_byte_and_round_trips(tmp_path, capsys):
    # every type gguf-py's converter handles: f32, f16, bf16, q4_0, q8_0, q4_k, q6_k, mxfp4, nvfp4
    src = make(tmp_path / "m.gguf", extra_types=("bf16", "mxfp4", "nvfp4"))
    original = open(src, "rb").read()
    theirs = shutil.copy(src, tmp_path / "theirs.gguf")
    _ggpy_convert(theirs, "big")
    assert run(capsys, "convert-endian", src, "--to", "big", "-o", tmp_path / "be.gguf")[0] == 0
    assert (tmp_path / "be.gguf").read_bytes() == open(theirs, "rb").read()
    assert run(capsys, "convert-endian", tmp_path / "be.gguf")[0] == 0  # swap back in place
    assert (tmp_path / "be.gguf").read_bytes() == original


MORE_BLOCK_TYPES = ("q4_1", "q5_0", "q5_1", "q8_1", "q2_k", "q3_k", "q5_k", "q8_k", "iq4_nl", "iq4_xs",
                    "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0",
                    "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m")


def test_convert_endian_swaps_the_fields_inside_more_block_types(tmp_path, capsys):
    # types gguf-py cannot convert: each must come back identical after two swaps, and the
    # f16 scale of a Q8_1 block (bytes 0-1) and the u32 qh of Q5_0 (bytes 2-5) are reversed
    src = make(tmp_path / "m.gguf", extra_types=MORE_BLOCK_TYPES)
    run(capsys, "convert-endian", src, "-o", tmp_path / "be.gguf")
    with gguflite.open(src) as le, gguflite.open(tmp_path / "be.gguf") as be:
        a, b = le.tensors["x.q8_1"].data, be.tensors["x.q8_1"].data
        assert bytes(b[:4]) == bytes([a[1], a[0], a[3], a[2]]) and bytes(b[4:36]) == bytes(a[4:36])
        a, b = le.tensors["x.q5_0"].data, be.tensors["x.q5_0"].data
        assert bytes(b[2:6]) == bytes(a[2:6])[::-1]
    run(capsys, "convert-endian", tmp_path / "be.gguf")
    assert (tmp_path / "be.gguf").read_bytes() == open(src, "rb").read()


def test_convert_endian_keeps_the_fields_of_q1_0_q2_0_and_nvfp4_blocks(tmp_path, capsys):
    # ggml-common.h: block_q1_0 / block_q2_0 = {ggml_half d; uint8_t qs[16]}, block_nvfp4 =
    # {uint8_t d[4]; uint8_t qs[32]}: the f16 scale reads the same in either order, the
    # bytes stay where they are
    src = make(tmp_path / "m.gguf", extra_types=("q1_0", "q2_0", "nvfp4"))
    assert run(capsys, "convert-endian", src, "--to", "big", "-o", tmp_path / "be.gguf")[0] == 0
    with gguflite.open(src) as le, gguflite.open(tmp_path / "be.gguf") as be:
        for t in ("q1_0", "q2_0"):
            a = np.asarray(le.tensors[f"x.{t}"].data).reshape(-1, 18)
            b = np.asarray(be.tensors[f"x.{t}"].data).reshape(-1, 18)
            np.testing.assert_array_equal(a[:, :2].copy().view("<f2"), b[:, :2].copy().view(">f2"))
            assert not np.array_equal(a[:, :2], b[:, :2])  # the scale bytes did move
            np.testing.assert_array_equal(a[:, 2:], b[:, 2:])
        assert bytes(le.tensors["x.nvfp4"].data) == bytes(be.tensors["x.nvfp4"].data)


def test_a_big_endian_file_dequantizes_to_the_same_floats_for_every_convertible_type(tmp_path, capsys):
    from gguflite.quant import DEQUANTIZABLE, dequantize

    src = make(tmp_path / "m.gguf", extra_types=MORE_BLOCK_TYPES + ("bf16",))
    assert run(capsys, "convert-endian", src, "--to", "big", "-o", tmp_path / "be.gguf")[0] == 0
    with gguflite.open(src) as le, gguflite.open(tmp_path / "be.gguf") as be:
        assert be.endian == ">"
        names = [n for n, t in le.tensors.items() if t.type in DEQUANTIZABLE]
        assert len(names) == len(le.tensors) == 6 + len(MORE_BLOCK_TYPES) + 1
        for n in names:
            a, b = le.tensors[n], be.tensors[n]
            want = dequantize(np.asarray(a.raw), a.type, a.shape, endian="<")
            got = dequantize(np.asarray(b.raw), b.type, b.shape, endian=">")
            np.testing.assert_array_equal(got, want, err_msg=n)  # NaNs compare equal here


def test_convert_endian_refuses_a_tensor_type_it_does_not_know(tmp_path, capsys):
    # a type id ggml does not have: its block layout is unknown, so it cannot be swapped
    src = make(tmp_path / "m.gguf", extra_types=("q8_1",))
    raw = bytearray(open(src, "rb").read())
    name = b"x.q8_1"
    at = raw.index(name) + len(name) + 4 + 2 * 8  # n_dims u32, two u64 dims, then the type u32
    assert int.from_bytes(raw[at:at + 4], "little") == gguflite.types.parse_type("q8_1")
    raw[at:at + 4] = (200).to_bytes(4, "little")
    open(src, "wb").write(raw)
    rc, out, err = run(capsys, "convert-endian", src, "-o", tmp_path / "be.gguf")
    assert rc == 2 and "x.q8_1" in err and "200" in err and not os.path.exists(tmp_path / "be.gguf")


def test_split_and_merge_round_trip_from_the_command_line(tmp_path, capsys):
    src = make(tmp_path / "m.gguf")
    rc, out, _ = run(capsys, "split", src, "--max-tensors", "2", "-o", tmp_path / "s")
    shards = out.split()
    assert rc == 0 and len(shards) == 3 and shards[0].endswith("s-00001-of-00003.gguf")
    rc, out, _ = run(capsys, "dump", "--json", shards[0])  # a split model dumps as one
    assert len(json.loads(out)["tensors"]) == 6
    assert run(capsys, "merge", shards[2], tmp_path / "merged.gguf")[0] == 0
    assert (tmp_path / "merged.gguf").read_bytes() == open(src, "rb").read()
    assert run(capsys, "split", src)[0] == 2  # needs a limit


@pytest.mark.parametrize("argv", [
    ["dump", "{missing}"], ["dump", "{garbage}"], ["get", "{good}", "no.such.key"],
    ["set", "{good}", "llama.context_length", "-1"], ["set", "{good}", "k", "1", "--type", "u3"],
    ["set", "{good}", "llama.context_length", "abc"], ["rm", "{good}", "nope"], ["merge", "{good}", "{out}"],
])
def test_bad_input_gives_one_error_line_and_exit_2(tmp_path, capsys, argv):
    good = make(tmp_path / "good.gguf")
    before = open(good, "rb").read()
    (tmp_path / "garbage.gguf").write_bytes(b"not a gguf file at all")
    names = {"missing": tmp_path / "missing.gguf", "garbage": tmp_path / "garbage.gguf", "good": good,
             "out": tmp_path / "out.gguf"}
    rc, out, err = run(capsys, *[a.format(**names) for a in argv])
    assert rc == 2 and err.startswith("gguflite: error: ") and len(err.strip().splitlines()) == 1
    assert open(good, "rb").read() == before


def test_the_installed_command_prints_no_traceback(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    r = subprocess.run([sys.executable, "-m", "gguflite.cli", "dump", str(tmp_path / "bad.gguf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "truncated" in r.stderr


def test_a_missing_subcommand_module_leaves_the_others_working(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", cli.SUBCOMMANDS + [("gguflite.not_there.cli", "nothing")])
    p = make(tmp_path / "m.gguf")
    assert run(capsys, "get", p, "general.name")[1] == "tiny\n"
