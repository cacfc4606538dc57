"""gguflite.quant on the grid IQ types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M).

Dequantize must give the values ggml's ``to_float`` gives, byte for byte, on random blocks
(scales finite, zero, denormal, inf and NaN) and on blocks ggml's own quantizer wrote.  The
codebooks, read back from libggml by ``gguflite.quant.grids``, must equal the independent copy
the ``gguf`` package ships.  The oracle is libggml through ggml_bind (a test dependency)."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gguflite
from gguflite import ggml_locate
from gguflite.quant import DEQUANTIZABLE, QUANTIZABLE, dequantize, grids, swap_block_bytes
from gguflite.types import TYPE_TRAITS, GGMLType as G

from ggml_bind import quant as ggml_quant

from tests.test_quant import assert_same_floats

GRID_TYPES = [G.IQ2_XXS, G.IQ2_XS, G.IQ2_S, G.IQ3_XXS, G.IQ3_S, G.IQ1_S, G.IQ1_M]
ids = lambda t: t.name  # noqa: E731

# f16 scales beyond the usual small normals: zeros, the smallest denormal, the largest half,
# infinities and NaNs (quiet, signaling, negative)
SPECIAL_HALVES = [0x0000, 0x8000, 0x0001, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE00]


def random_blocks(t: G, n_blocks: int, seed: int) -> np.ndarray:
    """Random bytes with the block's f16 d set: mostly small normal halves, some specials.
    IQ1_M keeps d in the top nibbles of its four u16 scales (bytes 48-55)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (n_blocks, TYPE_TRAITS[t].type_size), dtype=np.uint8)
    d = (rng.standard_normal(n_blocks) * rng.choice([1e-4, 0.01, 1.0, 300.0])).astype(np.float16).view(np.uint16)
    special = rng.random(n_blocks) < 0.25
    d[special] = rng.choice(SPECIAL_HALVES, special.sum())
    if t == G.IQ1_M:
        sc = q[:, 48:56].copy().view("<u2").astype(np.uint32)  # (n, 4)
        nibbles = (d[:, None].astype(np.uint32) >> np.array([0, 4, 8, 12])) & 0xF
        sc = (sc & 0x0FFF) | (nibbles << 12)
        q[:, 48:56] = sc.astype("<u2").view(np.uint8)
    else:
        q[:, 0:2] = d.astype("<u2").view(np.uint8).reshape(-1, 2)
    return q


def ggml_dequantize(t: G, q: np.ndarray) -> np.ndarray:
    return ggml_quant.dequantize(int(t), q, q.shape[0] * 256)


