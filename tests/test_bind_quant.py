"""ggml_bind.quant: ggml's quantizer as an oracle, checked against the `gguf` package's numpy
quantizers (bit-exact where gguf implements the type) and refusing bad arguments in Python."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from ggml_bind.errors import GGMLError, GGMLShapeError, GGMLTypeError

from ggml_bind import lib  # noqa: E402

lib.load()  # libggml is a test dependency (llama-cpp-python): a missing one fails, never skips

from gguf import GGMLQuantizationType as Q, quants  # noqa: E402

from ggml_bind import quant  # noqa: E402

# Types for which gguf-py has a numpy quantizer (the others raise NotImplementedError there).
GGUF_QUANTIZES = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.TQ1_0, Q.TQ2_0, Q.MXFP4, Q.BF16]
# Types ggml quantizes without an importance matrix, whose output gguf-py can decode.
DECODABLE = GGUF_QUANTIZES + [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_NL, Q.IQ4_XS, Q.F16]

# `+ 0.0` turns -0.0 into 0.0: on an all-(-0.0) block ggml stores d = -0.0 (0x8000) while
# gguf-py stores +0.0; ggml is the reference, gguf-py is only bit-exact away from that case.
finite = st.floats(-1e4, 1e4, width=32, allow_nan=False).map(lambda v: v + 0.0)


def rows(qtype, n_rows=3, blocks=2, seed=0):
    blck = quant.type_info(int(qtype))[1]
    return np.random.default_rng(seed).standard_normal((n_rows, blck * blocks)).astype(np.float32) * 3


@pytest.mark.parametrize("qtype", GGUF_QUANTIZES, ids=lambda t: t.name)
def test_quantize_chunk_is_bit_exact_with_gguf_py(qtype):
    x = rows(qtype)
    ours = quant.quantize_chunk(int(qtype), x)
    ref = quants.quantize(x, qtype)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref.view(np.uint8))


@settings(max_examples=30)
@given(arrays(np.float32, (2, 64), elements=finite))
def test_q8_0_and_q4_0_match_gguf_py_on_arbitrary_values(x):
    for qtype in (Q.Q8_0, Q.Q4_0):
        with np.errstate(all="ignore"):  # gguf-py divides by zero on all-zero blocks
            ref = quants.quantize(x, qtype)
        np.testing.assert_array_equal(quant.quantize_chunk(int(qtype), x), ref)


@pytest.mark.parametrize("qtype", DECODABLE, ids=lambda t: t.name)
def test_dequantize_matches_gguf_py_and_roughly_inverts_quantize(qtype):
    x = rows(qtype, seed=1)
    if qtype in (Q.TQ1_0, Q.TQ2_0):  # ternary types keep {-d, 0, d}: give them such input
        x = np.sign(x) * np.float32(2.0)
    q = quant.quantize_chunk(int(qtype), x)
    d = quant.dequantize(int(qtype), q)
    assert d.dtype == np.float32 and d.shape == (x.size,)
    np.testing.assert_array_equal(d, quants.dequantize(q, qtype).reshape(-1).astype(np.float32))
    # a quantizer keeps the values near the input: error well below the spread of x
    assert np.abs(d - x.ravel()).mean() < 0.3 * np.abs(x).mean()


def test_quantize_with_an_importance_matrix_uses_it():
    x = rows(Q.Q4_K, seed=2)
    imat = np.ones(x.shape[1], np.float32)
    imat[:16] = 1000.0  # care a lot about the first 16 columns
    plain = quant.dequantize(int(Q.Q4_K), quant.quantize_chunk(int(Q.Q4_K), x)).reshape(x.shape)
    weighted = quant.dequantize(int(Q.Q4_K), quant.quantize_chunk(int(Q.Q4_K), x, imat)).reshape(x.shape)
    assert np.abs(weighted - x)[:, :16].mean() < np.abs(plain - x)[:, :16].mean()


@pytest.mark.slow  # ggml_quantize_init builds the IQ2 grids (seconds)
def test_iq2_xxs_needs_an_imatrix_and_works_with_one():
    x = rows(Q.IQ2_XXS, n_rows=1, blocks=1)
    with pytest.raises(GGMLError, match="importance matrix"):
        quant.quantize_chunk(int(Q.IQ2_XXS), x)
    q = quant.quantize_chunk(int(Q.IQ2_XXS), x, np.ones(x.shape[1], np.float32))
    assert q.shape == (1, 66)
    d = quant.dequantize(int(Q.IQ2_XXS), q)
    assert np.isfinite(d).all()


def test_zero_rows_give_an_empty_result():
    assert quant.quantize_chunk(int(Q.Q8_0), np.zeros((0, 32), np.float32)).shape == (0, 34)


@pytest.mark.parametrize(
    "x, exc",
    [
        (np.zeros((2, 32), np.float64), GGMLTypeError),  # wrong dtype
        (np.zeros(32, np.float32), GGMLShapeError),  # not 2-D
        (np.zeros((2, 33), np.float32), GGMLShapeError),  # not whole blocks
        (np.zeros((2, 0), np.float32), GGMLShapeError),  # empty rows
        (np.zeros((32, 2), np.float32).T, GGMLShapeError),  # not C-contiguous
        ([[0.0] * 32], GGMLTypeError),  # not an ndarray
    ],
)
def test_quantize_chunk_refuses_bad_input_before_calling_ggml(x, exc):
    with pytest.raises(exc):
        quant.quantize_chunk(int(Q.Q8_0), x)


@pytest.mark.parametrize("type_id", [4, 5, 31, 43, -1, int(Q.Q8_1), int(Q.Q8_K), int(Q.I32)])
def test_quantize_chunk_refuses_types_ggml_cannot_produce(type_id):
    with pytest.raises(GGMLTypeError):
        quant.quantize_chunk(type_id, np.zeros((1, 256), np.float32))


def test_quantize_chunk_refuses_a_badly_shaped_imatrix():
    with pytest.raises(GGMLShapeError):
        quant.quantize_chunk(int(Q.Q4_K), rows(Q.Q4_K), np.ones(3, np.float32))


def test_grid_quantizers_refuse_nan_instead_of_aborting():
    x = rows(Q.IQ3_XXS, n_rows=1, blocks=1)
    x[0, 5] = np.nan
    with pytest.raises(GGMLError, match="finite"):
        quant.quantize_chunk(int(Q.IQ3_XXS), x)


@pytest.mark.parametrize(
    "data, n, exc",
    [
        (bytes(33), None, GGMLShapeError),  # not whole Q8_0 blocks
        (bytes(34), 64, GGMLShapeError),  # too few bytes for 64 values
        (bytes(68), 32, GGMLShapeError),  # too many bytes for 32 values
        (bytes(34), 31, GGMLShapeError),  # not a multiple of the block size
        (np.zeros((34, 2), np.uint8).T, None, GGMLShapeError),  # not contiguous
        (3.5, None, GGMLTypeError),
    ],
)
def test_dequantize_refuses_mismatched_buffers(data, n, exc):
    with pytest.raises(exc):
        quant.dequantize(int(Q.Q8_0), data, n)


def test_dequantize_reads_plain_types_and_bytes_objects():
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(quant.dequantize(int(Q.F32), x.tobytes()), x)
    np.testing.assert_array_equal(quant.dequantize(int(Q.F16), x.astype(np.float16)), x)
