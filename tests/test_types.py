"""gguflite's type table against libggml's own ggml_blck_size / ggml_type_size / ggml_type_name,
for every type id, so the table cannot drift (gguf-py's says Q8_1 is 40 bytes; ggml says 36)."""
import pytest

from gguflite.types import GGML_TYPE_COUNT, TYPE_TRAITS, GGMLType

from ggml_bind import lib  # noqa: E402

C = lib.C()  # libggml is a test dependency: a missing one fails, never skips
ffi = lib.ffi()


def test_the_type_count_matches_ggml():
    assert GGML_TYPE_COUNT == C.GGML_TYPE_COUNT


@pytest.mark.parametrize("type_id", range(GGML_TYPE_COUNT))
def test_block_size_and_bytes_match_ggml_for_every_id(type_id):
    blck = C.ggml_blck_size(type_id)
    if type_id not in TYPE_TRAITS:
        assert blck == 0, f"id {type_id} is missing from TYPE_TRAITS but ggml knows it"
        return
    t = TYPE_TRAITS[type_id]
    assert (t.block_size, t.type_size) == (blck, C.ggml_type_size(type_id))
    assert ffi.string(C.ggml_type_name(type_id)).decode().upper() == t.name
    assert bool(C.ggml_is_quantized(type_id)) == (t.dtype is None)
    if t.dtype is not None:
        assert t.dtype.itemsize == t.type_size


def test_removed_ids_have_block_size_zero_in_ggml():
    removed = [i for i in range(GGML_TYPE_COUNT) if i not in TYPE_TRAITS]
    assert removed == [4, 5, 31, 32, 33, 36, 37, 38]
    assert all(C.ggml_blck_size(i) == 0 for i in removed)


def test_the_enum_names_match_the_header_enum():
    header = {name[len("GGML_TYPE_"):]: v for name, v in ffi.typeof("enum ggml_type").relements.items()}
    for t in GGMLType:
        assert header[t.name] == t.value
