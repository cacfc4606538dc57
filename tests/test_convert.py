"""convert_llava / ``gguflite convert-llava`` on tiny checkpoints of every layout
(tests/checkpoints.py), checked against references written elsewhere: tensors and keys
read back with gguf-py's GGUFReader and named with its TensorNameMap, source values read
with torch / safetensors, logits from transformers vs llama.cpp (llama-cpp-python), and
libmtmd loading and running the mmproj."""
import hashlib
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gguf
from gguflite.convert import convert_llava
from gguflite.cli import main as cli_main
from gguflite.errors import CheckpointError
from tests.llama_cpp_peer import llama, llama_cpp_logits, mtmd_encode
from tests.checkpoints import CLIP_MEAN, CLIP_STD, LAYOUTS, N_SP, PINPOINTS, VISION, make_checkpoint

SEPARATE_TOWER = {"llava-1.5", "mobilevlm-v1", "mobilevlm-v2"}
PROJECTOR = {"mobilevlm-v1": "ldp", "mobilevlm-v2": "ldpv2"}
ANYRES = {"llava-1.6-vicuna", "llava-1.6-mistral", "llava-hf-1.6-mistral"}
PROMPT = [1, 45, 100, 7, 250, 33, 12, 300, 5, 77, 150]


def _tree_hash(*folders) -> str:
    h = hashlib.sha256()
    for folder in folders:
        if folder is None:
            continue
        for root, dirs, files in sorted(os.walk(folder)):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(root, f)
                st = os.stat(p)
                h.update(f"{os.path.relpath(p, folder)} {st.st_size} {st.st_mode}".encode())
                with open(p, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


@pytest.fixture(scope="session")
def ckpt_root(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def fixtures(ckpt_root):
    return {layout: make_checkpoint(layout, ckpt_root) for layout in LAYOUTS}


@pytest.fixture(scope="session")
def converted(fixtures, tmp_path_factory):
    """Every layout converted to f32, with the source hashed before and after."""
    out = {}
    outdir = tmp_path_factory.mktemp("gguf")
    for layout, fx in fixtures.items():
        before = _tree_hash(fx.model_dir, fx.vision_tower)
        llm, mm = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=outdir, outtype="f32",
                                progress=False)
        out[layout] = (llm, mm, before, _tree_hash(fx.model_dir, fx.vision_tower))
    return out


def _tensors(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _fields(path) -> dict:
    return gguf.GGUFReader(path).fields


def _value(field):
    return field.contents()


def _source_tensors(fx) -> dict:
    """Every tensor of the checkpoint (and of its separate tower), read with torch/safetensors."""
    from safetensors.torch import load_file

    sd = {}
    for folder in (fx.model_dir, fx.vision_tower):
        if folder is None:
            continue
        for f in sorted(os.listdir(folder)):
            p = os.path.join(folder, f)
            part = load_file(p) if f.endswith(".safetensors") else torch.load(p, weights_only=True) \
                if f.endswith(".bin") else {}
            sd.update({("tower:" if folder == fx.vision_tower else "") + k: v for k, v in part.items()})
    return sd


def _unpermute_reference(w, n_head):
    """llama.cpp's converter permutation, written out: (n_head, 2, hd/2, ...) -> swap 1,2."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --------------------------------------------------------------------------- every layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_converts_and_leaves_the_source_byte_identical(converted, layout):
    llm, mm, before, after = converted[layout]
    assert os.path.basename(llm) == f"{layout}-f32.gguf"
    assert os.path.basename(mm) == f"mmproj-{layout}-f32.gguf"
    assert before == after
    assert not [f for f in os.listdir(os.path.dirname(llm)) if f.startswith(".")], "temp files left behind"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_llm_tensors_equal_the_source_after_the_qk_permutation(converted, fixtures, layout):
    fx = fixtures[layout]
    got = _tensors(converted[layout][0])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, fx.text_config["num_hidden_layers"])
    src = fx.llm_state_dict()
    assert len(got) == len(src)
    for hf_name, w in src.items():
        gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        t = got[gname]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        want = w.numpy()
        if "q_proj" in hf_name:
            want = _unpermute_reference(want, fx.text_config["num_attention_heads"])
        elif "k_proj" in hf_name:
            want = _unpermute_reference(want, fx.text_config["num_key_value_heads"])
        np.testing.assert_array_equal(t.data, want, err_msg=gname)


def _expected_mmproj(fx, layout) -> dict:
    """GGUF name -> (expected float32 array, expected ggml type) from the source files."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, VISION["num_hidden_layers"])
    keep = VISION["num_hidden_layers"] - 1  # select layer -2
    out = {}
    for name, v in _source_tensors(fx).items():
        if name.startswith("tower:"):
            local = name[len("tower:"):]
        elif "vision_tower." in name:
            local = name[name.index("vision_tower.") + len("vision_tower."):]
            local = local[len("vision_tower."):] if local.startswith("vision_tower.") else local
        elif "mm_projector." in name or "multi_modal_projector." in name:
            local = name.split("projector.", 1)[1]
            proj = {"linear_1": "0", "linear_2": "2"}
            for a, b in proj.items():
                local = local.replace(a, b)
            if layout == "mobilevlm-v2":
                gname = "mm.model." + local.replace("mlp.mlp.", "mlp.").replace("peg.peg.", "peg.")
            elif layout == "mobilevlm-v1":
                gname = "mm." + local
            else:
                gname = "mm." + local
            arr = v.float().numpy()
            conv = arr.ndim == 4
            out[gname] = (arr.squeeze() if conv else arr, "F16" if conv else "F32")
            continue
        elif name.endswith("image_newline"):
            out["v.image_newline"] = (v.float().numpy(), "F32")
            continue
        else:
            continue
        if not local.startswith("vision_model.") or "post_layernorm" in local or "position_ids" in local:
            continue  # text tower, visual_projection, logit_scale, post-LN: not written
        gname = names.get_name("vision_tower." + local, try_suffixes=(".weight", ".bias"))
        assert gname is not None, local
        if gname.startswith("v.blk.") and int(gname.split(".")[2]) >= keep:
            continue
        arr = v.float().numpy()
        out[gname] = (arr, "F16" if arr.ndim == 4 else "F32")
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mmproj_tensors_equal_the_source_cut_at_the_selected_layer(converted, fixtures, layout):
    got = _tensors(converted[layout][1])
    want = _expected_mmproj(fixtures[layout], layout)
    assert set(got) == set(want)
    assert not any(n.startswith("v.blk.2.") or "post_ln" in n for n in got)
    for gname, (arr, tname) in want.items():
        t = got[gname]
        assert t.tensor_type == gguf.GGMLQuantizationType[tname], gname
        np.testing.assert_array_equal(np.asarray(t.data, np.float32).reshape(arr.shape), arr, err_msg=gname)
        assert tuple(int(x) for x in t.shape) == arr.shape[::-1], gname


@pytest.mark.parametrize("layout", LAYOUTS)
def test_llm_metadata_matches_the_config_with_llama_cpp_key_types(converted, fixtures, layout):
    fx = fixtures[layout]
    tc = fx.text_config
    f = _fields(converted[layout][0])
    U32, F32 = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32
    expect = {
        "llama.context_length": (tc["max_position_embeddings"], U32),
        "llama.embedding_length": (tc["hidden_size"], U32),
        "llama.block_count": (tc["num_hidden_layers"], U32),
        "llama.feed_forward_length": (tc["intermediate_size"], U32),
        "llama.attention.head_count": (tc["num_attention_heads"], U32),
        "llama.attention.head_count_kv": (tc["num_key_value_heads"], U32),
        "llama.rope.dimension_count": (tc["hidden_size"] // tc["num_attention_heads"], U32),
        "llama.vocab_size": (tc["vocab_size"], U32),
        "general.file_type": (0, U32),
    }
    for key, (value, vtype) in expect.items():
        assert f[key].types == [vtype], key
        assert _value(f[key]) == value, key
    assert f["llama.attention.layer_norm_rms_epsilon"].types == [F32]
    assert _value(f["llama.attention.layer_norm_rms_epsilon"]) == pytest.approx(tc["rms_norm_eps"])
    assert _value(f["llama.rope.freq_base"]) == pytest.approx(tc["rope_theta"])
    assert _value(f["general.architecture"]) == "llama"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mmproj_metadata_selects_the_layer_llava_reads(converted, fixtures, layout):
    f = _fields(converted[layout][1])
    U32 = gguf.GGUFValueType.UINT32
    assert _value(f["general.architecture"]) == "clip"
    assert _value(f["clip.projector_type"]) == PROJECTOR.get(layout, "mlp")
    assert _value(f["clip.has_vision_encoder"]) is True
    for key, value in (("clip.vision.block_count", 2), ("clip.vision.embedding_length", VISION["hidden_size"]),
                       ("clip.vision.attention.head_count", VISION["num_attention_heads"]),
                       ("clip.vision.feed_forward_length", VISION["intermediate_size"]),
                       ("clip.vision.image_size", 336), ("clip.vision.patch_size", 14),
                       ("clip.vision.projection_dim", fixtures[layout].text_config["hidden_size"])):
        assert f[key].types == [U32], key
        assert _value(f[key]) == value, key
    assert f["clip.vision.feature_layer"].types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]
    assert _value(f["clip.vision.feature_layer"]) == [2]
    assert f["clip.vision.image_mean"].types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32]
    np.testing.assert_allclose(_value(f["clip.vision.image_std"]), [0.26862954, 0.26130258, 0.27577711], rtol=1e-6)
    assert _value(f["clip.use_gelu"]) is False  # CLIP's quick-GELU
    if layout in ANYRES:
        config = json.load(open(os.path.join(fixtures[layout].model_dir, "config.json")))
        assert config["image_grid_pinpoints"] == PINPOINTS
        # GGUF holds (width, height) pairs; transformers' LlavaNext configs list (height, width)
        pairs = [[w, h] for h, w in PINPOINTS] if layout.startswith("llava-hf") else PINPOINTS
        assert _value(f["clip.vision.image_grid_pinpoints"]) == [x for p in pairs for x in p]
        assert f["clip.vision.image_grid_pinpoints"].types[1] == gguf.GGUFValueType.INT32
    else:
        assert "clip.vision.image_grid_pinpoints" not in f


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mmproj_image_aspect_ratio_names_the_preprocessing_the_checkpoint_was_trained_with(converted, fixtures,
                                                                                         layout):
    # LLaVA's process_images: "pad" expands to a square, "anyres" tiles, anything else is the
    # plain CLIP processor; llava-hf 1.5's CLIPImageProcessor resizes and centre-crops, no pad
    config = json.load(open(os.path.join(fixtures[layout].model_dir, "config.json")))
    want = {"llava-hf-1.5": "square", "llava-hf-1.6-mistral": "anyres"}.get(layout, config.get("image_aspect_ratio"))
    assert want in ("pad", "anyres", "square")
    f = _fields(converted[layout][1])
    assert f["clip.vision.image_aspect_ratio"].types == [gguf.GGUFValueType.STRING]
    assert _value(f["clip.vision.image_aspect_ratio"]) == want


def test_an_original_config_without_image_aspect_ratio_gets_llavas_plain_processor():
    from gguflite.convert.layouts import detect

    config = {"architectures": ["LlavaLlamaForCausalLM"], "mm_projector_type": "mlp2x_gelu",
              "mm_vision_tower": "openai/clip-vit-large-patch14-336"}
    assert detect("/nonexistent", config).image_aspect_ratio == "square"  # process_images' else branch
    assert detect("/nonexistent", dict(config, image_aspect_ratio="pad")).image_aspect_ratio == "pad"
    with pytest.raises(CheckpointError, match="image_aspect_ratio"):
        detect("/nonexistent", dict(config, image_aspect_ratio=["pad"]))


@pytest.mark.parametrize("layout", ["llava-1.5", "llava-hf-1.5"])
def test_the_vocabulary_is_sentencepieces_plus_added_tokens_and_padding(converted, fixtures, layout):
    import sentencepiece

    fx = fixtures[layout]
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(fx.model_dir, "tokenizer.model"))
    f = _fields(converted[layout][0])
    tokens = _value(f["tokenizer.ggml.tokens"])
    types = _value(f["tokenizer.ggml.token_type"])
    scores = _value(f["tokenizer.ggml.scores"])
    assert len(tokens) == fx.text_config["vocab_size"]
    assert tokens[:N_SP] == [sp.IdToPiece(i) for i in range(N_SP)]
    np.testing.assert_allclose(scores[:N_SP], [sp.GetScore(i) for i in range(N_SP)])
    assert types[0] == 2 and types[1] == 3 and types[2] == 3  # <unk> unknown, <s> </s> control
    assert types[3] == 6 and tokens[3] == "<0x00>"  # byte fallback pieces
    assert _value(f["tokenizer.ggml.model"]) == "llama"
    assert (_value(f["tokenizer.ggml.bos_token_id"]), _value(f["tokenizer.ggml.eos_token_id"])) == (1, 2)
    if layout == "llava-hf-1.5":
        assert tokens[N_SP:N_SP + 2] == ["<image>", "<pad>"] and list(types[N_SP:N_SP + 2]) == [3, 3]
        assert tokens[N_SP + 2] == f"[PAD{N_SP + 2}]" and types[N_SP + 2] == 5
        assert _value(f["tokenizer.ggml.padding_token_id"]) == N_SP + 1


