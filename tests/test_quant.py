"""gguflite.quant against ggml itself: quantize must write the bytes ``ggml_quantize_chunk``
writes (no importance matrix) for every quantizable type, and dequantize must give the values
ggml's ``to_float`` gives for every type, on inputs with zeros, ties, denormals, huge values,
inf and NaN.  The oracle is libggml through ggml_bind (skipped with a reason when absent)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from gguflite.quant import DEQUANTIZABLE, QUANTIZABLE, dequantize, quantize, swap_block_bytes
from gguflite.types import TYPE_TRAITS, GGMLType as G

from ggml_bind import lib, quant as ggml_quant  # noqa: E402

C, ffi = lib.C(), lib.ffi()  # libggml is a test dependency: a missing one fails, never skips

K_QUANTS = {G.Q2_K, G.Q3_K, G.Q4_K, G.Q5_K, G.Q6_K}
# Plain types ggml has no row quantizer/converter for: their reference is numpy's own cast.
PLAIN = {G.F32, G.F64, G.I8, G.I16, G.I32, G.I64}

SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-39, 3.4e38, -3.4e38, 0.5, -0.5, 65504.0, 65520.0]


def ggml_quantize(t: G, x: np.ndarray) -> np.ndarray:
    """ggml's bytes for ``x`` (rows, n): ``ggml_quantize_chunk``, or for Q8_1, which that
    function has no case for, the type's ``from_float_ref`` (``quantize_row_q8_1_ref``)."""
    if t != G.Q8_1:
        return ggml_quant.quantize_chunk(int(t), x)
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], x.shape[1] // 32 * 36), np.uint8)
    ref = C.ggml_get_type_traits(int(t)).from_float_ref
    ref(ffi.cast("float *", ffi.from_buffer(x)), ffi.from_buffer(out), x.size)
    return out


@st.composite
def float_rows(draw, block_size: int):
    """(rows, n) float32: scaled normal data (optionally on a half-integer grid, for ties) or
    arbitrary float32 bit patterns, with special values dropped in at random places."""
    n_rows = draw(st.integers(1, 3))
    n = block_size * draw(st.integers(1, 2))
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        scale = draw(st.sampled_from([1e-42, 1e-30, 1e-3, 1.0, 7.0, 1e4, 1e30, 3e38]))
        with np.errstate(over="ignore"):  # 3e38 * a normal value may round to inf: fine
            x = (rng.standard_normal((n_rows, n)) * scale).astype(np.float32)
        if draw(st.booleans()):
            x = (np.round(rng.standard_normal((n_rows, n)) * 8) / 2).astype(np.float32)  # ties
    else:
        x = draw(arrays(np.float32, (n_rows, n), elements=st.floats(width=32)))
    x = np.array(x, np.float32)
    for _ in range(draw(st.integers(0, 6))):
        i, j = draw(st.integers(0, n_rows - 1)), draw(st.integers(0, n - 1))
        x[i, j] = draw(st.sampled_from(SPECIALS))
    if draw(st.booleans()):  # a whole special row (all zeros, all NaN, ...)
        x[draw(st.integers(0, n_rows - 1))] = draw(st.sampled_from(SPECIALS))
    return x


