"""Tensor-name maps against the real module names (transformers models) and the incumbent's
GGUF names (gguf-py's TensorNameMap); the Q/K permutation against transformers' RoPE."""
import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings, strategies as st

import gguf
from gguflite import names
from gguflite.names import UnknownTensorName, map_name, permute_qk

TINY_LLAMA = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2)


@pytest.mark.parametrize("cls, cfg", [(transformers.LlamaForCausalLM, transformers.LlamaConfig),
                                      (transformers.MistralForCausalLM, transformers.MistralConfig)])
def test_every_llama_and_mistral_tensor_maps_to_the_gguf_name_gguf_py_uses(cls, cfg):
    model = cls(cfg(**TINY_LLAMA))
    ref = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 3)
    for name in model.state_dict():
        got, permute = map_name(names.LLAMA, name)
        assert got == ref.get_name(name, try_suffixes=(".weight", ".bias")), name
        assert permute == ("q" if "q_proj" in name else "k" if "k_proj" in name else None)


def test_every_clip_vision_tensor_maps_to_the_gguf_name_gguf_py_uses_and_the_rest_is_dropped():
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=28, patch_size=14)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=40,
                bos_token_id=1, eos_token_id=2, pad_token_id=1)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision))
    ref = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, 2)
    dropped = set()
    for name in list(model.state_dict()) + ["vision_model.embeddings.position_ids"]:
        got, permute = map_name(names.CLIP_VISION, name)
        assert permute is None
        if got is None:
            dropped.add(name)
        else:
            assert got == ref.get_name("vision_tower." + name, try_suffixes=(".weight", ".bias")), name
    assert {"vision_model.post_layernorm.weight", "visual_projection.weight", "logit_scale"} <= dropped
    assert all(n.startswith(("text_", "vision_model.post", "visual", "logit", "vision_model.embeddings.position_ids"))
               for n in dropped)


def test_projector_tables_name_tensors_as_clip_cpp_expects():
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.GELU(), torch.nn.Linear(4, 4))
    assert {map_name(names.PROJECTORS["mlp"], n)[0] for n in mlp.state_dict()} == {
        "mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"}
    assert map_name(names.HF_MLP_PROJECTOR, "linear_2.bias")[0] == "mm.2.bias"
    # MobileVLM v2: mlp = FeatureIRLayer (mlp = Sequential), peg = PosInjectLayer (peg = Sequential)
    v2 = torch.nn.Module()
    v2.mlp = torch.nn.Module()
    v2.mlp.mlp = mlp
    v2.peg = torch.nn.Module()
    v2.peg.peg = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, 1, 1, groups=4))
    assert {map_name(names.PROJECTORS["ldpv2"], n)[0] for n in v2.state_dict()} == {
        "mm.model.mlp.0.weight", "mm.model.mlp.0.bias", "mm.model.mlp.2.weight", "mm.model.mlp.2.bias",
        "mm.model.peg.0.weight", "mm.model.peg.0.bias"}
    assert map_name(names.PROJECTORS["ldp"], "model.mb_block.2.block.1.fc2.bias")[0] == \
        "mm.model.mb_block.2.block.1.fc2.bias"


@pytest.mark.parametrize("table, name", [
    (names.LLAMA, "model.layers.0.self_attn.qkv_proj.weight"),
    (names.LLAMA, "model.layers.x.mlp.up_proj.weight"),
    (names.LLAMA, "transformer.h.0.attn.c_attn.weight"),
    (names.CLIP_VISION, "vision_model.encoder.layers.0.mlp.fc3.weight"),
    (names.PROJECTORS["mlp"], "1.weight"),
])
def test_unknown_names_raise_naming_the_tensor(table, name):
    with pytest.raises(UnknownTensorName) as e:
        map_name(table, name)
    assert repr(name) in str(e.value)


def _rope_normal(x, pos, base):
    """ggml's GGML_ROPE_TYPE_NORMAL: rotate adjacent pairs (x[2i], x[2i+1]) by pos*base^(-2i/d)."""
    d = x.shape[-1]
    theta = pos[:, None] * base ** (-np.arange(0, d, 2) / d)  # (T, d/2)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * np.cos(theta) - x1 * np.sin(theta)
    out[..., 1::2] = x0 * np.sin(theta) + x1 * np.cos(theta)
    return out


@pytest.mark.parametrize("n_head, n_kv", [(4, 4), (4, 2)])
def test_permuted_qk_under_ggml_rope_give_the_attention_scores_of_transformers(n_head, n_kv):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    torch.manual_seed(0)
    d_model, hd, T = 32, 8, 5
    cfg = transformers.LlamaConfig(hidden_size=d_model, num_attention_heads=n_head, num_key_value_heads=n_kv,
                                   rope_theta=10000.0, head_dim=hd)
    wq, wk = torch.randn(n_head * hd, d_model), torch.randn(n_kv * hd, d_model)
    x = torch.randn(T, d_model)
    pos = torch.arange(T)[None]
    cos, sin = LlamaRotaryEmbedding(cfg)(x[None], pos)
    q = (x @ wq.T).view(1, T, n_head, hd).transpose(1, 2)
    k = (x @ wk.T).view(1, T, n_kv, hd).transpose(1, 2)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    k_hf = k_hf.repeat_interleave(n_head // n_kv, dim=1)
    want = (q_hf @ k_hf.transpose(-1, -2))[0].numpy()  # (n_head, T, T)

    wq_g, wk_g = permute_qk(wq.numpy(), n_head), permute_qk(wk.numpy(), n_kv)
    qg = _rope_normal((x.numpy() @ wq_g.T).reshape(T, n_head, hd).transpose(1, 0, 2), np.arange(T), 10000.0)
    kg = _rope_normal((x.numpy() @ wk_g.T).reshape(T, n_kv, hd).transpose(1, 0, 2), np.arange(T), 10000.0)
    kg = np.repeat(kg, n_head // n_kv, axis=0)
    np.testing.assert_allclose(qg @ kg.transpose(0, 2, 1), want, rtol=1e-4, atol=1e-4)
    # and without the permutation the scores are wrong: the test can fail
    qn = _rope_normal((x.numpy() @ wq.numpy().T).reshape(T, n_head, hd).transpose(1, 0, 2), np.arange(T), 10000.0)
    assert not np.allclose(qn @ kg.transpose(0, 2, 1), want, atol=1e-2)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 3))
@settings(max_examples=30)
def test_permute_qk_is_a_row_permutation_within_each_head(n_head, half, n_in):
    rows = n_head * 2 * half
    w = np.arange(rows * max(n_in, 1), dtype=np.float32).reshape(rows, max(n_in, 1))
    p = permute_qk(w, n_head)
    assert p.shape == w.shape
    assert sorted(p[:, 0].tolist()) == sorted(w[:, 0].tolist())
    for h in range(n_head):  # head h's rows stay in head h
        assert set(p[h * 2 * half:(h + 1) * 2 * half, 0]) == set(w[h * 2 * half:(h + 1) * 2 * half, 0])
    bias = np.arange(rows, dtype=np.float32)
    np.testing.assert_array_equal(permute_qk(bias, n_head), p[:, 0] / max(n_in, 1))


def test_permute_qk_refuses_rows_that_do_not_split_into_heads():
    with pytest.raises(ValueError, match="heads"):
        permute_qk(np.zeros((6, 2)), 4)
