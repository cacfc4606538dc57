"""gguflite.Editor: set / retype / delete keys, rename / drop tensors; in place or rewrite."""
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gguflite
from gguflite import Editor, GGUFWriter, ValueType as V
from gguflite.errors import DuplicateTensor, GGUFError, WriteError


def make(path, endian="<"):
    w = GGUFWriter(path, endian=endian)
    w.add("general.architecture", "llama")
    w.add("llama.context_length", 4096, V.UINT32)
    w.add("general.name", "abcd")
    w.add("tok", ["a", "b", "c"])
    w.add("scores", np.array([0.5, 1.5], np.float32))
    w.add_tensor("token_embd.weight", (3, 4), "f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("output.weight", (1, 32), "q8_0", np.arange(34, dtype=np.uint8))
    w.write()
    return path


def test_setting_an_existing_key_keeps_its_type_and_edits_in_place(tmp_path):
    p = make(tmp_path / "m.gguf")
    ino = os.stat(p).st_ino
    with Editor(p) as e:
        e.set("llama.context_length", 8192)
        e.set("general.name", "wxyz")
    assert e.mode == "in-place" and os.stat(p).st_ino == ino
    with gguflite.open(p) as f:
        assert f.metadata["llama.context_length"] == 8192
        assert f.fields["llama.context_length"].type == V.UINT32
        assert f.metadata["general.name"] == "wxyz"
        np.testing.assert_array_equal(f.tensors["token_embd.weight"].data, np.arange(12).reshape(3, 4))


def test_a_size_changing_edit_is_an_atomic_rewrite(tmp_path):
    p = make(tmp_path / "m.gguf")
    e = Editor(p)
    e.set("general.name", "a much longer name than before" * 3)
    e.set("new.key", [1, 2, 3])
    e.delete("scores")
    assert e.commit() == "rewrite"
    assert sorted(os.listdir(tmp_path)) == ["m.gguf"]
    with gguflite.open(p) as f:
        assert list(f.metadata)[-1] == "new.key" and "scores" not in f.metadata
        assert f.metadata["new.key"].tolist() == [1, 2, 3]
        assert bytes(f.tensors["output.weight"].data) == bytes(range(34))


@settings(max_examples=20)
@given(name=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=4, max_size=4), ctx=st.integers(0, 2**32 - 1), endian=st.sampled_from("<>"),
       rename=st.booleans())
def test_an_in_place_edit_equals_a_rewrite_byte_for_byte(tmp_path_factory, name, ctx, endian, rename):
    d = tmp_path_factory.mktemp("e")
    p = make(d / "a.gguf", endian)
    shutil.copy(p, d / "b.gguf")
    modes = []
    for path, kw in ((d / "a.gguf", {}), (d / "b.gguf", {"in_place": False})):
        e = Editor(path)
        e.set("general.name", name)
        e.set("llama.context_length", ctx)
        if rename:
            e.rename_tensor("output.weight", "output.wei9ht")
        modes.append(e.commit(**kw))
        e.close()
    assert modes == ["in-place", "rewrite"]  # same-size edits: in place vs forced rewrite
    assert (d / "a.gguf").read_bytes() == (d / "b.gguf").read_bytes()
    assert sorted(os.listdir(d)) == ["a.gguf", "b.gguf"]


def test_retype_converts_with_range_checks(tmp_path):
    p = make(tmp_path / "m.gguf")
    with Editor(p) as e:
        e.retype("llama.context_length", V.UINT64)
        e.retype("scores", V.FLOAT64)
        with pytest.raises(WriteError):
            e.retype("llama.context_length", V.INT8)
    with gguflite.open(p) as f:
        assert f.fields["llama.context_length"].type == V.UINT64 and f.metadata["llama.context_length"] == 4096
        assert f.fields["scores"].elem_type == V.FLOAT64 and f.metadata["scores"].tolist() == [0.5, 1.5]


def test_renaming_and_dropping_tensors(tmp_path):
    p = make(tmp_path / "m.gguf")
    with Editor(p) as e:
        with pytest.raises(DuplicateTensor):
            e.rename_tensor("token_embd.weight", "output.weight")
        e.rename_tensor("token_embd.weight", "emb")
        e.rename_tensor("emb", "emb2")
        e.drop_tensor("output.weight")
    with gguflite.open(p) as f:
        assert list(f.tensors) == ["emb2"]
        np.testing.assert_array_equal(f.tensors["emb2"].data, np.arange(12).reshape(3, 4))


def test_unknown_keys_and_tensors_are_errors_and_leave_the_file_alone(tmp_path):
    p = make(tmp_path / "m.gguf")
    before = p.read_bytes()
    with pytest.raises(GGUFError):
        with Editor(p) as e:
            e.delete("nope")
    with pytest.raises(GGUFError):
        with Editor(p) as e:
            e.drop_tensor("nope")
    assert p.read_bytes() == before


def test_writing_the_edit_to_another_path_leaves_the_original(tmp_path):
    p = make(tmp_path / "m.gguf")
    before = p.read_bytes()
    e = Editor(p)
    e.set("general.name", "zzzz")
    assert e.commit(tmp_path / "out.gguf") == "rewrite"
    e.close()
    assert p.read_bytes() == before
    assert gguflite.open(tmp_path / "out.gguf").metadata["general.name"] == "zzzz"


def test_an_edit_keeps_the_big_endian_byte_order(tmp_path):
    p = make(tmp_path / "m.gguf", ">")
    with Editor(p) as e:
        e.set("added", 1.25)
    with gguflite.open(p) as f:
        assert f.endian == ">" and f.metadata["added"] == 1.25
        np.testing.assert_array_equal(f.tensors["token_embd.weight"].data, np.arange(12).reshape(3, 4))