def assert_same_floats(got: np.ndarray, want: np.ndarray):
    """Equal bit for bit, except that NaNs only need to be NaN in the same places."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), "NaN positions differ"
    bad = np.nonzero(got.view(np.uint32)[~nan] != want.view(np.uint32)[~nan])[0]
    assert bad.size == 0, f"{bad.size} values differ, first: got {got[~nan][bad[:4]]} want {want[~nan][bad[:4]]}"


# --------------------------------------------------------------------------- quantize


QUANT_CASES = sorted(t for t in QUANTIZABLE if t not in PLAIN)


@pytest.mark.parametrize("t", [t for t in QUANT_CASES if t not in K_QUANTS], ids=lambda t: t.name)
@given(data=st.data())
def test_quantize_writes_the_bytes_ggml_writes(t, data):
    x = data.draw(float_rows(TYPE_TRAITS[t].block_size))
    assert np.array_equal(quantize(x, t), ggml_quantize(t, x))


@pytest.mark.parametrize("t", sorted(K_QUANTS), ids=lambda t: t.name)
@given(data=st.data())
def test_k_quants_write_the_bytes_ggml_writes(t, data):
    x = data.draw(float_rows(256))
    assert np.array_equal(quantize(x, t), ggml_quantize(t, x))


@pytest.mark.parametrize("t", QUANT_CASES, ids=lambda t: t.name)
def test_quantize_matches_ggml_on_a_larger_realistic_tensor(t):
    rng = np.random.default_rng(int(t))
    x = (rng.standard_normal((8, 1024)) * rng.uniform(0.01, 3, (8, 1))).astype(np.float32)
    x[1, :300] = 0.0  # zero blocks
    x[2, 5] = 40.0  # an outlier
    x[3] = np.round(x[3] * 4) / 4  # ties
    assert np.array_equal(quantize(x, t), ggml_quantize(t, x))


@pytest.mark.parametrize("t", [G.F16, G.BF16], ids=lambda t: t.name)
def test_half_types_round_every_nan_payload_overflow_and_tie_as_ggml_does(t):
    bits = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0xFFFFFFFF, 0x7FFFFFFF,
                     0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x3F808000, 0x3F818000, 0x3F80FFFF,
                     0x477FF000, 0x477FEFFF, 0x33000000, 0x33000001, 0x00000001, 0x80000000], np.uint32)
    rng = np.random.default_rng(7)
    x = np.concatenate([bits, rng.integers(0, 2**32, 4076, dtype=np.uint64).astype(np.uint32)]).view(np.float32)
    assert np.array_equal(quantize(x.reshape(4, 1024), t), ggml_quantize(t, x.reshape(4, 1024)))


LEGACY = [G.Q4_0, G.Q4_1, G.Q5_0, G.Q5_1, G.Q8_0, G.Q8_1]


def special_blocks() -> np.ndarray:
    """(n, 32) blocks that each hit one corner of the legacy scale searches: +a and -a both at
    the top magnitude (either first), signed zeros (either first), NaN and inf among normal
    values, all-NaN, +-inf together, denormal-only blocks (scales that round to 0 or whose
    inverse overflows), values that overflow max - min, and exact ties of the rounding."""
    rng = np.random.default_rng(7)
    rows = []
    for first in (1.0, -1.0):
        b = rng.uniform(-1, 1, 32)
        b[3], b[20] = 2.0 * first, -2.0 * first
        rows.append(b)
        z = np.zeros(32)
        z[5] = -0.0 if first > 0 else 0.0
        z[:5] = 0.0 if first > 0 else -0.0
        rows.append(z)
        rows.append(np.where(rng.random(32) < 0.5, 0.0, -0.0) * first)
    for special in (np.nan, np.inf, -np.inf):
        b = rng.standard_normal(32)
        b[rng.integers(0, 32, 3)] = special
        rows.append(b)
    rows.append(np.full(32, np.nan))
    b = rng.standard_normal(32)
    b[[4, 9]] = np.inf, -np.inf
    rows.append(b)
    for scale in (1e-45, 3e-45, 1e-44, 1e-42, 1e-39, 1e-38):
        rows.append(np.round(rng.uniform(-12, 12, 32)) * scale)
    rows.append(np.array([3.4e38, -3.4e38] * 16))
    rows.append(np.round(rng.standard_normal(32) * 8) / 2)
    rows.append(np.full(32, 65520.0))
    return np.array(rows, np.float32)


@pytest.mark.parametrize("t", LEGACY, ids=lambda t: t.name)
@pytest.mark.parametrize("n_blocks", [1, 7, 24], ids=lambda n: f"{n}blocks")
def test_legacy_quantizers_match_ggml_on_special_blocks(t, n_blocks):
    # odd and even block counts: the codecs work on 8-byte words when the count allows
    x = special_blocks()
    x = np.concatenate([x, x[::-1]])[:n_blocks] if n_blocks <= 2 * len(x) else x
    assert np.array_equal(quantize(x, t), ggml_quantize(t, x))
    rolled = np.roll(x.reshape(-1), 5).reshape(-1, 32)  # the corners mixed into other blocks
    assert np.array_equal(quantize(rolled, t), ggml_quantize(t, rolled))


@pytest.mark.parametrize("t", [t for t in LEGACY if t != G.Q8_1], ids=lambda t: t.name)
def test_legacy_codecs_read_strided_blocks_and_write_strided_outputs(t):
    from gguflite.quant import CODECS

    q = ggml_quantize(t, special_blocks()).reshape(-1, TYPE_TRAITS[t].type_size)
    want = ggml_quant.dequantize(int(t), q, q.shape[0] * 32).reshape(-1, 32)
    wide = np.zeros((q.shape[0], 2 * q.shape[1]), np.uint8)
    wide[:, ::2] = q  # blocks whose bytes are not adjacent
    assert_same_floats(CODECS[t].dequantize(wide[:, ::2]), want)
    out = np.zeros((q.shape[0], 64), np.float32)
    CODECS[t].dequantize_into(q, out[:, ::2])  # an output whose floats are not adjacent
    assert_same_floats(np.ascontiguousarray(out[:, ::2]), want)


@pytest.mark.parametrize("t", [G.Q8_0, G.Q4_K], ids=lambda t: t.name)
def test_small_chunks_give_the_same_bytes_as_one_chunk(t):
    x = np.random.default_rng(1).standard_normal((5, 512)).astype(np.float32)
    assert np.array_equal(quantize(x, t, chunk_elements=256), quantize(x, t))


def test_plain_float_types_convert_as_numpy_does():
    x = np.random.default_rng(2).standard_normal((3, 7)).astype(np.float32)
    assert np.array_equal(quantize(x, G.F32).view("<f4"), x)
    assert np.array_equal(quantize(x, G.F64).view("<f8"), x.astype(np.float64))


# --------------------------------------------------------------------------- dequantize


def random_blocks(t: G, n_blocks: int, seed: int) -> np.ndarray:
    """Random bytes, with the f16 scales of block types drawn so most are finite."""
    tr = TYPE_TRAITS[t]
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (n_blocks, tr.type_size), dtype=np.uint8)
    if tr.quantized and t not in (G.MXFP4, G.NVFP4):
        # at the offsets where the f16 d lives, put a finite half most of the time
        halves = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16).view(np.uint8).reshape(-1, 2)
        for off, size, _ in _scale_fields(t):
            if size == 2:
                q[:, off : off + 2] = halves
    return q


def _scale_fields(t: G):
    from gguflite.quant import CODECS

    return CODECS[t].swap


@pytest.mark.parametrize("t", sorted(t for t in DEQUANTIZABLE if t not in PLAIN | {G.Q8_1, G.Q8_K}), ids=lambda t: t.name)
@given(seed=st.integers(0, 2**32 - 1), n_blocks=st.integers(1, 6))
@settings(max_examples=25)
def test_dequantize_gives_the_values_ggml_gives(t, seed, n_blocks):
    q = random_blocks(t, n_blocks, seed)
    n = n_blocks * TYPE_TRAITS[t].block_size
    assert_same_floats(dequantize(q, t, (n,)), ggml_quant.dequantize(int(t), q, n))


def test_q8_1_dequantizes_like_ggml_q8_0_of_the_same_scale_and_quants():
    # ggml has no to_float for Q8_1; its layout is Q8_0's plus the f16 sum s after d.
    q = random_blocks(G.Q8_1, 8, 3)
    as_q8_0 = np.concatenate([q[:, :2], q[:, 4:]], axis=1)
    assert_same_floats(dequantize(q, G.Q8_1, (256,)), ggml_quant.dequantize(int(G.Q8_0), as_q8_0, 256))


def _ggml_base_q8_k():
    """ggml's exported ``quantize_row_q8_K_ref`` / ``dequantize_row_q8_K`` (Q8_K has no
    to_float in the type traits): a two-function cffi handle on libggml-base."""
    import cffi

    base = next(lib.library_dir().glob("libggml-base.*"), None)
    if base is None:
        pytest.skip(f"no libggml-base next to libggml in {lib.library_dir()}")
    f = cffi.FFI()
    f.cdef("void quantize_row_q8_K_ref(const float * x, void * y, int64_t k);"
           "void dequantize_row_q8_K(const void * x, float * y, int64_t k);")
    return f, f.dlopen(str(base))


def test_q8_k_dequantizes_as_ggml_does():
    f, base = _ggml_base_q8_k()
    x = np.random.default_rng(4).standard_normal(512).astype(np.float32)
    q = np.empty(2 * 292, np.uint8)
    base.quantize_row_q8_K_ref(f.cast("float *", f.from_buffer(x)), f.from_buffer(q), 512)
    want = np.empty(512, np.float32)
    base.dequantize_row_q8_K(f.from_buffer(q), f.cast("float *", f.from_buffer(want)), 512)
    assert_same_floats(dequantize(q, G.Q8_K, (512,)), want)
    assert np.abs(want - x).max() <= np.abs(x).max() / 127  # the blocks are real Q8_K


# fp16 scale fields that are not ordinary numbers: +-inf, quiet and signaling NaNs, +-0,
# the smallest subnormal and the largest finite half.
F16_SPECIALS = [0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0xFD55, 0x0000, 0x8000, 0x0001, 0x7BFF, 0xFBFF]


@pytest.mark.parametrize("t", sorted(K_QUANTS), ids=lambda t: t.name)
@given(seed=st.integers(0, 2**32 - 1), n_blocks=st.integers(1, 5))
@settings(max_examples=15)
def test_k_quant_blocks_with_inf_nan_and_zero_scales_dequantize_as_ggml_does(t, seed, n_blocks):
    q = random_blocks(t, n_blocks, seed)
    rng = np.random.default_rng(seed)
    for off, _, count in _scale_fields(t):  # d, and dmin where the type has one
        for c in range(count):
            pick = rng.random(n_blocks) < 0.6
            halves = rng.choice(F16_SPECIALS, n_blocks).astype("<u2").view(np.uint8).reshape(-1, 2)
            q[pick, off + 2 * c : off + 2 * c + 2] = halves[pick]
    n = n_blocks * 256
    assert_same_floats(dequantize(q, t, (n,)), ggml_quant.dequantize(int(t), q, n))


@pytest.mark.parametrize("t", [G.Q4_K, G.Q5_K], ids=lambda t: t.name)
def test_q4_k_q5_k_dequantize_every_scale_with_every_kind_of_d_as_ggml_does(t):
    # Q4_K scales its high-nibble sub-blocks by d * sc / 16 (codes left as 16 * q), exact
    # only if that product never rounds differently from d * sc: sweep d and dmin over the
    # fp16 specials, the subnormals' edges and every 97th bit pattern, next to random 6-bit
    # scales and mins (all 64 values occur in each of the 8 places over these blocks).
    halves = np.array(F16_SPECIALS + [0x0002, 0x0003, 0x03FF, 0x0400, 0x8001] + list(range(0, 1 << 16, 97)), "<u2")
    n_blocks = halves.size * 4
    q = random_blocks(t, n_blocks, 3)
    q[:, 0:2] = np.repeat(halves, 4).view(np.uint8).reshape(-1, 2)  # d
    q[:, 2:4] = np.tile(halves, 4).view(np.uint8).reshape(-1, 2)  # dmin, in another order
    n = n_blocks * 256
    assert_same_floats(dequantize(q, t, (n,)), ggml_quant.dequantize(int(t), q, n))


@pytest.mark.parametrize("t", sorted(K_QUANTS | {G.Q8_K}), ids=lambda t: t.name)
def test_k_quant_dequantize_is_the_same_for_any_chunk_size_and_output_layout(t):
    # 1100 blocks: more than one default chunk (1024 blocks), so both the cached and the
    # broadcast shift patterns of kquants run; dequantize_into must honour a strided output.
    from gguflite.quant import CODECS

    q = random_blocks(t, 1100, 9)
    whole = dequantize(q, t, (1100 * 256,), chunk_elements=1 << 20)
    assert_same_floats(dequantize(q, t, (1100 * 256,), chunk_elements=3 * 256), whole)
    assert_same_floats(dequantize(q, t, (1100 * 256,)), whole)
    if t != G.Q8_K:
        assert_same_floats(whole, ggml_quant.dequantize(int(t), q, 1100 * 256))
    strided = np.full((5, 512), 7.0, np.float32)
    CODECS[t].dequantize_into(q[:5], strided[:, ::2])
    assert_same_floats(strided[:, ::2], whole[: 5 * 256].reshape(5, 256))
    assert (strided[:, 1::2] == 7.0).all()


def test_q8_k_blocks_with_inf_nan_and_zero_scales_dequantize_as_ggml_does():
    f, base = _ggml_base_q8_k()
    q = random_blocks(G.Q8_K, 8, 8)
    d = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, 3.4e38, 0.25], "<f4")
    q[:, :4] = d.view(np.uint8).reshape(8, 4)
    want = np.empty(8 * 256, np.float32)
    base.dequantize_row_q8_K(f.from_buffer(q), f.cast("float *", f.from_buffer(want)), want.size)
    assert_same_floats(dequantize(q, G.Q8_K, (8, 256)).reshape(-1), want)


SMALL_TYPES = [G.TQ1_0, G.TQ2_0, G.MXFP4, G.NVFP4, G.Q1_0, G.Q2_0, G.IQ4_NL, G.IQ4_XS]


def small_type_special_blocks(t: G, n_blocks: int, seed: int) -> np.ndarray:
    """Random blocks whose scale fields take every special value: fp16 d from F16_SPECIALS
    (TQ1_0, TQ2_0, Q1_0, Q2_0, IQ4_NL, IQ4_XS), every E8M0 byte (MXFP4: 0 and 1 are the denormal
    patterns, 254/255 give 2^126/2^127), every UE4M3 byte (NVFP4: 0 and 0x7f are zero)."""
    q = random_blocks(t, n_blocks, seed)
    rng = np.random.default_rng(seed)
    if t == G.MXFP4:
        q[:, 0] = np.arange(n_blocks) % 256
    elif t == G.NVFP4:
        q[:, :4] = (np.arange(4 * n_blocks) % 256).reshape(n_blocks, 4)
    else:
        off = _scale_fields(t)[0][0]
        halves = np.array(F16_SPECIALS * (n_blocks // len(F16_SPECIALS) + 1), "<u2")[:n_blocks]
        q[:, off : off + 2] = halves.view(np.uint8).reshape(-1, 2)
    return q[rng.permutation(n_blocks)]


@pytest.mark.parametrize("t", SMALL_TYPES, ids=lambda t: t.name)
def test_small_types_with_special_scales_dequantize_as_ggml_does(t):
    # 256 blocks: every E8M0 / UE4M3 byte and every special fp16 d, several times; small
    # chunks, an odd block count, and 1100 blocks in one chunk (past TQ1_0's cached pattern)
    bs = TYPE_TRAITS[t].block_size
    for n_blocks in (256, 67, 1100):
        q = small_type_special_blocks(t, n_blocks, n_blocks)
        n = n_blocks * bs
        want = ggml_quant.dequantize(int(t), q, n)
        assert_same_floats(dequantize(q, t, (n,)), want)
        assert_same_floats(dequantize(q, t, (n,), chunk_elements=5 * bs), want)
        assert_same_floats(dequantize(q, t, (n,), chunk_elements=1 << 20), want)  # > 1024 blocks at once


@pytest.mark.parametrize("t", SMALL_TYPES, ids=lambda t: t.name)
def test_small_type_codecs_read_strided_blocks_and_write_strided_outputs(t):
    from gguflite.quant import CODECS

    bs = TYPE_TRAITS[t].block_size
    q = small_type_special_blocks(t, 12, 3)
    want = ggml_quant.dequantize(int(t), q, q.shape[0] * bs).reshape(-1, bs)
    wide = np.zeros((q.shape[0], 2 * q.shape[1]), np.uint8)
    wide[:, ::2] = q  # blocks whose bytes are not adjacent
    assert_same_floats(CODECS[t].dequantize(wide[:, ::2]), want)
    out = np.full((q.shape[0], 2 * bs), 7.0, np.float32)
    CODECS[t].dequantize_into(q, out[:, ::2])  # an output whose floats are not adjacent
    assert_same_floats(np.ascontiguousarray(out[:, ::2]), want)
    assert (out[:, 1::2] == 7.0).all()


@pytest.mark.parametrize("t", sorted(PLAIN - {G.F32}), ids=lambda t: t.name)
def test_integer_and_f64_tensors_dequantize_by_value(t):
    dt = TYPE_TRAITS[t].dtype
    v = np.arange(-20, 20, dtype=dt)
    assert np.array_equal(dequantize(v.view(np.uint8), t, (4, 10)), v.astype(np.float32).reshape(4, 10))


# --------------------------------------------------------------------------- round trip


# Largest |dequantize(quantize(x)) - x| relative to the row's largest magnitude, from each
# type's step size: Q8_0 rounds to amax/127 steps (error <= amax/254), Q4_0's range -8..7
# clips the top value by one step of amax/8, affine types err by (max-min)/levels/2, the
# ternary types by amax/2, Q1_0 (sign times mean |x|) by less than amax, NVFP4 by half its
# widest E2M1 step (4 → 6) on a scale of amax/6 rounded to 3 mantissa bits.  K-quant bounds
# are 1.4x the largest error seen over 100 seeds (their scales are searched, not derived).
ERROR_BOUND = {
    G.F16: 2**-11, G.BF16: 2**-8, G.F64: 0.0, G.Q8_0: 0.005, G.Q8_1: 0.005,
    G.Q4_0: 0.13, G.Q4_1: 0.07, G.Q5_0: 0.065, G.Q5_1: 0.035,
    G.Q6_K: 0.023, G.Q5_K: 0.057, G.Q4_K: 0.122, G.Q3_K: 0.25, G.Q2_K: 0.5,
    G.MXFP4: 0.34, G.NVFP4: 0.2, G.TQ1_0: 0.51, G.TQ2_0: 0.51, G.Q2_0: 0.51, G.Q1_0: 1.0,
}


@pytest.mark.parametrize("t", sorted(ERROR_BOUND), ids=lambda t: t.name)
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_round_trip_error_is_bounded_per_type(t, seed):
    x = np.random.default_rng(seed).standard_normal((4, 512)).astype(np.float32)
    y = dequantize(quantize(x, t), t, x.shape)
    err = np.abs(y - x).max(axis=1) / np.abs(x).max(axis=1)
    assert err.max() <= ERROR_BOUND[t]


def test_every_quantizable_type_has_an_error_bound():
    assert QUANTIZABLE - {G.F32} <= set(ERROR_BOUND)


# --------------------------------------------------------------------------- big endian


@pytest.mark.parametrize("t", sorted(QUANT_CASES), ids=lambda t: t.name)
def test_big_endian_blocks_swap_back_to_the_little_endian_bytes(t):
    x = np.random.default_rng(5).standard_normal((2, 512)).astype(np.float32)
    le = quantize(x, t)
    be = quantize(x, t, endian=">")
    assert np.array_equal(swap_block_bytes(be, t).reshape(le.shape), le)
    assert np.array_equal(dequantize(be, t, x.shape, endian=">"), dequantize(le, t, x.shape))


def test_swapping_a_q8_0_block_reverses_only_its_scale_bytes():
    q = random_blocks(G.Q8_0, 3, 6)
    s = swap_block_bytes(q, G.Q8_0).reshape(q.shape)
    assert np.array_equal(s[:, :2], q[:, 1::-1]) and np.array_equal(s[:, 2:], q[:, 2:])


def test_swapping_plain_types_is_numpy_byteswap():
    v = np.random.default_rng(7).standard_normal(10).astype("<f4")
    assert np.array_equal(swap_block_bytes(v.view(np.uint8), G.F32).view("<f4"), v.byteswap())


def test_a_big_endian_typed_view_is_read_as_big_endian():
    v = np.arange(6, dtype=">f4")
    assert np.array_equal(dequantize(v, G.F32, (2, 3)), np.arange(6, dtype=np.float32).reshape(2, 3))


# --------------------------------------------------------------------------- errors


def test_a_row_that_is_not_whole_blocks_is_refused():
    with pytest.raises(ValueError, match="multiple of the block size 32"):
        quantize(np.zeros((2, 40), np.float32), G.Q8_0)


def test_types_without_a_quantizer_are_refused_with_the_supported_list():
    with pytest.raises(ValueError, match="cannot quantize to IQ2_XXS; supported: .*Q4_K"):
        quantize(np.zeros(256, np.float32), G.IQ2_XXS)


def test_data_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="needs 68 bytes, got 67"):
        dequantize(np.zeros(67, np.uint8), G.Q8_0, (2, 32))


def test_quantize_keeps_leading_dimensions():
    assert quantize(np.zeros((2, 3, 256), np.float32), G.Q4_K).shape == (2, 3, 144)
