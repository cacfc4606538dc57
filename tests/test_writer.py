"""GGUFWriter: golden bytes, round trips through gguflite.open, type rules, atomicity."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gguflite
from gguflite import GGUFWriter, ValueType as V
from gguflite.errors import BadAlignment, DuplicateKey, DuplicateTensor, GGUFError, WriteError
from gguflite.types import TYPE_TRAITS, GGMLType
from gguflite.writer import infer_type
from tests.gguf_builders import Raw, metadata, pad_to, tensors


def read_all(path):
    with gguflite.open(path) as f:
        md = {k: (f.fields[k].type, f.fields[k].elem_type, _plain(f.metadata[k])) for k in f.metadata}
        ts = [(t.name, t.shape, t.type, t.data.tobytes()) for t in f.tensors.values()]
        return md, ts, f.alignment, f.endian


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, gguflite.StringArray)):
        return [_plain(x) for x in v]
    return v


def test_golden_bytes_of_a_tiny_file_match_the_hand_built_layout(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add("general.architecture", "llama")
    w.add("n", 7)
    w.add("tok", ["a", ""])
    w.add_tensor("w", (2, 3), GGMLType.F32, np.arange(6, dtype=np.float32).reshape(2, 3))
    w.write()
    r = Raw()
    expected = r.file(
        [r.kv("general.architecture", V.STRING, "llama"), r.kv("n", V.INT32, 7),
         r.kv_array("tok", V.STRING, ["a", ""])],
        [r.tensor_info("w", [3, 2], 0, 0)],
        pad_to(np.arange(6, dtype=np.float32).tobytes()),
    )
    assert (tmp_path / "a.gguf").read_bytes() == expected
    # spot-check the header by hand: magic, version 3, one tensor, three KVs
    assert expected[:24] == b"GGUF" + bytes([3, 0, 0, 0]) + bytes([1] + [0] * 7) + bytes([3] + [0] * 7)


@settings(max_examples=40)
@given(md=metadata, endian=st.sampled_from("<>"), alignment=st.sampled_from([1, 8, 32, 64, 4096]),
       version=st.sampled_from([1, 2, 3]))
def test_metadata_round_trips_with_every_type_byte_order_alignment_and_version(tmp_path_factory, md, endian, alignment, version):
    path = tmp_path_factory.mktemp("rt") / "m.gguf"
    w = GGUFWriter(path, alignment=alignment, endian=endian, version=version)
    for k, (vt, et, v) in md.items():
        w.add(k, v, (V.ARRAY, et) if vt == V.ARRAY else vt)
    w.add_tensor("t", (3,), "f32", np.ones(3, np.float32))
    w.write()
    got, ts, al, e = read_all(path)
    assert al == alignment and e == endian
    if alignment != 32:
        assert got.pop("general.alignment") == (V.UINT32, None, alignment)
    assert list(got) == list(md)
    for k, (vt, et, v) in md.items():
        gt, ge, gv = got[k]
        assert (gt, ge) == (vt, et)
        if vt == V.FLOAT32:
            assert gv == float(np.float32(v))
        elif et == V.FLOAT32:
            assert gv == np.array(v, np.float32).tolist()
        else:
            assert gv == v


@settings(max_examples=30)
@given(ts=tensors(), endian=st.sampled_from("<>"), alignment=st.sampled_from([1, 16, 32, 128]))
def test_tensors_of_every_type_and_shape_round_trip(tmp_path_factory, ts, endian, alignment):
    path = tmp_path_factory.mktemp("rt") / "t.gguf"
    w = GGUFWriter(path, alignment=alignment, endian=endian)
    for name, shape, t, arr in ts:
        w.add_tensor(name, shape, t, arr)
    w.write()
    with gguflite.open(path) as f:
        assert list(f.tensors) == [n for n, *_ in ts]
        for name, shape, t, arr in ts:
            got = f.tensors[name]
            assert got.shape == shape and got.type == t
            assert got.abs_offset % alignment == 0
            if TYPE_TRAITS[t].dtype is not None:
                assert got.data.shape == shape
                np.testing.assert_array_equal(got.data, arr)
            else:
                assert got.data.tobytes() == arr.tobytes()


def test_big_endian_output_swaps_plain_tensors_and_reads_back_equal(tmp_path):
    a = np.array([[1.5, -2.0, 3.25]], np.float32)
    for e in "<>":
        w = GGUFWriter(tmp_path / f"{e == '>'}.gguf", endian=e)
        w.add_tensor("a", a.shape, "f32", a)
        w.write()
    le, be = (tmp_path / "False.gguf").read_bytes(), (tmp_path / "True.gguf").read_bytes()
    assert be[-32:-20] == a.astype(">f4").tobytes()
    assert le[-32:-20] == a.astype("<f4").tobytes()
    with gguflite.open(tmp_path / "True.gguf") as f:
        np.testing.assert_array_equal(f.tensors["a"].data, a)


def test_streamed_sources_give_the_same_bytes_as_arrays(tmp_path):
    arrs = [np.random.default_rng(i).standard_normal((3, 5)).astype(np.float32) for i in range(3)]
    for mode in ("array", "callable", "bytes"):
        w = GGUFWriter(tmp_path / f"{mode}.gguf")
        w.add("x", 1)
        for i, a in enumerate(arrs):
            src = {"array": a, "callable": (lambda a=a: a), "bytes": a.tobytes()}[mode]
            w.add_tensor(f"t{i}", a.shape, "f32", src)
        w.write()
    b = (tmp_path / "array.gguf").read_bytes()
    assert (tmp_path / "callable.gguf").read_bytes() == b == (tmp_path / "bytes.gguf").read_bytes()


def test_callables_are_called_once_in_order_during_write(tmp_path):
    calls = []
    w = GGUFWriter(tmp_path / "a.gguf")
    for i in range(3):
        w.add_tensor(f"t{i}", (2,), "f32", lambda i=i: calls.append(i) or np.full(2, i, np.float32))
    assert calls == []
    w.write()
    assert calls == [0, 1, 2]


def test_empty_strings_and_empty_arrays_are_kept(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add("s", "")
    w.add("a", [], (V.ARRAY, V.UINT32))
    w.add("t", [""], (V.ARRAY, V.STRING))
    w.write()
    with gguflite.open(tmp_path / "a.gguf") as f:
        assert f.metadata["s"] == "" and f.metadata["a"].tolist() == [] and list(f.metadata["t"]) == [""]
        assert f.fields["a"].elem_type == V.UINT32


def test_an_empty_list_without_a_type_is_refused():
    with pytest.raises(WriteError, match="element type"):
        GGUFWriter("x.gguf").add("a", [])


def test_duplicate_keys_and_tensor_names_are_refused():
    w = GGUFWriter("x.gguf")
    w.add("k", 1)
    with pytest.raises(DuplicateKey):
        w.add("k", 2)
    w.add_tensor("t", (1,), "f32", np.zeros(1, np.float32))
    with pytest.raises(DuplicateTensor):
        w.add_tensor("t", (1,), "f32", np.zeros(1, np.float32))


def test_nested_arrays_are_refused_unless_asked_for(tmp_path):
    with pytest.raises(WriteError, match="nested"):
        GGUFWriter(tmp_path / "a.gguf").add("n", [[1, 2], [3]])
    w = GGUFWriter(tmp_path / "a.gguf", allow_nested=True)
    w.add("n", [[1, 2], ["x"]])
    w.write()
    with gguflite.open(tmp_path / "a.gguf") as f:
        assert f.fields["n"].elem_type == V.ARRAY
        a, b = f.metadata["n"]
        assert a.tolist() == [1, 2] and list(b) == ["x"]


@pytest.mark.parametrize("value, expected", [
    (True, (V.BOOL, None)), (1, (V.INT32, None)), (2**31, (V.INT64, None)), (2**63, (V.UINT64, None)),
    (-2**31, (V.INT32, None)), (1.0, (V.FLOAT32, None)), ("s", (V.STRING, None)),
    (np.uint16(3), (V.UINT16, None)), (np.float64(1), (V.FLOAT64, None)), (b"ab", (V.ARRAY, V.UINT8)),
    (np.zeros(2, np.int8), (V.ARRAY, V.INT8)), ([1, 2], (V.ARRAY, V.INT32)), ([1, 2**40], (V.ARRAY, V.INT64)),
    ([1, 2.5], (V.ARRAY, V.FLOAT32)), (["a"], (V.ARRAY, V.STRING)), ([True], (V.ARRAY, V.BOOL)),
])
def test_type_inference_follows_the_documented_table(value, expected):
    assert infer_type(value) == expected


@pytest.mark.parametrize("value, vtype", [
    (256, V.UINT8), (-1, V.UINT32), (2**64, None), (1.5, V.INT32), ("x", V.INT32), ([300], (V.ARRAY, V.UINT8)),
    ([1.5], (V.ARRAY, V.INT16)), (2, V.BOOL), (1e300, V.FLOAT32), ([1e300], (V.ARRAY, V.FLOAT32)), (np.zeros((2, 2)), None), ([1, "a"], None), (np.float16(1), None),
])
def test_values_that_do_not_fit_their_type_are_refused(value, vtype):
    with pytest.raises(WriteError):
        GGUFWriter("x.gguf").add("k", value, vtype)


def test_python_ints_beyond_int64_are_stored_exactly(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add("u", [0, 2**63, 2**64 - 1], (V.ARRAY, V.UINT64))
    w.add("i", [1, 2**40])
    w.write()
    with gguflite.open(tmp_path / "a.gguf") as f:
        assert f.metadata["u"].tolist() == [0, 2**63, 2**64 - 1]
        assert f.fields["i"].elem_type == V.INT64 and f.metadata["i"].tolist() == [1, 2**40]


def test_bad_keys_names_and_type_ids_are_write_errors():
    w = GGUFWriter("x.gguf")
    for call in (lambda: w.add("k\udcff", 1), lambda: w.add("k", 1, 99), lambda: w.add("", 1),
                 lambda: w.add_tensor("t\udcff", (1,), "f32", np.zeros(1, np.float32)),
                 lambda: w.add_tensor("t", (1,), "nope", np.zeros(1, np.float32)),
                 lambda: w.add_tensor("t", (1,), -1, b"\0"), lambda: w.add_tensor("t", (2**64,), "f32", b""),
                 lambda: w.add_tensor("t", (1,), 99, lambda: b"", nbytes=-1)):
        with pytest.raises(WriteError):
            call()


def test_a_bare_element_type_is_accepted_for_a_list():
    w = GGUFWriter("x.gguf")
    w.add("k", [1, 2], V.UINT32)
    assert w._kv["k"][:2] == (V.ARRAY, V.UINT32)


def test_general_alignment_is_written_as_uint32_and_sets_the_alignment(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add("general.alignment", 64)
    w.add_tensor("t", (3,), "f32", np.ones(3, np.float32))
    w.write()
    with gguflite.open(tmp_path / "a.gguf") as f:
        assert f.alignment == 64 and f.fields["general.alignment"].type == V.UINT32
    with pytest.raises(BadAlignment):
        GGUFWriter("x.gguf").add("general.alignment", 48)
    with pytest.raises(BadAlignment):
        GGUFWriter("x.gguf", alignment=64).add("general.alignment", 32)
    with pytest.raises(BadAlignment):
        GGUFWriter("x.gguf", alignment=3)


def test_tensor_data_must_match_the_declared_type_and_shape():
    w = GGUFWriter("x.gguf")
    with pytest.raises(WriteError, match="shape"):
        w.add_tensor("a", (2, 3), "f32", np.zeros((3, 2), np.float32))
    with pytest.raises(WriteError, match="float16"):
        w.add_tensor("b", (4,), "f16", np.zeros(4, np.float32))
    with pytest.raises(WriteError, match="bytes"):
        w.add_tensor("c", (32,), "q8_0", np.zeros(33, np.uint8))
    with pytest.raises(WriteError, match="block size"):
        w.add_tensor("d", (31,), "q8_0", np.zeros(34, np.uint8))
    with pytest.raises(WriteError, match="at most 63"):
        w.add_tensor("x" * 64, (1,), "f32", np.zeros(1, np.float32))
    with pytest.raises(WriteError, match="at most 4"):
        w.add_tensor("e", (1,) * 5, "f32", np.zeros(1, np.float32))
    w.add_tensor("q", (2, 32), "q8_0", np.zeros((2, 34), np.uint8))  # raw block bytes


def test_an_unknown_type_id_is_written_from_raw_bytes(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add_tensor("u", (7,), 99, b"\x01" * 40)
    w.add_tensor("f", (2,), "f32", np.ones(2, np.float32))
    w.write()
    with gguflite.open(tmp_path / "a.gguf") as f:
        assert f.tensors["u"].type == 99 and bytes(f.tensors["u"].data[:40]) == b"\x01" * 40
        assert f.tensors["f"].data.tolist() == [1, 1]
    with pytest.raises(WriteError, match="nbytes"):
        GGUFWriter("x.gguf").add_tensor("u", (7,), 99, lambda: b"")


def test_a_wrong_sized_stream_source_fails_and_leaves_no_file(tmp_path):
    path = tmp_path / "a.gguf"
    w = GGUFWriter(path)
    w.add_tensor("a", (4,), "f32", lambda: np.zeros(3, np.float32))
    with pytest.raises(WriteError, match="shape"):
        w.write()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_write_leaves_the_old_file_untouched_and_no_temp_file(tmp_path, exc):
    path = tmp_path / "a.gguf"
    path.write_bytes(b"old contents")

    def boom():
        raise exc("stop")

    w = GGUFWriter(path)
    w.add_tensor("a", (4,), "f32", np.zeros(4, np.float32))
    w.add_tensor("b", (4,), "f32", boom)
    with pytest.raises(exc):
        w.write()
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["a.gguf"]


_TEMP_CHILD = """
import os, sys, time
from gguflite.writer import create_temp
fd, path = create_temp(sys.argv[1])
os.write(fd, b"half a file")
print(path, flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # no cleanup, as after a SIGKILL
time.sleep(120)
"""


def _temp_of_child(target, how: str):
    """A child process creates its temp file for ``target`` the way writes do; returns
    (process, temp path).  ``how="die"``: the child is gone (and reaped) on return."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    p = subprocess.Popen([sys.executable, "-c", _TEMP_CHILD, str(target), how], stdout=subprocess.PIPE, text=True,
                         cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)))
    tmp = p.stdout.readline().strip()
    if how == "die":
        p.wait(30)
    return p, tmp