# --------------------------------------------------------------------------- llama.cpp


@pytest.mark.parametrize("layout", ["llava-1.5", "llava-1.6-mistral", "llava-hf-1.5", "mobilevlm-v2"])
def test_llama_cpp_logits_match_transformers(converted, fixtures, layout):
    fx = fixtures[layout]
    with torch.no_grad():
        want = fx.reference_llm()(torch.tensor([PROMPT])).logits[0].numpy()
    got = llama_cpp_logits(converted[layout][0], PROMPT)
    np.testing.assert_allclose(got, want, atol=5e-3 * np.abs(want).max(), rtol=0)


def test_llama_cpp_tokenizes_text_as_sentencepiece_does(converted, fixtures):
    import sentencepiece

    fx = fixtures["llava-hf-1.5"]
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(fx.model_dir, "tokenizer.model"))
    m = llama(converted["llava-hf-1.5"][0], vocab_only=True)
    for text in ["the cat is on a table", "describe this photo 42", "USER: what is in the image?"]:
        assert m.tokenize(text.encode(), add_bos=True) == [1] + sp.encode(text)
    assert m.tokenize(b"<image>", add_bos=False, special=True) == [N_SP]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_libmtmd_loads_the_mmproj_and_encodes_an_image(converted, layout):
    llm, mm = converted[layout][:2]
    n, emb = mtmd_encode(llm, mm)
    assert n == (144 if layout.startswith("mobilevlm") else 576)
    assert np.isfinite(emb).all() and np.abs(emb).max() > 0


