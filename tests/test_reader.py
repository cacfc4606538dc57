"""gguflite.open on hand-built files (tests/gguf_builders.py writes them with struct,
independently of gguflite.writer)."""
import os
import struct

import numpy as np
import pytest

import gguflite
from gguflite import GGUFError, ValueType as V
from gguflite.errors import (BadAlignment, BadMagic, BadVersion, DuplicateKey, DuplicateTensor,
                             TensorOutOfBounds, TruncatedFile)
from gguflite.reader import StringArray
from tests.gguf_builders import Raw, pad_to


def write(tmp_path, data: bytes, name="f.gguf") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def tiny(endian="<", version=3) -> bytes:
    """Two KVs and a non-square f32 tensor with ne=[3, 2] (numpy shape (2, 3))."""
    r = Raw(endian, version)
    data = np.arange(6, dtype=np.float32).astype(endian + "f4").tobytes()
    return r.file(
        [r.kv("general.architecture", V.STRING, "llama"),
         r.kv_array("tok", V.STRING, ["a", "", "é"])],
        [r.tensor_info("w", [3, 2], 0, 0)],
        pad_to(data),
    )


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_hand_built_file_reads_in_every_version_and_byte_order(tmp_path, endian, version):
    path = write(tmp_path, tiny(endian, version))
    with gguflite.open(path) as f:
        assert (f.version, f.endian, f.alignment) == (version, endian, 32)
        assert f.metadata["general.architecture"] == "llama"
        assert list(f.metadata["tok"]) == ["a", "", "é"]
        t = f.tensors["w"]
        assert t.shape == (2, 3) and t.ne == (3, 2) and t.type == 0 and t.nbytes == 24
        np.testing.assert_array_equal(t.data, np.arange(6, dtype=np.float32).reshape(2, 3))
        assert f.data_offset % 32 == 0 and t.abs_offset == f.data_offset


def test_the_ne_order_is_reversed_into_a_numpy_shape_for_a_non_square_tensor(tmp_path):
    r = Raw()
    # ne = [4, 3, 2]: 4 is the fastest axis, so element [i2][i1][i0] is at i0 + 4*i1 + 12*i2
    data = np.arange(24, dtype=np.int32).tobytes()
    path = write(tmp_path, r.file([], [r.tensor_info("x", [4, 3, 2], 26, 0)], pad_to(data)))
    with gguflite.open(path) as f:
        x = f.tensors["x"].data
        assert x.shape == (2, 3, 4)
        assert x[1, 2, 3] == 3 + 4 * 2 + 12 * 1


def test_arrays_are_zero_copy_read_only_views_over_the_map(tmp_path):
    r = Raw()
    path = write(tmp_path, r.file([r.kv_array("s", V.FLOAT32, [1.0, 2.0, 3.0])], []))
    with gguflite.open(path) as f:
        a = f.metadata["s"]
        assert a.dtype == np.float32 and not a.flags.writeable
        assert a.base is not None  # a view, not a copy
        np.testing.assert_array_equal(a, [1, 2, 3])
        assert f.fields["s"].type == V.ARRAY and f.fields["s"].elem_type == V.FLOAT32


def test_big_endian_arrays_come_back_in_native_byte_order(tmp_path):
    r = Raw(">")
    path = write(tmp_path, r.file([r.kv_array("s", V.UINT32, [1, 2, 70000])], []))
    with gguflite.open(path) as f:
        a = f.metadata["s"]
        assert a.dtype == np.dtype("=u4")
        assert a.tolist() == [1, 2, 70000]
        assert f.fields["s"].value.dtype == np.dtype(">u4")  # the raw field keeps the file order