def test_the_next_write_removes_dead_processes_temp_files_and_keeps_live_ones(tmp_path):
    target = tmp_path / "m.gguf"
    target.write_bytes(b"old contents")
    live, live_tmp = _temp_of_child(target, "live")
    try:
        _, dead_tmp = _temp_of_child(target, "die")
        _, other_tmp = _temp_of_child(tmp_path / "other.gguf", "die")  # another target's
        assert os.path.basename(dead_tmp).startswith(".m.gguf.") and dead_tmp.endswith(".gguflite-tmp")
        dead_pid = os.path.basename(dead_tmp).split(".")[3]
        # names that only look like ours are never removed
        lookalikes = [f".m.gguf.{dead_pid}.0123456789ab.tmp", f".m.gguf.{dead_pid}.xyz.gguflite-tmp",
                      f"m.gguf.{dead_pid}.0123456789ab.gguflite-tmp", f".m.gguf.0.0123456789ab.gguflite-tmp"]
        for name in lookalikes:
            (tmp_path / name).write_bytes(b"x")
        (tmp_path / f".m.gguf.{dead_pid}.ba9876543210.gguflite-tmp").symlink_to(target)
        (tmp_path / f".m.gguf.{dead_pid}.abcdefabcdef.gguflite-tmp").mkdir()
        before = set(os.listdir(tmp_path))

        w = GGUFWriter(target)
        w.add("k", 1)
        w.write()
        assert gguflite.open(target).metadata["k"] == 1
        assert set(os.listdir(tmp_path)) == before - {os.path.basename(dead_tmp)}
        assert os.path.exists(live_tmp) and os.path.exists(other_tmp)
    finally:
        live.kill()
        live.wait()
    # once its owner is gone, the next write removes the live writer's file too
    w = GGUFWriter(target)
    w.add("k", 2)
    w.write()
    assert not os.path.exists(live_tmp) and os.path.exists(other_tmp)