def _transformers_image_features(fx, image, cls_first: bool):
    """LLaVA's image features from transformers' CLIPVisionModel with the checkpoint's own
    tower weights: hidden_states[-2] without the CLS row, then the mlp projector.
    ``cls_first=False`` reproduces llama.cpp 0.3.36's order (CLS concatenated after the
    patches, positions 0..576 in that order, rows 1..576 kept; llava-to-gguf.md section 4)."""
    import transformers

    vis, proj = {}, {}
    for k, v in _source_tensors(fx).items():
        if "vision_model." in k and not k.startswith("tower:text"):
            vis[k.split("vision_model.", 1)[1]] = v.float()
        elif "projector." in k:
            proj[k.split("projector.", 1)[1].replace("linear_1", "0").replace("linear_2", "2")] = v.float()
    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)).eval()
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in vis.items() if "position_ids" not in k}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    with torch.no_grad():
        e = model.embeddings
        patches = e.patch_embedding(x).flatten(2).transpose(1, 2)  # (1, 576, d)
        cls = e.class_embedding[None, None]
        h = torch.cat([cls, patches] if cls_first else [patches, cls], 1) + e.position_embedding.weight[None]
        h = model.pre_layrnorm(h)
        for layer in model.encoder.layers[: VISION["num_hidden_layers"] - 1]:  # select layer -2
            h = layer(h, None)
            h = h[0] if isinstance(h, tuple) else h
        f = h[0, 1:]
        if "0.weight" in proj:  # LLaVA mlp2x_gelu
            return (F.gelu(f @ proj["0.weight"].T + proj["0.bias"]) @ proj["2.weight"].T + proj["2.bias"]).numpy()
        return _mobilevlm_projector(f, proj)


