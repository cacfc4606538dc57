"""The benchmark models are what they claim to be: ``bench.make_models`` writes GGUF files
that gguflite validates, the incumbent ``gguf`` package reads with the same tensors, and
llama.cpp (libllama through llama-cpp-python, libmtmd for the mmproj) loads and runs; the
LLaVA-1.5 source checkpoint loads with transformers' own classes.  Tiny size, seconds."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import gguflite
from bench import make_models, report


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_models.make(tmp_path_factory.mktemp("bench-models"), "tiny")


def test_make_models_writes_files_that_gguflite_validates(tiny):
    for path in (tiny.llm, tiny.mmproj):
        gguflite.validate(path)
    clip, llm = make_models.SIZES["tiny"]
    with gguflite.open(tiny.mmproj) as f:
        assert f.metadata["clip.vision.block_count"] == clip.layers - 1
        assert list(f.metadata["clip.vision.feature_layer"]) == [clip.layers - 1]
        assert f.tensors["mm.2.weight"].shape == (llm.n_embd, llm.n_embd)
        assert not any(n.startswith("v.post_ln") for n in f.tensors)
    with gguflite.open(tiny.llm) as f:
        assert len(f.metadata["tokenizer.ggml.tokens"]) == llm.n_vocab
        assert f.tensors["token_embd.weight"].shape == (llm.n_vocab, llm.n_embd)


def test_the_gguf_package_reads_the_same_tensors(tiny):
    import gguf
    for path in (tiny.llm, tiny.mmproj):
        theirs = {t.name: t for t in gguf.GGUFReader(path).tensors}
        with gguflite.open(path) as f:
            assert set(theirs) == set(f.tensors)
            for name, t in f.tensors.items():
                assert tuple(int(d) for d in reversed(theirs[name].shape)) == t.shape
                assert np.array_equal(np.asarray(theirs[name].data).reshape(-1).view(np.uint8),
                                      np.asarray(t.data).reshape(-1).view(np.uint8))


def test_llama_cpp_loads_tokenizes_and_runs_the_llm(tiny):
    import llama_cpp
    llm = llama_cpp.Llama(tiny.llm, n_ctx=128, n_threads=1, verbose=False, vocab_only=False)
    ids = llm.tokenize(b"hello world")
    assert ids[0] == 1 and len(ids) > 2  # BOS, then SentencePiece pieces
    assert llm.detokenize(ids[1:]) == b" hello world"
    llm.eval(ids)
    assert llm.n_vocab() == make_models.SIZES["tiny"][1].n_vocab
    assert np.isfinite(llm.scores[len(ids) - 1]).all()


def test_the_benchmark_drives_llama_cpp_and_libmtmd_on_the_tiny_models(tiny):
    from bench.bench_infer import Peer, prompt_ids

    peer = Peer(tiny.llm, tiny.mmproj, "cpu", 1, n_ctx=128)
    assert peer.image_tokens == 576  # 24 x 24 patches, CLS dropped, mlp projector
    assert peer.encode() > 0
    assert peer.prompt(prompt_ids(peer.n_vocab, 16)) > 0
    assert peer.generate(2) > 0


@pytest.mark.slow
def test_the_llava_source_checkpoint_loads_with_transformers(tmp_path):
    import torch
    import transformers
    m = make_models.make(tmp_path, "tiny", gguf=False, source=True)
    index = json.load(open(os.path.join(m.llava_dir, "pytorch_model.bin.index.json")))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) == 2
    last = torch.load(os.path.join(m.llava_dir, shards[-1]), weights_only=True)
    assert any(k.startswith("model.mm_projector.") for k in last)  # where llava_surgery looks
    sd = {}
    for s in shards:
        sd.update(torch.load(os.path.join(m.llava_dir, s), weights_only=True))
    cfg = json.load(open(os.path.join(m.llava_dir, "config.json")))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{k: cfg[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "rms_norm_eps")}))
    llm_sd = {k: v for k, v in sd.items() if not k.startswith("model.mm_projector.") and "inv_freq" not in k}
    llama.load_state_dict({k: v.float() for k, v in llm_sd.items()}, strict=True)
    clip = transformers.CLIPModel.from_pretrained(m.clip_dir)
    assert clip.vision_model.config.num_hidden_layers == make_models.SIZES["tiny"][0].layers
    transformers.CLIPProcessor.from_pretrained(m.clip_dir)  # the legacy converter needs it


def test_report_rewrites_only_the_named_section(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    report.update_section("a", "first A", path=str(doc))
    report.update_section("b", "first B", path=str(doc))
    report.update_section("a", "second A", path=str(doc))
    text = doc.read_text()
    assert "second A" in text and "first B" in text and "first A" not in text
    assert text.index("<!-- bench:a -->") < text.index("<!-- bench:b -->")
    doc.write_text(text.replace("<!-- /bench:b -->", ""))
    with pytest.raises(ValueError):
        report.update_section("b", "third B", path=str(doc))
    assert "first B" in doc.read_text()


def test_the_quantization_benchmark_checks_both_sides_agree_before_timing(capsys):
    from bench import bench_quant

    argv = ["--size", "64K", "--types", "q4_0", "--dequantize-only", "iq2_xxs,tq1_0", "--runs", "1", "--no-doc"]
    assert bench_quant.main(argv) == 0
    out = capsys.readouterr().out
    for row in ("quantize Q4_0", "dequantize Q4_0", "dequantize IQ2_XXS", "dequantize TQ1_0"):
        assert f"| {row} |" in out


def test_the_mul_mat_benchmark_runs_every_peer_on_a_small_product(capsys):
    from bench import bench_bind

    argv = ["--m", "64", "--k", "64", "--n", "8", "--repeat", "1", "--types", "f32,q8_0", "--no-doc"]
    assert bench_bind.main(argv) == 0
    out = capsys.readouterr().out
    assert "vs raw cffi" in out and "vs numpy" in out and "q8_0 weights" in out