def test_string_arrays_are_lazy_and_only_indexed_on_first_access(tmp_path):
    r = Raw()
    words = [f"w{i}" for i in range(2000)]
    path = write(tmp_path, r.file([r.kv_array("tok", V.STRING, words)], []))
    with gguflite.open(path) as f:
        s = f.metadata["tok"]
        assert isinstance(s, StringArray) and s._bounds is None
        assert len(s) == 2000 and s._bounds is None
        assert s[1999] == "w1999" and s[-2] == "w1998" and s[3:5] == ["w3", "w4"]
        assert s == words
        with pytest.raises(IndexError):
            s[2000]


def test_every_scalar_type_reads_with_its_value_type(tmp_path):
    r = Raw()
    vals = {V.UINT8: 255, V.INT8: -128, V.UINT16: 65535, V.INT16: -32768, V.UINT32: 2**32 - 1,
            V.INT32: -2**31, V.FLOAT32: 0.5, V.BOOL: True, V.STRING: "ü", V.UINT64: 2**64 - 1,
            V.INT64: -2**63, V.FLOAT64: 0.1}
    path = write(tmp_path, r.file([r.kv(f"k{int(t)}", t, v) for t, v in vals.items()], []))
    with gguflite.open(path) as f:
        for t, v in vals.items():
            assert f.fields[f"k{int(t)}"].type == t
            assert f.metadata[f"k{int(t)}"] == v and type(f.metadata[f"k{int(t)}"]) is type(v)


def test_nested_arrays_keep_their_structure(tmp_path):
    r = Raw()
    inner = [r.p("I", V.INT32) + r.p("Q", 2) + r.p("ii", 1, 2), r.p("I", V.STRING) + r.p("Q", 1) + r.string("x")]
    kv = r.string("n") + r.p("I", V.ARRAY) + r.p("I", V.ARRAY) + r.p("Q", 2) + b"".join(inner)
    path = write(tmp_path, r.file([kv], []))
    with gguflite.open(path) as f:
        a, b = f.metadata["n"]
        assert a.tolist() == [1, 2] and list(b) == ["x"]


def test_an_unknown_tensor_type_reads_as_raw_bytes_up_to_the_next_tensor(tmp_path):
    r = Raw()
    data = pad_to(b"\x07" * 40) + pad_to(np.ones(8, np.float32).tobytes())
    infos = [r.tensor_info("future", [10], 99, 0), r.tensor_info("f", [8], 0, 64)]
    path = write(tmp_path, r.file([], infos, data))
    with gguflite.open(path) as f:
        t = f.tensors["future"]
        assert t.type_name == "TYPE_99" and not t.known_type
        assert t.nbytes == 64 and t.data.dtype == np.uint8 and bytes(t.data[:40]) == b"\x07" * 40
        np.testing.assert_array_equal(f.tensors["f"].data, np.ones(8))


def test_a_custom_alignment_moves_the_data_section(tmp_path):
    r = Raw()
    data = np.arange(4, dtype=np.float32).tobytes()
    path = write(tmp_path, r.file([r.kv("general.alignment", V.UINT32, 256)],
                                  [r.tensor_info("a", [4], 0, 0)], data + b"\0" * 240, alignment=256))
    with gguflite.open(path) as f:
        assert f.alignment == 256 and f.data_offset == 256
        np.testing.assert_array_equal(f.tensors["a"].data, np.arange(4))


def test_close_releases_the_map_and_later_access_raises(tmp_path):
    path = write(tmp_path, tiny())
    f = gguflite.open(path)
    f.close()
    assert f.closed
    with pytest.raises(GGUFError, match="closed"):
        f.tensors["w"].data
    f.close()  # twice is fine


def test_close_with_live_views_keeps_them_valid(tmp_path):
    path = write(tmp_path, tiny())
    with gguflite.open(path) as f:
        d = f.tensors["w"].data
    assert d[1, 2] == 5.0