def _ln2d(x, w, b):
    """timm LayerNormAct2d without activation: LayerNorm over channels of NCHW (eps 1e-5)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, 1e-5).permute(0, 3, 1, 2)


def _inverted_residual(x, p, stride):
    """torchvision InvertedResidual(expand 1, 3x3, SE, hardswish) as MobileVLM configures it."""
    c = x.shape[1]
    y = F.hardswish(_ln2d(F.conv2d(x, p["block.0.0.weight"], stride=stride, padding=1, groups=c),
                          p["block.0.1.weight"], p["block.0.1.bias"]))
    s = F.relu(F.conv2d(F.adaptive_avg_pool2d(y, 1), p["block.1.fc1.weight"], p["block.1.fc1.bias"]))
    y = y * F.hardsigmoid(F.conv2d(s, p["block.1.fc2.weight"], p["block.1.fc2.bias"]))
    y = _ln2d(F.conv2d(y, p["block.2.0.weight"]), p["block.2.1.weight"], p["block.2.1.bias"])
    return y + x if stride == 1 else y


def _mobilevlm_projector(f, proj):
    """MobileVLM's LDPNetProjector / LDPNetV2Projector (vision_projector.py) on (576, d) features."""
    if "model.mlp.1.weight" in proj:  # v1
        h = F.gelu(f @ proj["model.mlp.1.weight"].T + proj["model.mlp.1.bias"])
        h = (h @ proj["model.mlp.3.weight"].T + proj["model.mlp.3.bias"]).T.reshape(1, -1, 24, 24)
        for i, stride in ((1, 1), (2, 2)):
            pre = f"model.mb_block.{i}."
            h = _inverted_residual(h, {k[len(pre):]: v for k, v in proj.items() if k.startswith(pre)}, stride)
    else:  # v2: mlp, 2x2 average pool to 12x12, positional depthwise conv with a residual
        h = F.gelu(f @ proj["mlp.mlp.0.weight"].T + proj["mlp.mlp.0.bias"])
        h = (h @ proj["mlp.mlp.2.weight"].T + proj["mlp.mlp.2.bias"]).T.reshape(1, -1, 24, 24)
        h = F.adaptive_avg_pool2d(h, (12, 12))
        h = F.conv2d(h, proj["peg.peg.0.weight"], proj["peg.peg.0.bias"], padding=1, groups=h.shape[1]) + h
    return h.flatten(2)[0].T.numpy()


@pytest.mark.parametrize("layout", ["llava-1.5", "llava-1.6-vicuna", "bakllava-1", "llava-hf-1.5",
                                    "mobilevlm-v1", "mobilevlm-v2"])
def test_libmtmd_image_embeddings_equal_transformers_clip_cut_at_the_selected_layer(converted, fixtures, layout):
    llm, mm = converted[layout][:2]
    n, emb = mtmd_encode(llm, mm)
    emb = emb.reshape(n, -1)
    image = (np.arange(336 * 336 * 3) % 251).astype(np.uint8).reshape(336, 336, 3)  # as _mtmd_encode sends
    scale = None
    for cls_first in (True, False):  # LLaVA's order, or llama.cpp 0.3.36's (bug #25814)
        want = _transformers_image_features(fixtures[layout], image, cls_first)
        scale = np.abs(want).max()
        if np.abs(emb - want).max() < 5e-3 * scale:  # GELU: ggml tanh vs PyTorch erf
            break
    else:
        pytest.fail(f"libmtmd's embeddings match neither token order (max diff {np.abs(emb - want).max()}, "
                    f"scale {scale})")


# --------------------------------------------------------------------------- other outtypes


