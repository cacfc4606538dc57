"""ggml_bind.llama against transformers' LlamaForCausalLM / MistralForCausalLM with the same
weights (tiny checkpoints at the real configurations, converted by gguflite)."""
import numpy as np
import pytest

import torch

from gguflite.convert import convert_llava  # noqa: E402
from tests.checkpoints import make_checkpoint  # noqa: E402

from ggml_bind import Backend  # noqa: E402
from ggml_bind.llama import ContextFullError, LlamaError, LlamaModel  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend():
    return Backend("cpu", n_threads=2)


@pytest.fixture(scope="module", params=["llava-1.5", "llava-1.6-mistral"])
def model(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    fx = make_checkpoint(request.param, root / "ck")
    llm, mm = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=root / "out",
                            outtype="f32", progress=False)
    return fx, llm, fx.reference_llm()


def ref_logits(ref, ids):
    with torch.no_grad():
        return ref(torch.tensor(np.asarray(ids)[None])).logits[0].numpy()


def test_prompt_and_every_decode_step_equal_transformers_in_f32(model, backend):
    fx, path, ref = model
    m = LlamaModel(path, backend, kv_type="f32", flash_attn=False, n_batch=7)  # prompt in 3 batches
    ids = np.random.default_rng(0).integers(3, 300, 32)
    expect = ref_logits(ref, ids)
    prompt = m.eval_tokens(ids[:17], all_logits=True)
    np.testing.assert_allclose(prompt, expect[:17], atol=1e-3, rtol=0)
    for i in range(17, 32):
        np.testing.assert_allclose(m.eval_tokens(ids[i:i + 1]), expect[i], atol=1e-3, rtol=0)
    assert m.n_past == 32


def test_the_gqa_and_rope_base_come_from_the_file(model, backend):
    fx, path, ref = model
    m = LlamaModel(path, backend, kv_type="f32", flash_attn=False)
    cfg = fx.text_config
    assert m.params.n_head_kv == cfg["num_key_value_heads"]
    assert m.params.rope_base == pytest.approx(cfg["rope_theta"])


def test_f16_cache_with_flash_attention_stays_close_and_decodes_the_same(model, backend):
    fx, path, ref = model
    m = LlamaModel(path, backend)  # llama.cpp's defaults: F16 cache, flash attention when supported
    assert m.kv_type == "f16"
    ids = list(np.random.default_rng(1).integers(3, 300, 9))
    logits = m.eval_tokens(ids)
    for _ in range(12):  # greedy continuation, each step checked against transformers
        expect = ref_logits(ref, ids)[-1]
        np.testing.assert_allclose(logits, expect, atol=2e-2, rtol=0)
        nxt = int(np.argmax(logits))
        assert nxt == int(np.argmax(expect))
        ids.append(nxt)
        logits = m.eval_tokens([nxt])


def test_embeddings_input_equals_token_input(model, backend):
    import gguflite

    fx, path, ref = model
    with gguflite.open(path) as f:
        table = np.array(f.tensors["token_embd.weight"].data, np.float32)
    ids = [1, 5, 77, 200, 9]
    a = LlamaModel(path, backend, kv_type="f32", flash_attn=False)
    b = LlamaModel(path, backend, kv_type="f32", flash_attn=False)
    la = a.eval_tokens(ids[:2]), a.eval_embeddings(table[ids[2:4]]), a.eval_tokens(ids[4:])
    lb = b.eval_tokens(ids, all_logits=True)
    np.testing.assert_allclose(la[1], lb[3], atol=1e-5)
    np.testing.assert_allclose(la[2], lb[4], atol=1e-5)


def test_decode_reuses_one_graph_per_256_cache_rows(model, backend):
    fx, path, ref = model
    m = LlamaModel(path, backend, n_ctx=512)
    m.eval_tokens(list(range(3, 13)))
    m.eval_tokens([5])
    graphs = dict(m._graphs)
    for t in range(20):
        m.eval_tokens([t + 3])
    assert dict(m._graphs).keys() == graphs.keys()
    assert all(m._graphs[k] is graphs[k] for k in graphs)  # same objects: nothing rebuilt
    m.reset()
    m.eval_tokens(list(range(3, 300)))  # crosses 256: a wider cache view, one new prompt graph
    m.eval_tokens([7])
    assert any(k[2] == 512 for k in m._graphs)


def test_switching_between_cached_graphs_gives_the_same_logits_every_time(model, backend):
    # prompt, image-sized embedding batch, more text, decode: four graphs sharing one
    # scheduler whose buffers grow; each must be re-placed when it is used again
    fx, path, ref = model
    m = LlamaModel(path, backend, kv_type="f32", flash_attn=False, n_ctx=1024)
    emb = np.random.default_rng(0).standard_normal((576, m.params.n_embd)).astype(np.float32)  # 2 batches
    runs = []
    for _ in range(2):
        m.reset()
        out = [m.eval_tokens(list(range(1, 40))), m.eval_embeddings(emb), m.eval_tokens(list(range(1, 10)))]
        out += [m.eval_tokens([5]) for _ in range(3)]
        runs.append(out)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_a_prompt_longer_than_the_context_is_refused_and_the_state_kept(model, backend):
    fx, path, ref = model
    m = LlamaModel(path, backend, n_ctx=16)
    m.eval_tokens([1, 2, 3])
    with pytest.raises(ContextFullError, match="do not fit"):
        m.eval_tokens(list(range(3, 20)))
    assert m.n_past == 3
    m.eval_tokens([4])  # still usable
    with pytest.raises(LlamaError, match="token ids"):
        m.eval_tokens([10**6])
    with pytest.raises(LlamaError, match="embeddings"):
        m.eval_embeddings(np.zeros((2, 3), np.float32))


def test_a_non_llama_file_is_refused(tmp_path, backend):
    import gguflite

    w = gguflite.GGUFWriter(tmp_path / "x.gguf")
    w.add("general.architecture", "gpt2")
    w.add_tensor("token_embd.weight", (4, 8), 0, np.zeros((4, 8), np.float32))
    w.write()
    with pytest.raises(LlamaError, match="gpt2"):
        LlamaModel(tmp_path / "x.gguf", backend)
