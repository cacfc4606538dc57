"""The safetensors reader against files written by the ``safetensors`` package, and against
hostile files (every malformation must be a CheckpointError naming the file)."""
import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save as np_save
from safetensors.torch import save_file as torch_save_file

from gguflite.convert.safetensors import SafetensorsFile
from gguflite.errors import CheckpointError


def _write(path, header: dict, data: bytes = b"", pad_to: int | None = None):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_tensors_written_by_safetensors_read_back_equal(tmp_path):
    sd = {"a": torch.randn(3, 5), "h": torch.randn(7).half(), "i": torch.arange(12, dtype=torch.int64).reshape(3, 4),
          "b": torch.tensor([True, False]), "u": torch.arange(5, dtype=torch.uint8), "s": torch.tensor(2.5),
          "e": torch.zeros(0, 4), "d": torch.randn(2, 2, dtype=torch.float64)}
    torch_save_file(sd, str(tmp_path / "m.safetensors"), metadata={"format": "pt"})
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        assert f.metadata == {"format": "pt"}
        assert set(f.tensors) == set(sd)
        for name, ref in sd.items():
            t = f.tensors[name]
            assert t.shape == tuple(ref.shape)
            np.testing.assert_array_equal(t.load(), ref.numpy())


def test_bf16_comes_back_as_the_raw_bits_torch_wrote(tmp_path):
    x = torch.randn(4, 8).bfloat16()
    torch_save_file({"x": x}, str(tmp_path / "b.safetensors"))
    with SafetensorsFile(tmp_path / "b.safetensors") as f:
        t = f.tensors["x"]
        assert t.dtype == "BF16"
        np.testing.assert_array_equal(t.load(), x.view(torch.int16).numpy().view(np.uint16))


def test_loaded_tensors_are_read_only_views_of_the_mapped_file(tmp_path):
    torch_save_file({"x": torch.ones(100)}, str(tmp_path / "m.safetensors"))
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        a = f.tensors["x"].load()
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = 2


@given(st.dictionaries(st.text(min_size=1, max_size=8), hnp.arrays(
    st.sampled_from([np.float32, np.float16, np.int32, np.int8, np.uint8]),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)), max_size=5))