def test_f16_and_bf16_outputs_round_as_torch_does_and_llama_cpp_runs_them(fixtures, tmp_path):
    fx = fixtures["llava-1.6-mistral"]
    src = fx.llm_state_dict()
    with torch.no_grad():
        want = fx.reference_llm()(torch.tensor([PROMPT])).logits[0].numpy()
    for outtype, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        llm, mm = convert_llava(fx.model_dir, outdir=tmp_path, outtype=outtype, progress=False)
        got = _tensors(llm)
        t = got["blk.0.ffn_up.weight"]
        assert t.tensor_type == gguf.GGMLQuantizationType[outtype.upper()]
        ref = src["model.layers.0.mlp.up_proj.weight"].to(dtype)
        np.testing.assert_array_equal(np.asarray(t.data).view(np.uint16).reshape(ref.shape),
                                      ref.view(torch.int16).numpy().view(np.uint16))
        assert got["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
        mm_types = {n: t.tensor_type for n, t in _tensors(mm).items()}
        assert mm_types["v.position_embd.weight"] == mm_types["v.class_embd"] == gguf.GGMLQuantizationType.F32
        assert mm_types["v.patch_embd.weight"] == gguf.GGMLQuantizationType.F16
        assert _value(_fields(llm)["general.file_type"]) == {"f16": 1, "bf16": 32}[outtype]
        logits = llama_cpp_logits(llm, PROMPT)
        np.testing.assert_allclose(logits, want, atol=0.05 * np.abs(want).max(), rtol=0)
        assert _tensors(mm)["v.blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType[outtype.upper()]
        n, emb = mtmd_encode(llm, mm)
        assert n == 576 and np.isfinite(emb).all()


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_k_m"])
def test_quantized_outputs_dequantize_close_to_the_source_and_run_in_llama_cpp(fixtures, tmp_path, outtype):
    fx = fixtures["llava-1.5"]
    llm, mm = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=tmp_path, outtype=outtype,
                            progress=False)
    got = _tensors(llm)
    src = fx.llm_state_dict()
    Q = gguf.GGMLQuantizationType
    # llama.cpp's llama-quant.cpp choices for this 2-layer, 64-wide model (rows of 64 or 256):
    # use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2 picks layer 1 of 2;
    # output.weight -> Q6_K (Q8_0 when rows are not 256-blocks); Q4_K -> Q5_0, Q6_K -> Q8_0 fallbacks
    expect = {
        "q8_0": {"blk.0.ffn_up.weight": Q.Q8_0, "blk.0.ffn_down.weight": Q.Q8_0, "output.weight": Q.Q8_0,
                 "blk.1.attn_v.weight": Q.Q8_0},
        "q4_0": {"blk.0.ffn_up.weight": Q.Q4_0, "blk.0.ffn_down.weight": Q.Q4_0, "output.weight": Q.Q8_0,
                 "blk.1.attn_v.weight": Q.Q4_0},
        "q4_k_m": {"blk.0.ffn_up.weight": Q.Q5_0, "blk.0.ffn_down.weight": Q.Q4_K, "blk.1.ffn_down.weight": Q.Q6_K,
                   "output.weight": Q.Q8_0, "blk.0.attn_v.weight": Q.Q5_0, "blk.1.attn_v.weight": Q.Q8_0},
    }[outtype]
    hf = {"blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
          "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
          "blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj.weight",
          "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
          "blk.1.attn_v.weight": "model.layers.1.self_attn.v_proj.weight", "output.weight": "lm_head.weight"}
    for gname, qtype in expect.items():
        t = got[gname]
        assert t.tensor_type == qtype, gname
        w = src[hf[gname]].numpy()
        deq = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(w.shape)
        err = np.abs(deq - w).max() / np.abs(w).max()
        assert err < {Q.Q8_0: 0.01, Q.Q6_K: 0.03, Q.Q5_0: 0.05}.get(t.tensor_type, 0.1), (gname, err)
        if qtype in (Q.Q8_0, Q.Q4_0, Q.Q5_0):  # gguf-py's quantizers claim to be bit-exact with ggml's
            np.testing.assert_array_equal(np.asarray(t.data), gguf.quants.quantize(w, t.tensor_type))
    assert got["output_norm.weight"].tensor_type == Q.F32
    assert _value(_fields(llm)["general.quantization_version"]) == 2
    assert np.isfinite(llama_cpp_logits(llm, PROMPT)).all()
    assert {t.tensor_type for n, t in _tensors(mm).items() if n.endswith("ffn_up.weight")} == {Q.Q8_0}
    n, emb = mtmd_encode(llm, mm)
    assert n == 576 and np.isfinite(emb).all()


@pytest.fixture(scope="session")
def deep_llava(tmp_path_factory):
    """llava-1.5 with a 9-layer, 256-wide LLM (rows take K-quants; use_more_bits picks layers
    0, 3, 6, 7, 8) and its f32 conversion."""
    from tests import checkpoints

    root = tmp_path_factory.mktemp("deep-llava")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoints, "LLAMA", dict(checkpoints.LLAMA, hidden_size=256, intermediate_size=512,
                                              num_hidden_layers=9))
        fx = make_checkpoint("llava-1.5", root / "ckpt")
    llm, _ = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=root / "f32", outtype="f32",
                           progress=False)
    return fx, llm


@pytest.mark.slow
@pytest.mark.parametrize("outtype", ["q4_k_m", "q8_0", "q4_0"])
def test_a_quantized_llm_is_what_llama_cpps_quantizer_makes_of_the_f32_conversion(deep_llava, tmp_path, outtype):
    import llama_cpp
    from gguflite.convert.llava import OUTTYPES

    fx, f32 = deep_llava
    ref = str(tmp_path / "ref.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(OUTTYPES[outtype].file_type)
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(f32.encode(), ref.encode(), params) == 0
    llm, _ = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=tmp_path / "out", outtype=outtype,
                           progress=False)
    got, want = _tensors(llm), _tensors(ref)
    types = {n: t.tensor_type.name for n, t in got.items()}
    assert types == {n: t.tensor_type.name for n, t in want.items()}
    for name, t in want.items():  # same input values, bit-exact quantizers: the same bytes
        assert np.array_equal(np.asarray(got[name].data), np.asarray(t.data)), name
    if outtype == "q4_k_m":  # the mixture is really exercised: K-quants and the Q6_K layers
        assert {"Q4_K", "Q6_K"} <= set(types.values()) and types["blk.1.ffn_down.weight"] == "Q4_K"
    assert _value(_fields(llm)["general.file_type"]) == _value(_fields(ref)["general.file_type"])


def test_a_checkpoint_saved_by_transformers_own_llava_class_converts_and_runs(ckpt_root, fixtures, tmp_path):
    """transformers >= 5 saves llava-hf checkpoints without the vision_model. level."""
    import transformers

    from tests.checkpoints import LLAMA

    torch.manual_seed(3)
    tc = dict(LLAMA, model_type="llama", vocab_size=N_SP + 2)
    cfg = transformers.LlavaConfig(text_config=tc, vision_config=dict(VISION), image_token_index=N_SP,
                                   vision_feature_layer=-2, projector_hidden_act="gelu")
    model = transformers.LlavaForConditionalGeneration(cfg).eval()
    src = tmp_path / "llava-t5"
    model.save_pretrained(src)
    shutil.copy(os.path.join(fixtures["llava-hf-1.5"].model_dir, "tokenizer.model"), src)
    (src / "added_tokens.json").write_text(json.dumps({"<image>": N_SP, "<pad>": N_SP + 1}))
    llm, mm = convert_llava(src, outdir=tmp_path / "out", outtype="f32", progress=False)
    with torch.no_grad():
        want = model(input_ids=torch.tensor([PROMPT])).logits[0].numpy()
    got = llama_cpp_logits(llm, PROMPT)
    np.testing.assert_allclose(got, want, atol=5e-3 * np.abs(want).max(), rtol=0)
    assert mtmd_encode(llm, mm)[0] == 576


