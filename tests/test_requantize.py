"""gguflite requantize against llama.cpp's own ``llama_model_quantize`` (llama-cpp-python,
one thread, no importance matrix): the same type for every tensor, the same bytes, the same
metadata, on the tiny LLaVA LLM and on a synthetic 11-layer llama whose 256-wide rows take
K-quants (and whose layer count exposes llama.cpp's sorted-name layer counting)."""
import os

import numpy as np
import pytest

import gguflite
from gguflite import GGUFWriter, cli
from gguflite.quant.requantize import SCHEMES, plan, requantize, tensor_types, use_more_bits
from gguflite.types import GGMLType as G

import llama_cpp
from tests.llama_cpp_peer import llama_cpp_logits, mtmd_encode


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    from tests.checkpoints import make_gguf

    llm, _, _ = make_gguf("llava-1.5", tmp_path_factory.mktemp("requant-llava"), outtype="f32")
    return llm


@pytest.fixture(scope="session")
def llama11(tiny_llm, tmp_path_factory):
    """An 11-layer llama with 256-wide rows: the tiny LLM's metadata, new sizes, random weights."""
    path = str(tmp_path_factory.mktemp("requant-llama11") / "llama11-f32.gguf")
    n_layer, n_embd, n_ff, n_vocab = 11, 256, 512, 320
    sizes = {"llama.block_count": n_layer, "llama.embedding_length": n_embd, "llama.feed_forward_length": n_ff,
             "llama.rope.dimension_count": n_embd // 4}
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    with gguflite.open(tiny_llm) as f:
        out = GGUFWriter(path)
        for key, fld in f.fields.items():
            if key in sizes:
                out.add(key, sizes[key], type=fld.type)
            else:
                out.add_field(fld)
    out.add_tensor("token_embd.weight", (n_vocab, n_embd), "f32", w(n_vocab, n_embd))
    for i in range(n_layer):
        out.add_tensor(f"blk.{i}.attn_norm.weight", (n_embd,), "f32", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            out.add_tensor(f"blk.{i}.{name}.weight", (n_embd, n_embd), "f32", w(n_embd, n_embd))
        out.add_tensor(f"blk.{i}.ffn_norm.weight", (n_embd,), "f32", np.ones(n_embd, np.float32))
        out.add_tensor(f"blk.{i}.ffn_gate.weight", (n_ff, n_embd), "f32", w(n_ff, n_embd))
        out.add_tensor(f"blk.{i}.ffn_up.weight", (n_ff, n_embd), "f32", w(n_ff, n_embd))
        out.add_tensor(f"blk.{i}.ffn_down.weight", (n_embd, n_ff), "f32", w(n_embd, n_ff))
    out.add_tensor("output_norm.weight", (n_embd,), "f32", np.ones(n_embd, np.float32))
    out.add_tensor("output.weight", (n_vocab, n_embd), "f32", w(n_vocab, n_embd))
    out.write()
    return path


def llama_cpp_quantize(src: str, dst: str, scheme: str) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(SCHEMES[scheme].file_type)
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) == 0


def assert_same_model(ours: str, ref: str):
    with gguflite.open(ours) as a, gguflite.open(ref) as b:
        assert sorted(a.tensors) == sorted(b.tensors)
        for name, t in b.tensors.items():
            assert (name, a.tensors[name].type_name) == (name, t.type_name)
            assert np.array_equal(a.tensors[name].raw, t.raw), f"{name} ({t.type_name}) bytes differ"
        assert sorted(a.metadata) == sorted(b.metadata)
        for key in b.metadata:
            va, vb = a.metadata[key], b.metadata[key]
            if isinstance(vb, np.ndarray):
                assert np.array_equal(va, vb), key
            elif hasattr(vb, "tolist"):
                assert va.tolist() == vb.tolist(), key
            else:
                assert va == vb, key


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["q4_k_m", "q5_k_m", "q4_k_s", "q6_k", "q8_0", "q4_0", "q5_1", "f16"])
def test_the_tiny_llava_llm_requantizes_exactly_as_llama_cpp_does(tiny_llm, tmp_path, scheme):
    ref, ours = str(tmp_path / "ref.gguf"), str(tmp_path / "ours.gguf")
    llama_cpp_quantize(tiny_llm, ref, scheme)
    requantize(tiny_llm, ours, scheme)
    assert_same_model(ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["q4_k_m", "q5_k_m", "q4_k_s"])