def test_remove_stale_temps_keeps_the_temp_files_of_this_process(tmp_path):
    from gguflite.writer import create_temp, remove_stale_temps

    fd, tmp = create_temp(tmp_path / "m.gguf")
    os.close(fd)
    assert remove_stale_temps(tmp_path / "m.gguf") == []
    assert os.listdir(tmp_path) == [os.path.basename(tmp)]


def test_the_context_manager_writes_on_success_and_nothing_on_error(tmp_path):
    with GGUFWriter(tmp_path / "ok.gguf") as w:
        w.add("k", 1)
    assert gguflite.open(tmp_path / "ok.gguf").metadata["k"] == 1
    with pytest.raises(ZeroDivisionError):
        with GGUFWriter(tmp_path / "bad.gguf") as w:
            w.add("k", 1)
            1 / 0
    assert sorted(os.listdir(tmp_path)) == ["ok.gguf"]


def test_a_writer_writes_once(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.write()
    with pytest.raises(WriteError):
        w.write()
    with pytest.raises(WriteError):
        w.add("k", 1)


def test_progress_reports_tensor_bytes(tmp_path):
    seen = []
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add_tensor("a", (3,), "f32", np.zeros(3, np.float32))
    w.add_tensor("b", (10,), "f32", np.zeros(10, np.float32))
    w.write(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(32, 96), (96, 96)]


def test_key_order_is_kept_and_reading_does_not_depend_on_it(tmp_path):
    items = [("a", 1), ("b", "x"), ("c", [1.5, 2.5])]
    for name, order in (("fwd", items), ("rev", items[::-1])):
        w = GGUFWriter(tmp_path / f"{name}.gguf")
        for k, v in order:
            w.add(k, v)
        w.write()
    fwd, rev = read_all(tmp_path / "fwd.gguf"), read_all(tmp_path / "rev.gguf")
    assert list(fwd[0]) == ["a", "b", "c"] and list(rev[0]) == ["c", "b", "a"]
    assert fwd[0] == rev[0]  # same mapping


def test_writing_a_read_file_back_reproduces_its_bytes(tmp_path):
    src = tmp_path / "src.gguf"
    w = GGUFWriter(src, endian=">")
    w.add("tok", ["a", "b\xff", ""])
    w.add("s", np.arange(3, dtype=np.float32))
    w.add_tensor("q", (1, 32), "q8_0", np.arange(34, dtype=np.uint8))
    w.write()
    with gguflite.open(src) as f:
        w2 = GGUFWriter(tmp_path / "copy.gguf", endian=f.endian, alignment=f.alignment)
        for k, fld in f.fields.items():
            w2.add(k, fld.value, (V.ARRAY, fld.elem_type) if fld.type == V.ARRAY else fld.type)
        for t in f.tensors.values():
            w2.add_tensor(t.name, t.shape, t.type, t.raw)
        w2.write()
    assert (tmp_path / "copy.gguf").read_bytes() == src.read_bytes()


def test_errors_are_gguf_errors():
    assert issubclass(WriteError, GGUFError)


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_tensors_copied_from_a_read_file_are_byte_identical_with_or_without_copy_file_range(
        tmp_path, monkeypatch, kernel_copy):
    src = tmp_path / "src.gguf"
    w = GGUFWriter(src)
    w.add_tensor("a", (3, 5), "f32", np.arange(15, dtype=np.float32).reshape(3, 5))
    w.add_tensor("q", (2, 32), "q8_0", np.arange(68, dtype=np.uint8))
    w.add_tensor("u", (4,), 99, b"\x09" * 20)
    w.write()
    if not kernel_copy:
        def unsupported(*a):
            raise OSError(38, "Function not implemented")
        monkeypatch.setattr(os, "copy_file_range", unsupported)
    with gguflite.open(src) as f:
        w = GGUFWriter(tmp_path / "copy.gguf")
        for t in f.tensors.values():
            w.add_tensor_from(t)
        w.write()
    assert (tmp_path / "copy.gguf").read_bytes() == src.read_bytes()


def test_plain_tensors_change_byte_order_when_copied_into_a_big_endian_writer(tmp_path):
    src = tmp_path / "src.gguf"
    w = GGUFWriter(src)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    w.add_tensor("a", a.shape, "f32", a)
    w.add_tensor("q", (32,), "q8_0", np.zeros(34, np.uint8))
    w.write()
    with gguflite.open(src) as f:
        w = GGUFWriter(tmp_path / "be.gguf", endian=">")
        w.add_tensor_from(f.tensors["a"])
        with pytest.raises(WriteError, match="convert-endian"):
            w.add_tensor_from(f.tensors["q"])
        w.write()
    with gguflite.open(tmp_path / "be.gguf") as f:
        assert f.tensors["a"].data.dtype == np.dtype(">f4")
        np.testing.assert_array_equal(f.tensors["a"].data, a)


py_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner), max_leaves=6)
type_args = st.none() | st.sampled_from(list(V)) | st.tuples(st.just(V.ARRAY), st.sampled_from(list(V)))


@pytest.mark.slow
@settings(max_examples=150)
@given(items=st.lists(st.tuples(py_values, type_args), max_size=5))
def test_any_python_value_is_written_and_read_back_or_refused_with_a_gguferror(tmp_path_factory, items):
    path = tmp_path_factory.mktemp("any") / "a.gguf"
    w = GGUFWriter(path, allow_nested=True)
    added = []
    for i, (value, t) in enumerate(items):
        try:
            w.add(f"k{i}", value, t)
            added.append(f"k{i}")
        except GGUFError:
            pass
    w.write()
    with gguflite.open(path) as f:
        assert list(f.fields) == added
        for k in added:  # every value reads back (bytes strings are written as given, even
            v = f.metadata[k]  # when not UTF-8: validate() would report those)
            list(v) if isinstance(v, (list, gguflite.StringArray)) else v
