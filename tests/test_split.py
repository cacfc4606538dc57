"""Split models: split_file, merge_files, gguflite.open on a first shard; checked against
gguf-py 0.19.0's own split writer."""
import os

import numpy as np
import pytest

import gguflite
from gguflite import GGUFWriter, ValueType as V, merge_files, split_file
from gguflite.errors import BadSplit
from gguflite.split import SplitModel, shard_paths


def make(path, n=5, alignment=None, endian="<"):
    w = GGUFWriter(path, alignment=alignment, endian=endian)
    w.add("general.architecture", "llama")
    w.add("tok", ["a", "b"])
    for i in range(n):
        w.add_tensor(f"blk.{i}.w", (2, i + 1), "f32", np.full((2, i + 1), i, np.float32))
    w.write()
    return str(path)


def test_split_writes_the_gguf_split_convention(tmp_path):
    paths = split_file(make(tmp_path / "m.gguf"), str(tmp_path / "out"), max_tensors=2)
    assert [os.path.basename(p) for p in paths] == [f"out-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for i, p in enumerate(paths):
        f = gguflite.GGUFFile(p)
        assert (f.metadata["split.no"], f.metadata["split.count"], f.metadata["split.tensors.count"]) == (i, 3, 5)
        assert [f.fields[k].type for k in ("split.no", "split.count", "split.tensors.count")] == [V.UINT16, V.UINT16, V.INT32]
        assert ("tok" in f.metadata) == (i == 0)
        assert len(f.tensors) == (2 if i < 2 else 1)
        f.close()


def test_opening_the_first_shard_opens_the_whole_model(tmp_path):
    src = make(tmp_path / "m.gguf")
    paths = split_file(src, str(tmp_path / "out"), max_tensors=2)
    with gguflite.open(paths[0]) as m, gguflite.open(src) as f:
        assert isinstance(m, SplitModel) and len(m.shards) == 3
        assert list(m.tensors) == list(f.tensors)
        for name, t in f.tensors.items():
            np.testing.assert_array_equal(m.tensors[name].data, t.data)
        assert list(m.metadata["tok"]) == ["a", "b"]
    assert m.closed


def test_split_then_merge_gives_back_the_original_bytes(tmp_path):
    for alignment, endian in ((None, "<"), (64, ">")):
        src = make(tmp_path / f"m{alignment}.gguf", alignment=alignment, endian=endian)
        paths = split_file(src, str(tmp_path / f"s{alignment}"), max_size=20)
        merged = merge_files(paths[1], tmp_path / f"merged{alignment}.gguf")
        assert open(merged, "rb").read() == open(src, "rb").read()


def test_gguf_py_split_output_opens_as_one_model(tmp_path):
    import gguf
    w = gguf.GGUFWriter(str(tmp_path / "g.gguf"), arch="llama", split_max_tensors=2)
    for i in range(3):
        w.add_tensor(f"t{i}", np.full(4, i, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    first = tmp_path / "g-00001-of-00002.gguf"
    with gguflite.open(first) as m:
        assert [t.data.tolist() for t in m.tensors.values()] == [[i] * 4 for i in range(3)]
    ours = split_file(make(tmp_path / "m.gguf", n=3), str(tmp_path / "ours"), max_tensors=2)
    r = gguf.GGUFReader(ours[1])  # and gguf-py reads our shards
    assert [f.contents() for k, f in r.fields.items() if k.startswith("split.")] == [1, 2, 3]


def test_a_missing_or_foreign_shard_is_refused(tmp_path):
    paths = split_file(make(tmp_path / "m.gguf"), str(tmp_path / "out"), max_tensors=2)
    os.replace(paths[2], tmp_path / "aside.gguf")
    with pytest.raises(gguflite.GGUFError):
        gguflite.open(paths[0])
    make(paths[2], n=1)  # a file that is not shard 3
    with pytest.raises(BadSplit, match="split"):
        gguflite.open(paths[0])


def test_shard_names_are_derived_from_any_shard(tmp_path):
    assert shard_paths("a/m-00002-of-00003.gguf") == [f"a/m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    with pytest.raises(BadSplit):
        shard_paths("m.gguf")


def test_a_failed_split_leaves_no_shards(tmp_path):
    src = make(tmp_path / "m.gguf")
    os.mkdir(tmp_path / "out-00002-of-00003.gguf")  # the second shard cannot be written
    with pytest.raises(gguflite.GGUFError):
        split_file(src, str(tmp_path / "out"), max_tensors=2)
    assert sorted(os.listdir(tmp_path)) == ["m.gguf", "out-00002-of-00003.gguf"]