def test_a_separate_clip_vision_folder_saved_by_transformers_5_is_accepted(fixtures, tmp_path):
    import transformers

    torch.manual_seed(5)
    tower = tmp_path / "clip-vision"
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)).save_pretrained(tower)
    llm, mm = convert_llava(fixtures["mobilevlm-v2"].model_dir, vision_tower=tower, outdir=tmp_path / "out",
                            progress=False)
    assert mtmd_encode(llm, mm)[0] == 144


# --------------------------------------------------------------------------- how the tower is found


def test_a_local_mm_vision_tower_path_in_the_config_is_used(ckpt_root, tmp_path):
    fx = make_checkpoint("llava-1.5", ckpt_root, tower_in_config=True)
    llm, mm = convert_llava(fx.model_dir, outdir=tmp_path, outtype="f16", progress=False)
    assert os.path.exists(llm) and os.path.exists(mm)


def test_a_separate_tower_that_cannot_be_found_is_asked_for(fixtures, tmp_path):
    with pytest.raises(CheckpointError, match="--vision-tower"):
        convert_llava(fixtures["llava-1.5"].model_dir, outdir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def test_an_explicit_tower_config_is_checked_against_the_weights_inside(fixtures, ckpt_root, tmp_path):
    # the 1.6 checkpoint carries its own tower; --vision-tower only supplies the config
    fx = fixtures["llava-1.6-vicuna"]
    tower = make_checkpoint("llava-1.5", ckpt_root).vision_tower
    llm, mm = convert_llava(fx.model_dir, vision_tower=tower, outdir=tmp_path, progress=False)
    assert _value(_fields(mm)["clip.vision.attention.head_count"]) == VISION["num_attention_heads"]


# --------------------------------------------------------------------------- bad input


def _copy(fx, tmp_path):
    dst = tmp_path / "src" / os.path.basename(fx.model_dir)
    shutil.copytree(fx.model_dir, dst)
    return dst


def _refused(src, tmp_path, match, vision_tower=None, **kw):
    """Convert ``src``; expect a CheckpointError matching ``match``, no output, source unchanged."""
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    before = _tree_hash(src)
    with pytest.raises(CheckpointError, match=match) as e:
        convert_llava(src, vision_tower=vision_tower, outdir=outdir, progress=False, **kw)
    assert os.listdir(outdir) == []
    assert _tree_hash(src) == before
    return e.value


def test_a_missing_shard_is_named(fixtures, tmp_path):
    src = _copy(fixtures["llava-1.6-vicuna"], tmp_path)
    os.unlink(src / "model-00002-of-00003.safetensors")
    err = _refused(src, tmp_path, "model-00002-of-00003.safetensors")
    assert "missing" in str(err)


def test_a_weight_shape_that_contradicts_the_config_is_refused(fixtures, tmp_path):
    src = _copy(fixtures["llava-1.5"], tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (src / "config.json").write_text(json.dumps(cfg))
    err = _refused(src, tmp_path, "shape mismatch", vision_tower=fixtures["llava-1.5"].vision_tower)
    assert err.tensor is not None and "mlp" in err.tensor


def test_a_projector_whose_width_differs_from_the_llm_is_refused(fixtures, tmp_path):
    from safetensors.torch import load_file, save_file

    src = _copy(fixtures["mobilevlm-v2"], tmp_path)
    sd = load_file(src / "model.safetensors")
    sd["model.mm_projector.mlp.mlp.2.weight"] = torch.zeros(48, 64, dtype=torch.float16)
    sd["model.mm_projector.peg.peg.0.bias"] = torch.zeros(48, dtype=torch.float16)
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    _refused(src, tmp_path, "width mismatch.*48.*embedding_length is 64",
             vision_tower=fixtures["mobilevlm-v2"].vision_tower)


def test_a_tower_narrower_than_the_projector_input_is_refused(fixtures, tmp_path):
    from safetensors.torch import load_file, save_file

    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    shard = src / "model-00003-of-00003.safetensors"
    sd = load_file(shard)
    name = "multi_modal_projector.linear_1.weight"
    assert name in sd
    sd[name] = torch.zeros(64, 96, dtype=torch.float16)
    save_file(sd, shard, metadata={"format": "pt"})
    _refused(src, tmp_path, "width mismatch.*96.*128 wide")


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_a_corrupt_weight_file_is_refused_with_its_path(fixtures, tmp_path, damage):
    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    shard = src / "model-00001-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[10:14] = b"\xff\xfe\x00{"
    shard.write_bytes(bytes(data))
    err = _refused(src, tmp_path, None)
    assert str(shard) in str(err)


def test_a_malicious_pickle_shard_is_refused_and_runs_nothing(fixtures, tmp_path):
    src = _copy(fixtures["llava-1.5"], tmp_path)
    marker = tmp_path / "pwned"
    shard = src / "pytorch_model-00002-of-00002.bin"
    payload = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    with zipfile.ZipFile(shard, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
    _refused(src, tmp_path, "os.system", vision_tower=fixtures["llava-1.5"].vision_tower)
    assert not marker.exists()


def test_an_unknown_layout_is_refused_by_name(fixtures, tmp_path):
    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["Qwen2VLForConditionalGeneration"]
    (src / "config.json").write_text(json.dumps(cfg))
    _refused(src, tmp_path, "Qwen2VLForConditionalGeneration")


def test_an_unexpected_tensor_is_refused_by_name(fixtures, tmp_path):
    from safetensors.torch import load_file, save_file

    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    shard = src / "model-00003-of-00003.safetensors"
    sd = load_file(shard)
    sd["language_model.model.layers.0.self_attn.qkv_proj.weight"] = torch.zeros(2, 2)
    save_file(sd, shard)
    _refused(src, tmp_path, "qkv_proj")


def test_an_interrupted_run_leaves_no_partial_output(fixtures, tmp_path, monkeypatch):
    import gguflite.convert.output as output

    real = output._tensor_bytes
    calls = []

    def interrupt(p):
        calls.append(p.name)
        if p.name == "v.blk.0.attn_q.weight":  # halfway through the second file
            raise KeyboardInterrupt
        return real(p)

    monkeypatch.setattr(output, "_tensor_bytes", interrupt)
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "llava-1.6-vicuna-f16.gguf").write_bytes(b"an older file")
    with pytest.raises(KeyboardInterrupt):
        convert_llava(fixtures["llava-1.6-vicuna"].model_dir, outdir=outdir, progress=False)
    assert "token_embd.weight" in calls
    assert sorted(os.listdir(outdir)) == ["llava-1.6-vicuna-f16.gguf"]
    assert (outdir / "llava-1.6-vicuna-f16.gguf").read_bytes() == b"an older file"


def test_only_one_tensor_is_held_in_memory_at_a_time(fixtures, tmp_path, monkeypatch):
    import tracemalloc

    import gguflite.convert.output as output

    real = output._tensor_bytes
    sizes, held = [], []

    def measured(p):
        held.append(tracemalloc.get_traced_memory()[0])
        out = real(p)
        sizes.append(np.asarray(out).nbytes)
        return out

    monkeypatch.setattr(output, "_tensor_bytes", measured)
    tracemalloc.start()
    try:
        convert_llava(fixtures["llava-1.6-vicuna"].model_dir, outdir=tmp_path, outtype="f32", progress=False)
    finally:
        tracemalloc.stop()
    total, largest = sum(sizes), max(sizes)
    assert total > 4 * largest  # else the check below would prove nothing
    growth = max(held) - held[0]
    assert growth < 2 * largest, (growth, largest, total)


def test_outputs_are_never_written_into_the_source_folder(fixtures, tmp_path):
    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    before = _tree_hash(src)
    with pytest.raises(CheckpointError, match="inside a source folder"):
        convert_llava(src, outdir=src, progress=False)
    assert _tree_hash(src) == before


# --------------------------------------------------------------------------- command line


def test_the_command_writes_both_files_and_prints_their_paths(fixtures, tmp_path, capsys):
    fx = fixtures["mobilevlm-v1"]
    rc = cli_main(["convert-llava", fx.model_dir, "--vision-tower", fx.vision_tower, "--outdir", str(tmp_path),
                   "--outtype", "f16", "--projector", "ldp"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out.split() == [str(tmp_path / "mobilevlm-v1-f16.gguf"), str(tmp_path / "mmproj-mobilevlm-v1-f16.gguf")]
    assert "tensors" in err  # the progress bar
    assert "not written (" in err and "text_model." in err  # the CLIP text tower, reported


def test_the_standalone_entry_point_runs_the_same_command(fixtures, tmp_path, capsys):
    from gguflite.convert.cli import main

    fx = fixtures["llava-hf-1.5"]
    assert main(["convert-llava", fx.model_dir, "--outdir", str(tmp_path), "--quiet"]) == 0
    assert main(["convert-llava", fx.model_dir, "--outdir", fx.model_dir, "--quiet"]) == 2
    assert "inside a source folder" in capsys.readouterr().err


def test_the_command_reports_errors_without_a_traceback(fixtures, tmp_path, capsys):
    rc = cli_main(["convert-llava", fixtures["mobilevlm-v1"].model_dir, "--outdir", str(tmp_path),
                   "--vision-tower", fixtures["mobilevlm-v1"].vision_tower, "--projector", "mlp", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "error:" in err and "mlp projector" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- tokenizer and config corner cases


@pytest.mark.parametrize("added, words", [
    ({"<image>": 999}, "outside the 384-row embedding"),
    ({"<image>": 5}, "reuses id 5"),
    ({"<image>": N_SP, "<img>": N_SP}, "given to both"),
])
def test_added_tokens_that_do_not_fit_the_embedding_are_refused(fixtures, tmp_path, added, words):
    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    (src / "added_tokens.json").write_text(json.dumps(added))
    _refused(src, tmp_path, words)


def test_a_missing_tokenizer_model_is_named(fixtures, tmp_path):
    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    os.unlink(src / "tokenizer.model")
    _refused(src, tmp_path, "tokenizer.model")


@pytest.mark.parametrize("key, value, words", [
    ("mm_projector_type", "linear", "unsupported projector 'linear'"),
    ("mm_vision_select_layer", -5, "outside a 3-layer tower"),
    ("mm_vision_select_feature", "cls_patch", "select feature"),
])
def test_configs_llama_cpp_cannot_run_are_refused(fixtures, tmp_path, key, value, words):
    src = _copy(fixtures["llava-1.6-vicuna"], tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg[key] = value
    (src / "config.json").write_text(json.dumps(cfg))
    _refused(src, tmp_path, words)


def test_bf16_checkpoints_convert_exactly(fixtures, tmp_path):
    from safetensors.torch import load_file, save_file

    src = _copy(fixtures["llava-hf-1.5"], tmp_path)
    for shard in sorted(src.glob("*.safetensors")):
        save_file({k: v.bfloat16() for k, v in load_file(shard).items()}, shard, metadata={"format": "pt"})
    ref = load_file(src / "model-00001-of-00003.safetensors")
    llm, mm = convert_llava(src, outdir=tmp_path / "out", outtype="f32", progress=False)
    got = {**_tensors(llm), **_tensors(mm)}
    checked = 0
    for name, v in ref.items():
        gname = {"language_model.model.embed_tokens.weight": "token_embd.weight",
                 "vision_tower.vision_model.embeddings.patch_embedding.weight": "v.patch_embd.weight",
                 "vision_tower.vision_model.embeddings.position_embedding.weight": "v.position_embd.weight",
                 "language_model.model.norm.weight": "output_norm.weight"}.get(name)
        if gname:
            want = v.float().numpy()
            if gname == "v.patch_embd.weight":  # conv kernels are F16: torch's bf16 -> f16 rounding
                want = v.half().float().numpy()
            np.testing.assert_array_equal(np.asarray(got[gname].data, np.float32).reshape(want.shape), want)
            checked += 1
    assert checked == 4
    assert np.isfinite(llama_cpp_logits(llm, PROMPT)).all()


# --------------------------------------------------------------------------- real configs


LLAVA_HF_15_7B = {  # llava-hf/llava-1.5-7b-hf config.json: text_config leaves LlamaConfig defaults out
    "architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100, "image_token_index": 32000,
    "model_type": "llava", "pad_token_id": 32001, "projector_hidden_act": "gelu",
    "text_config": {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096, "model_type": "llama",
                    "rms_norm_eps": 1e-05, "torch_dtype": "float16", "vocab_size": 32064},
    "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.36.0.dev0",
    "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                      "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                      "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064}
LLAVA_NEXT_MISTRAL_7B = {  # llava-hf/llava-v1.6-mistral-7b-hf
    "architectures": ["LlavaNextForConditionalGeneration"], "ignore_index": -100, "image_grid_pinpoints": PINPOINTS,
    "image_token_index": 32000, "model_type": "llava_next", "projector_hidden_act": "gelu",
    "text_config": {"architectures": ["MistralForCausalLM"], "intermediate_size": 14336,
                    "max_position_embeddings": 32768, "model_type": "mistral", "num_key_value_heads": 8,
                    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
                    "torch_dtype": "bfloat16", "vocab_size": 32064},
    "torch_dtype": "float16", "use_image_newline_parameter": True,
    "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                      "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                      "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064}


LLAVA_NEXT_NO_PINPOINTS = {k: v for k, v in LLAVA_NEXT_MISTRAL_7B.items() if k != "image_grid_pinpoints"}


@pytest.mark.parametrize("config, cls", [(LLAVA_HF_15_7B, "LlavaConfig"), (LLAVA_NEXT_MISTRAL_7B, "LlavaNextConfig"),
                                         (LLAVA_NEXT_NO_PINPOINTS, "LlavaNextConfig")])
def test_hyperparameters_resolve_as_transformers_resolves_the_real_configs(config, cls):
    import transformers

    from gguflite.convert.layouts import detect, vision_params

    ref = getattr(transformers, cls)(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    layout = detect("/nonexistent", json.loads(json.dumps(config)))
    t, rt = layout.text, ref.text_config
    assert (t.n_vocab, t.n_embd, t.n_ff, t.n_layer, t.n_head, t.n_head_kv, t.n_ctx) == (
        rt.vocab_size, rt.hidden_size, rt.intermediate_size, rt.num_hidden_layers, rt.num_attention_heads,
        rt.num_key_value_heads, rt.max_position_embeddings)
    assert t.rms_eps == pytest.approx(rt.rms_norm_eps)
    rope = rt.rope_parameters["rope_theta"] if getattr(rt, "rope_parameters", None) else rt.rope_theta
    assert t.rope_theta == pytest.approx(rope)
    rv = ref.vision_config
    d, n, f = rv.hidden_size, rv.num_hidden_layers, rv.intermediate_size
    shapes = {"vision_model.embeddings.class_embedding": (d,),
              "vision_model.embeddings.patch_embedding.weight": (d, 3, rv.patch_size, rv.patch_size),
              "vision_model.embeddings.position_embedding.weight": ((rv.image_size // rv.patch_size) ** 2 + 1, d),
              **{f"vision_model.encoder.layers.{i}.mlp.fc1.weight": (f, d) for i in range(n)}}
    vp = vision_params(layout, None, None, shapes)
    assert (vp.hidden, vp.n_ff, vp.n_layer, vp.n_head, vp.image_size, vp.patch_size, vp.hidden_act) == (
        d, f, n, rv.num_attention_heads, rv.image_size, rv.patch_size, rv.hidden_act)
    assert vp.eps == pytest.approx(rv.layer_norm_eps)
    layout.vision = vp
    assert layout.feature_layer == 23 == n + ref.vision_feature_layer + 1
    pins = getattr(ref, "image_grid_pinpoints", None)  # transformers: (height, width) pairs
    assert layout.grid_pinpoints == (None if pins is None else [[w, h] for h, w in pins])
    assert layout.image_aspect_ratio == ("anyres" if pins else "square")


def test_an_original_anyres_config_without_pinpoints_is_refused_by_key():
    from gguflite.convert.layouts import detect

    config = {"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
              "mm_projector_type": "mlp2x_gelu", "image_aspect_ratio": "anyres", "mm_patch_merge_type": "spatial_unpad"}
    with pytest.raises(CheckpointError, match="image_grid_pinpoints") as e:
        detect("/models/llava-v1.6", config)
    assert e.value.key == "image_grid_pinpoints"


@pytest.mark.parametrize("outtype", ["f32", "bf16", "q8_0"])
def test_slab_wise_casting_writes_the_same_bytes_as_whole_tensors(fixtures, tmp_path, monkeypatch, outtype):
    import gguflite.convert.output as output

    fx = fixtures["llava-hf-1.5"]
    a = convert_llava(fx.model_dir, outdir=tmp_path / "whole", outtype=outtype, progress=False)
    monkeypatch.setattr(output, "SLAB_ELEMENTS", 100)  # 1-2 rows per slab, ragged last slab
    b = convert_llava(fx.model_dir, outdir=tmp_path / "slabs", outtype=outtype, progress=False)
    for x, y in zip(a, b):
        assert open(x, "rb").read() == open(y, "rb").read()