def test_an_eleven_layer_llama_gets_llama_cpps_mixture_and_bytes(llama11, tmp_path, scheme):
    ref, ours = str(tmp_path / "ref.gguf"), str(tmp_path / "ours.gguf")
    llama_cpp_quantize(llama11, ref, scheme)
    targets = requantize(llama11, ours, scheme)
    assert_same_model(ours, ref)
    assert G.Q6_K in targets.values() and SCHEMES[scheme].base in targets.values()  # K-quants really used


def test_the_cli_writes_the_same_file_as_the_library(tiny_llm, tmp_path, capsys):
    a, b = tmp_path / "cli.gguf", tmp_path / "lib.gguf"
    assert cli.main(["requantize", tiny_llm, str(a), "--type", "Q8_0"]) == 0
    assert "requantize [" in capsys.readouterr().err  # the progress bar
    requantize(tiny_llm, str(b), "q8_0")
    assert a.read_bytes() == b.read_bytes()


def test_already_quantized_weights_need_allow_requantize(tiny_llm, tmp_path, capsys):
    q8 = str(tmp_path / "q8.gguf")
    requantize(tiny_llm, q8, "q8_0")
    out = tmp_path / "q4.gguf"
    assert cli.main(["requantize", q8, str(out), "--type", "q4_0", "-q"]) == 2
    assert "already Q8_0" in capsys.readouterr().err and not out.exists()
    assert cli.main(["requantize", q8, str(out), "--type", "q4_0", "-q", "--allow-requantize"]) == 0
    with gguflite.open(str(out)) as f:
        assert f.tensors["blk.0.attn_q.weight"].type_name == "Q4_0"
        assert f.tensors["blk.0.attn_norm.weight"].type_name == "F32"  # 1-D: copied


def test_a_failed_requantize_leaves_no_output_file(tiny_llm, tmp_path, monkeypatch):
    from gguflite.quant import requantize as rq

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rq, "quantize", boom)
    out = tmp_path / "never.gguf"
    with pytest.raises(RuntimeError):
        requantize(tiny_llm, str(out), "q8_0")
    assert not out.exists() and os.listdir(tmp_path) == []


def test_use_more_bits_picks_the_first_and_last_eighth_and_every_third_layer():
    # llama.cpp's comment: "more bits for the first and last n/8 layers and every third in between"
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_rows_that_fit_no_block_are_refused_for_legacy_types_unless_f16_is_asked_for():
    with pytest.raises(ValueError, match="rows of 40 are not whole Q4_0 blocks"):
        plan([("blk.0.attn_q.weight", (8, 40), 0)], SCHEMES["q4_0"])
    rows = [("blk.0.attn_q.weight", (8, 40)), ("blk.0.attn_k.weight", (8, 64))]
    assert tensor_types(rows, SCHEMES["q4_0"], unfit_to_f16=True) == {"blk.0.attn_q.weight": G.F16,
                                                                       "blk.0.attn_k.weight": G.Q4_0}


@pytest.mark.slow
def test_libmtmd_encodes_an_image_with_a_requantized_mmproj_like_the_f32_one(tiny_llm, tmp_path):
    mm32 = tiny_llm.replace("llava-1.5-f32.gguf", "mmproj-llava-1.5-f32.gguf")
    mm8 = str(tmp_path / "mmproj-q8_0.gguf")
    targets = requantize(mm32, mm8, "q8_0")
    assert targets["v.blk.0.attn_q.weight"] == G.Q8_0 and targets["v.position_embd.weight"] is None
    n32, e32 = mtmd_encode(tiny_llm, mm32)
    n8, e8 = mtmd_encode(tiny_llm, mm8)
    assert n8 == n32
    np.testing.assert_allclose(e8, e32, atol=0.05 * np.abs(e32).max(), rtol=0)


@pytest.mark.slow
def test_llama_cpp_runs_the_q4_k_m_model_close_to_f32(llama11, tmp_path):
    q = str(tmp_path / "q4km.gguf")
    requantize(llama11, q, "q4_k_m")
    ids = [1, 5, 9, 200, 17]
    want, got = llama_cpp_logits(llama11, ids), llama_cpp_logits(q, ids)
    assert np.isfinite(got).all()
    # 4-5 bit weights through 11 random layers move logits noticeably; they stay aligned
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.8, cos