@pytest.fixture
def fresh_grids(monkeypatch, tmp_path):
    """An empty in-memory and on-disk grid cache (XDG_CACHE_HOME in tmp_path) for one test;
    afterwards the in-memory cache is dropped again so that later tests load normally."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    grids.load.cache_clear()
    yield tmp_path / "cache" / "gguflite"
    grids.load.cache_clear()


# --------------------------------------------------------------------------- against ggml


@pytest.mark.parametrize("t", GRID_TYPES, ids=ids)
@given(seed=st.integers(0, 2**32 - 1), n_blocks=st.integers(1, 8))
@settings(max_examples=30)
def test_grid_types_dequantize_to_the_values_ggml_gives(t, seed, n_blocks):
    q = random_blocks(t, n_blocks, seed)
    assert_same_floats(dequantize(q, t, (n_blocks * 256,)), ggml_dequantize(t, q))


@pytest.mark.parametrize("t", GRID_TYPES, ids=ids)
def test_a_larger_tensor_in_small_chunks_dequantizes_as_ggml_does(t):
    q = random_blocks(t, 300, int(t))
    got = dequantize(q, t, (6, 50 * 256), chunk_elements=7 * 256)  # chunks split rows
    assert_same_floats(got.reshape(-1), ggml_dequantize(t, q))


@pytest.mark.parametrize("t", GRID_TYPES, ids=ids)
def test_nan_and_inf_scales_give_the_exact_bits_ggml_gives_sign_of_nan_included(t):
    # assert_same_floats lets NaNs differ; ggml flips the sign bit of NaN values too
    q = random_blocks(t, 64, 5)
    halves = np.array([0x7E00, 0xFE00, 0x7C01, 0xFC01, 0x7C00, 0xFC00, 0x8000, 0x0001], "<u2")
    d = np.tile(halves, 8)
    if t == G.IQ1_M:
        sc = q[:, 48:56].copy().view("<u2").astype(np.uint32)
        sc = (sc & 0x0FFF) | (((d[:, None].astype(np.uint32) >> np.array([0, 4, 8, 12])) & 0xF) << 12)
        q[:, 48:56] = sc.astype("<u2").view(np.uint8)
    else:
        q[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    got = dequantize(q, t, (64 * 256,))
    want = ggml_dequantize(t, q)
    assert np.isnan(want).any()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("t", GRID_TYPES, ids=ids)
def test_grid_codecs_read_strided_blocks_and_write_strided_outputs(t):
    from gguflite.quant import CODECS

    q = random_blocks(t, 6, int(t) + 1)
    want = ggml_dequantize(t, q).reshape(6, 256)
    wide = np.zeros((6, 2 * q.shape[1]), np.uint8)
    wide[:, ::2] = q  # blocks whose bytes are not adjacent
    assert_same_floats(CODECS[t].dequantize(wide[:, ::2]), want)
    out = np.full((6, 512), 7.0, np.float32)
    CODECS[t].dequantize_into(q, out[:, ::2])  # an output whose floats are not adjacent
    assert_same_floats(np.ascontiguousarray(out[:, ::2]), want)
    assert (out[:, 1::2] == 7.0).all()


@pytest.mark.slow
@pytest.mark.parametrize("t", GRID_TYPES, ids=ids)
def test_blocks_written_by_ggml_quantizer_decode_as_ggml_decodes_them(t):
    rng = np.random.default_rng(int(t))
    x = (rng.standard_normal((2, 256)) * [[0.02], [3.0]]).astype(np.float32)
    imatrix = rng.uniform(0.5, 2, 256).astype(np.float32)  # IQ2_XXS, IQ2_XS, IQ1_S need one
    q = ggml_quant.quantize_chunk(int(t), x, imatrix)
    y = dequantize(q, t, x.shape)
    assert_same_floats(y.reshape(-1), ggml_dequantize(t, q))
    rel = np.abs(y - x).mean(axis=1) / np.abs(x).mean(axis=1)
    assert (rel < REAL_CODE_ERROR[t]).all()  # the blocks are real codes of x, not noise


# Mean |y - x| / mean |x| of ggml's own codes for the rows above: 1.4x what ggml 0.25.3 gives
# (random blocks with a scale of the same size give more than 1).
REAL_CODE_ERROR = {G.IQ2_XXS: 0.5, G.IQ2_XS: 0.45, G.IQ2_S: 0.35, G.IQ3_XXS: 0.26, G.IQ3_S: 0.2,
                   G.IQ1_S: 0.7, G.IQ1_M: 0.7}


def test_a_grid_type_tensor_read_from_a_gguf_file_dequantizes_as_ggml_does(tmp_path):
    q = random_blocks(G.IQ3_S, 4, 11)
    with gguflite.GGUFWriter(tmp_path / "m.gguf") as w:
        w.add("general.architecture", "llama")
        w.add_tensor("blk.0.ffn_up.weight", (2, 512), G.IQ3_S, q.reshape(-1))
    with gguflite.open(tmp_path / "m.gguf") as f:
        ti = f.tensors["blk.0.ffn_up.weight"]
        got = dequantize(ti.data, ti.type, ti.shape)
    assert got.shape == (2, 512)
    assert_same_floats(got.reshape(-1), ggml_dequantize(G.IQ3_S, q))


def test_grid_types_are_registered_for_dequantize_only():
    assert set(GRID_TYPES) <= DEQUANTIZABLE and not set(GRID_TYPES) & QUANTIZABLE


# --------------------------------------------------------------------------- the codebooks


GGUF_CLASSES = {"iq2xxs": "IQ2_XXS", "iq2xs": "IQ2_XS", "iq2s": "IQ2_S", "iq3xxs": "IQ3_XXS",
                "iq3s": "IQ3_S", "iq1s": "IQ1_S"}


@pytest.mark.parametrize("name", sorted(GGUF_CLASSES))
def test_grids_read_from_libggml_equal_the_copy_in_the_gguf_package(name):
    from gguf import quants

    cls = getattr(quants, GGUF_CLASSES[name])
    cls.init_grid()  # gguf decodes its packed hex table into float values
    theirs = np.asarray(cls.grid).reshape(cls.grid_shape)
    ours = getattr(grids.load(), name)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours.astype(np.float32), theirs)


def test_the_sign_table_formula_equals_the_gguf_package_ksigns():
    from gguf import quants

    from gguflite.quant.iq import _ksigns

    assert _ksigns().tobytes() == bytes(quants.IQ2_XXS.ksigns)


def test_the_grids_are_cached_per_ggml_version_and_reused(fresh_grids, monkeypatch):
    g = grids.load()
    path = fresh_grids / f"iq-grids-{g.version}.npz"
    assert path.is_file() and [p.name for p in fresh_grids.iterdir()] == [path.name]  # no temp left
    grids.load.cache_clear()

    def no_extract(_path):
        raise AssertionError("extracted again despite the cache")

    monkeypatch.setattr(grids, "extract", no_extract)
    g2 = grids.load()
    assert g2 is not g and all(np.array_equal(getattr(g, n), getattr(g2, n)) for n, *_ in grids.GRID_SPECS)


def test_a_corrupt_cache_file_is_replaced(fresh_grids):
    version = grids.load().version
    path = fresh_grids / f"iq-grids-{version}.npz"
    path.write_bytes(b"PK\x03\x04 not a zip")
    grids.load.cache_clear()
    g = grids.load()
    assert g.iq2xxs.shape == (256, 8)
    with np.load(path) as z:  # rewritten, whole
        assert np.array_equal(z["iq1s"], g.iq1s)


def test_an_unwritable_cache_folder_only_costs_the_cache(fresh_grids, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    g = grids.load()
    assert g.iq3s.shape == (512, 4)
    q = random_blocks(G.IQ3_S, 2, 3)
    assert_same_floats(dequantize(q, G.IQ3_S, (512,)), ggml_dequantize(G.IQ3_S, q))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: {"iq2xs": np.where(g.iq2xs == 0x19, 0x18, g.iq2xs).astype(np.uint8)}, "iq2xs grid entry .* outside"),
        (lambda g: {"iq1s": np.concatenate([g.iq1s[:1], g.iq1s[:-1]])}, "iq1s grid has repeated entries"),
        (lambda g: {"iq3xxs": g.iq3xxs[:255]}, r"iq3xxs grid is uint8 \(255, 4\), expected uint8 \(256, 4\)"),
        (lambda g: {"iq2s": g.iq2s.astype(np.int16)}, "iq2s grid is int16"),
    ],
    ids=["value outside the alphabet", "repeated entry", "short table", "wrong dtype"],
)
def test_tables_unlike_the_documented_ones_are_refused(change, message):
    bad = dataclasses.replace(grids.load(), **change(grids.load()))
    with pytest.raises(grids.GridTablesError, match=message):
        grids.check(bad, "libggml-base.so")


def test_grids_from_a_changed_libggml_are_refused_before_any_value_is_decoded(fresh_grids, monkeypatch):
    real = grids.extract

    def changed(path):
        g = real(path)
        return dataclasses.replace(g, iq3s=(g.iq3s + 1).astype(np.uint8))  # even values: not iq3s

    monkeypatch.setattr(grids, "extract", changed)
    with pytest.raises(grids.GridTablesError, match="iq3s grid entry 0 is .* outside"):
        dequantize(random_blocks(G.IQ3_S, 1, 0), G.IQ3_S, (256,))
    assert not fresh_grids.exists() or not any(fresh_grids.iterdir())  # nothing bad cached


def test_a_libggml_with_other_block_sizes_is_refused_before_probing(fresh_grids, monkeypatch):
    # probe blocks of the wrong size would make ggml read past them: the sizes are checked first
    changed = dataclasses.replace(TYPE_TRAITS[G.IQ2_S], type_size=84)
    monkeypatch.setitem(grids.TYPE_TRAITS, G.IQ2_S, changed)
    with pytest.raises(grids.GridTablesError, match="IQ2_S blocks are 82 bytes per 256 values, expected 84 per 256"):
        grids.load()


def test_a_missing_libggml_gives_an_error_that_says_what_to_install(fresh_grids, monkeypatch, tmp_path):
    empty = tmp_path / "no-ggml-here"
    empty.mkdir()
    monkeypatch.setenv("GGML_LIBRARY_DIR", str(empty))
    want = r"no libggml-base\.so .*no-ggml-here.*llama-cpp-python.*GGML_LIBRARY_DIR"
    with pytest.raises(grids.GridTablesError, match=want):
        dequantize(np.zeros(66, np.uint8), G.IQ2_XXS, (256,))
    monkeypatch.setenv("GGML_LIBRARY_DIR", str(tmp_path / "absent"))
    with pytest.raises(ImportError, match="is not a folder.*IQ2_XXS, IQ2_XS"):
        dequantize(np.zeros(50, np.uint8), G.IQ1_S, (256,))


def test_without_llama_cpp_python_the_error_names_it(fresh_grids, monkeypatch):
    monkeypatch.delenv("GGML_LIBRARY_DIR", raising=False)
    monkeypatch.setattr(ggml_locate.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(grids.GridTablesError, match="llama_cpp is not installed.*install llama-cpp-python"):
        grids.load()


def test_other_types_dequantize_without_libggml(fresh_grids, monkeypatch, tmp_path):
    monkeypatch.setenv("GGML_LIBRARY_DIR", str(tmp_path))
    q = np.zeros((1, 18), np.uint8)
    q[0, :2] = np.frombuffer(np.float16(2).tobytes(), np.uint8)
    assert dequantize(q, G.IQ4_NL, (32,)).tolist() == [-254.0] * 32  # d * kvalues_iq4nl[0]


# --------------------------------------------------------------------------- big endian


@pytest.mark.parametrize("t", GRID_TYPES, ids=ids)
def test_big_endian_blocks_dequantize_like_the_little_endian_ones(t):
    q = random_blocks(t, 5, 100 + int(t))
    be = swap_block_bytes(q, t)
    assert not np.array_equal(be, q.reshape(-1))  # some field did move
    assert np.array_equal(swap_block_bytes(be, t), q.reshape(-1))
    assert_same_floats(dequantize(be, t, (5, 256), endian=">"), dequantize(q, t, (5, 256)))


def test_iq2_xxs_swaps_its_d_and_its_u32_words():
    # dequantize_row_iq2_xxs memcpy's each 8 bytes of qs into two uint32 (4 grid bytes, then
    # 4 x 7 sign bits and the scale): those words are the multi-byte fields
    q = random_blocks(G.IQ2_XXS, 2, 7)
    s = swap_block_bytes(q, G.IQ2_XXS).reshape(q.shape)
    assert np.array_equal(s[:, :2], q[:, 1::-1])
    assert np.array_equal(s[:, 2:].reshape(2, 16, 4), q[:, 2:].reshape(2, 16, 4)[:, :, ::-1])


def test_a_gguf_file_of_grid_tensors_converted_to_big_endian_dequantizes_the_same(tmp_path):
    from gguflite.endian import convert_endian

    with gguflite.GGUFWriter(tmp_path / "le.gguf") as w:
        w.add("general.architecture", "llama")
        for t in GRID_TYPES:
            w.add_tensor(f"x.{t.name}", (2, 256), t, random_blocks(t, 2, int(t)).reshape(-1))
    convert_endian(tmp_path / "le.gguf", tmp_path / "be.gguf", "big")
    with gguflite.open(tmp_path / "le.gguf") as le, gguflite.open(tmp_path / "be.gguf") as be:
        assert be.endian == ">"
        for t in GRID_TYPES:
            a, b = le.tensors[f"x.{t.name}"], be.tensors[f"x.{t.name}"]
            assert_same_floats(dequantize(b.raw, b.type, b.shape, endian=">"), dequantize(a.raw, a.type, a.shape))