@pytest.mark.parametrize("mutate, error, offset", [
    (lambda b: b"GGUX" + b[4:], BadMagic, 0),
    (lambda b: b[:4] + struct.pack("<I", 4) + b[8:], BadVersion, 4),
    (lambda b: b[:4] + struct.pack("<I", 0) + b[8:], BadVersion, 4),
    (lambda b: b[:30], TruncatedFile, 24),
])
def test_broken_headers_raise_specific_errors_with_offsets(tmp_path, mutate, error, offset):
    path = write(tmp_path, mutate(tiny()))
    with pytest.raises(error) as e:
        gguflite.open(path)
    assert e.value.offset == offset and e.value.path == path and path in str(e.value)


def test_a_duplicate_key_names_the_key_and_its_offset(tmp_path):
    r = Raw()
    a = r.kv("k", V.UINT8, 1)
    path = write(tmp_path, r.file([a, a], []))
    with pytest.raises(DuplicateKey) as e:
        gguflite.open(path)
    assert e.value.key == "k" and e.value.offset == 24 + len(a)


def test_a_duplicate_tensor_name_is_refused(tmp_path):
    r = Raw()
    infos = [r.tensor_info("a", [1], 0, 0), r.tensor_info("a", [1], 0, 32)]
    with pytest.raises(DuplicateTensor):
        gguflite.open(write(tmp_path, r.file([], infos, b"\0" * 64)))


@pytest.mark.parametrize("vtype, value", [(V.INT32, 64), (V.UINT32, 48), (V.UINT32, 0)])
def test_alignment_must_be_a_uint32_power_of_two(tmp_path, vtype, value):
    r = Raw()
    with pytest.raises(BadAlignment) as e:
        gguflite.open(write(tmp_path, r.file([r.kv("general.alignment", vtype, value)], [])))
    assert e.value.key == "general.alignment"


def test_tensor_offsets_must_be_the_running_padded_sum(tmp_path):
    r = Raw()
    infos = [r.tensor_info("a", [4], 0, 32), r.tensor_info("b", [4], 0, 0)]  # swapped order
    with pytest.raises(TensorOutOfBounds) as e:
        gguflite.open(write(tmp_path, r.file([], infos, b"\0" * 64)))
    assert e.value.tensor == "a"


def test_a_tensor_past_the_end_of_the_file_is_refused(tmp_path):
    r = Raw()
    with pytest.raises(TensorOutOfBounds) as e:
        gguflite.open(write(tmp_path, r.file([], [r.tensor_info("a", [100], 0, 0)], b"\0" * 64)))
    assert e.value.tensor == "a"


def test_a_file_without_tensors_needs_no_trailing_padding(tmp_path):
    r = Raw()
    raw = r.file([r.kv("k", V.UINT8, 1)], [], pad=False)
    assert len(raw) % 32
    with gguflite.open(write(tmp_path, raw)) as f:
        assert f.metadata["k"] == 1 and not f.tensors


def test_invalid_utf8_in_strings_survives_and_validate_reports_it(tmp_path):
    r = Raw()
    path = write(tmp_path, r.file([r.kv_array("tok", V.STRING, [b"ok", b"\xff\xfe"])], []))
    with gguflite.open(path) as f:
        s = f.metadata["tok"]
        assert s.raw(1) == b"\xff\xfe"
        assert s[1].encode("utf-8", "surrogateescape") == b"\xff\xfe"
        with pytest.raises(GGUFError, match="UTF-8"):
            f.validate()


def test_a_missing_file_raises_gguferror_with_the_path(tmp_path):
    with pytest.raises(GGUFError) as e:
        gguflite.open(tmp_path / "nope.gguf")
    assert "nope.gguf" in str(e.value)


def test_an_empty_file_is_truncated(tmp_path):
    with pytest.raises(TruncatedFile):
        gguflite.open(write(tmp_path, b""))


def test_opening_does_not_modify_the_file(tmp_path):
    raw = tiny()
    path = write(tmp_path, raw)
    before = os.stat(path).st_mtime_ns
    with gguflite.open(path) as f:
        f.tensors["w"].data
        with pytest.raises(ValueError):
            f.tensors["w"].data[0, 0] = 1  # read-only
    assert open(path, "rb").read() == raw and os.stat(path).st_mtime_ns == before