@settings(max_examples=40)
def test_any_dict_of_arrays_round_trips(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    path.write_bytes(np_save(arrays))
    with SafetensorsFile(path) as f:
        assert set(f.tensors) == set(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(f.tensors[k].load(), v)
            assert f.tensors[k].load().shape == v.shape


@pytest.mark.parametrize("header, data, words", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "ends at"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "file has"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "do not hold"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap or overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "gap or overlap"),
    ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "non-negative"),
    ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4, "non-negative"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\0" * 4, "data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2 ** 60], "data_offsets": [0, 2 ** 62]}}, b"", "ends at"),
    ({"a": {"dtype": "F32", "shape": [2 ** 62], "data_offsets": [0, 2 ** 64]}}, b"", "too big for numpy"),
    ({"a": {"dtype": "F32", "shape": [0, 2 ** 61], "data_offsets": [0, 0]}}, b"", "too big for numpy"),
    ({"a": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, b"\0" * 4, "more than 64"),
    ({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "unknown dtype"),
    ({"a": {"dtype": {"F32": 1}, "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "nests an object"),
    ({"__metadata__": "", "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "__metadata__"),
    ({"__metadata__": 0}, b"", "__metadata__"),
    ({"__metadata__": None}, b"", "__metadata__"),
    ({"a": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}}, b"\0" * 4, "nests a list"),
    ({"a": [{"dtype": "F32"}]}, b"", "nests a list"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}}, b"\0" * 4, "malformed"),
    ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
    ([1, 2], b"", "JSON object"),
])
def test_malformed_headers_are_refused_with_the_reason(tmp_path, header, data, words):
    path = _write(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointError, match=words) as e:
        SafetensorsFile(path)
    assert str(path) in str(e.value)


def test_duplicate_names_and_bad_json_are_refused(tmp_path):
    raw = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'
    (tmp_path / "d.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"xy")
    with pytest.raises(CheckpointError, match="duplicate"):
        SafetensorsFile(tmp_path / "d.safetensors")
    (tmp_path / "j.safetensors").write_bytes(struct.pack("<Q", 3) + b"{no")
    with pytest.raises(CheckpointError, match="JSON"):
        SafetensorsFile(tmp_path / "j.safetensors")


def test_header_sizes_past_the_cap_or_the_file_are_refused(tmp_path):
    (tmp_path / "big.safetensors").write_bytes(struct.pack("<Q", 10 ** 12) + b"{}")
    with pytest.raises(CheckpointError, match="cap"):
        SafetensorsFile(tmp_path / "big.safetensors")
    (tmp_path / "past.safetensors").write_bytes(struct.pack("<Q", 100) + b"{}")
    with pytest.raises(CheckpointError, match="past the end"):
        SafetensorsFile(tmp_path / "past.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\1\2")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        SafetensorsFile(tmp_path / "tiny.safetensors")


def test_every_truncation_and_header_bit_flip_fails_cleanly(tmp_path):
    good = np_save({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float16)})
    path = tmp_path / "t.safetensors"
    for cut in range(len(good)):
        path.write_bytes(good[:cut])
        with pytest.raises(CheckpointError):
            SafetensorsFile(path)
    n = struct.unpack("<Q", good[:8])[0]
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, 8 + n, 200):
        buf = bytearray(good)
        buf[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(buf))
        try:
            with SafetensorsFile(path) as f:
                for t in f.tensors.values():
                    t.load()
        except CheckpointError:
            pass


# --------------------------------------------------------------------------- sharded folders


def _sharded(folder, shards: dict, weight_map=None):
    """Write {file: {name: tensor}} and the index that maps every name to its file."""
    folder.mkdir(exist_ok=True)
    for fn, sd in shards.items():
        torch_save_file(sd, str(folder / fn))
    wm = weight_map if weight_map is not None else {n: fn for fn, sd in shards.items() for n in sd}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (folder / "config.json").write_text("{}")
    return folder


def test_a_sharded_folder_reads_as_one_set_of_tensors(tmp_path):
    from gguflite.convert.checkpoint import Checkpoint

    a, b = torch.randn(2, 3), torch.randn(4)
    folder = _sharded(tmp_path / "m", {"model-00001-of-00002.safetensors": {"a": a},
                                       "model-00002-of-00002.safetensors": {"b": b}})
    with Checkpoint(folder) as c:
        assert set(c.tensors) == {"a", "b"}
        np.testing.assert_array_equal(c.tensors["b"].load(), b.numpy())
        assert len(c.files) == 2


@pytest.mark.parametrize("weight_map, words", [
    ({"a": "../outside.safetensors"}, "plain file name"),
    ({"a": "model-00001-of-00002.safetensors", "zz": "model-00001-of-00002.safetensors"}, "lacks"),
    ({"a": "model-00003-of-00002.safetensors"}, "is missing"),
    ({}, "weight_map"),
])
def test_an_index_that_does_not_match_its_shards_is_refused(tmp_path, weight_map, words):
    from gguflite.convert.checkpoint import Checkpoint

    folder = _sharded(tmp_path / "m", {"model-00001-of-00002.safetensors": {"a": torch.ones(1)}}, weight_map)
    with pytest.raises(CheckpointError, match=words):
        Checkpoint(folder)


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    from gguflite.convert.checkpoint import Checkpoint

    folder = _sharded(tmp_path / "m", {"s1.safetensors": {"a": torch.ones(1)}, "s2.safetensors": {"a": torch.ones(1)}},
                      {"a": "s1.safetensors", "b": "s2.safetensors"})
    with pytest.raises(CheckpointError, match="two shards|lacks"):
        Checkpoint(folder)


def test_a_folder_without_weights_or_config_is_refused(tmp_path):
    from gguflite.convert.checkpoint import Checkpoint

    with pytest.raises(CheckpointError, match="config.json"):
        Checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no weights"):
        Checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="JSON object"):
        Checkpoint(tmp_path)


def test_a_header_whose_parse_would_cost_far_more_than_the_file_is_refused_before_parsing(tmp_path):
    """90k tiny metadata strings (~1 MB of JSON) would cost ~20 MB as Python objects."""
    meta = b'{"__metadata__": {' + b",".join(b'"%x": ""' % i for i in range(90_000)) + b"}}"
    path = tmp_path / "meta.safetensors"
    path.write_bytes(struct.pack("<Q", len(meta)) + meta)
    with pytest.raises(CheckpointError, match="memory to parse") as e:
        SafetensorsFile(path)
    assert str(path) in str(e.value)


def test_a_header_nested_deeper_than_the_format_is_refused_without_recursion(tmp_path):
    deep = b'{"a": {"shape": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(CheckpointError, match="nests a list") as e:
        SafetensorsFile(path)
    assert e.value.offset == 8 + deep.index(b"[[")+1


def test_many_zero_size_tensors_and_a_large_metadata_still_agree_with_the_rust_reader(tmp_path):
    from safetensors.numpy import save

    arrays = {f"t{i}": np.zeros((0, 3), np.float32) for i in range(500)}
    arrays["w"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    meta = {f"k{i}": "v" * 10 for i in range(2000)}
    path = tmp_path / "many.safetensors"
    path.write_bytes(save(arrays, metadata=meta))
    with SafetensorsFile(path) as f:
        assert f.metadata == meta and set(f.tensors) == set(arrays)
        np.testing.assert_array_equal(f.tensors["w"].load(), arrays["w"])
        assert f.tensors["t7"].load().shape == (0, 3)
