"""ggml_bind.clip against transformers: tiny checkpoints at the real configurations
(tests/checkpoints.py), converted with gguflite, encoded on ggml and by PyTorch from the
same pixel values.  Cosine per token >= 0.9999 in F32."""
import os

import numpy as np
import pytest

import torch
import transformers

from gguflite.convert import convert_llava  # noqa: E402
from tests.checkpoints import make_checkpoint  # noqa: E402

from ggml_bind import Backend  # noqa: E402
from ggml_bind import preprocess as pp  # noqa: E402
from ggml_bind.clip import ClipEncoder, MmprojError  # noqa: E402

pytestmark = pytest.mark.slow
TOL = 1 / 255 / min(pp.CLIP_STD)  # one grey level, after normalisation


@pytest.fixture(scope="module")
def backend():
    return Backend("cpu", n_threads=2)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("clip")


def converted(root, layout, outtype="f32"):
    fx = make_checkpoint(layout, root / "ck")
    out = root / "out" / layout
    llm, mm = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=out, outtype=outtype, progress=False)
    return fx, llm, mm


def image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    from PIL import Image

    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def cosines(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def assert_same_tokens(got, ref, min_cos=0.9999):
    assert got.shape == ref.shape
    c = cosines(got, ref)
    assert c.min() >= min_cos, f"worst token {c.argmin()} cos {c.min():.6f}; max abs diff {np.abs(got - ref).max()}"


def shard_state_dict(folder, prefix):
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(os.listdir(folder)):
        p = os.path.join(folder, f)
        if f.endswith(".safetensors"):
            sd.update(load_file(p))
        elif f.endswith(".bin"):
            sd.update(torch.load(p, weights_only=True))
    return {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------- llava-hf 1.5

@pytest.fixture(scope="module")
def hf15(root, backend):
    fx, llm, mm = converted(root, "llava-hf-1.5")
    model = transformers.LlavaForConditionalGeneration.from_pretrained(fx.model_dir, dtype=torch.float32).eval()
    return model, ClipEncoder(mm, backend)


@pytest.mark.parametrize("w,h", [(400, 300), (200, 500)])
def test_llava_hf_15_mmproj_preprocesses_as_its_clip_image_processor_without_padding(root, hf15, w, h):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model, enc = hf15
    assert enc.params.image.mode == "crop"  # from the file's image_aspect_ratio, no override
    processor = CLIPImageProcessorPil.from_pretrained(make_checkpoint("llava-hf-1.5", root / "ck").model_dir)
    im = image(w, h, w)
    ref = processor(im, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(pp.preprocess(im, enc.params.image).pixels, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("flash_attn", [True, False], ids=["fused-attention", "mul_mat-softmax"])
@pytest.mark.parametrize("seed", [0, 1])
def test_features_and_projection_equal_llava_for_conditional_generation(hf15, backend, seed, flash_attn):
    model, enc = hf15
    assert enc.flash_attn  # the CPU backend runs flash_attn_ext, so the default (auto) uses it
    if not flash_attn:
        enc = ClipEncoder(enc.path, backend, flash_attn=False)
    prep = pp.preprocess(image(400, 300, seed), enc.params.image)
    pix = torch.tensor(prep.pixels)
    with torch.no_grad():
        hs = model.model.vision_tower(pix, output_hidden_states=True).hidden_states
        ref_feats = hs[-2][0, 1:].numpy()
        ref = model.get_image_features(pixel_values=pix, vision_feature_layer=-2,
                                       vision_feature_select_strategy="default").pooler_output
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).reshape(-1, enc.params.n_out).numpy()
    assert_same_tokens(enc.tile_features(prep.pixels[0]), ref_feats)
    assert_same_tokens(enc.encode(prep), ref)
    assert enc.params.tokens_per_tile == 576
    if not flash_attn:
        enc.free()


# --------------------------------------------------------------------------- LLaVA-1.6 anyres

@pytest.fixture(scope="module")
def hf16(root, backend):
    fx, llm, mm = converted(root, "llava-hf-1.6-mistral")
    model = transformers.LlavaNextForConditionalGeneration.from_pretrained(fx.model_dir, dtype=torch.float32).eval()
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    # the checkpoint's own (height, width) pinpoints; the mmproj holds them as (width, height)
    processor = LlavaNextImageProcessorPil.from_pretrained(fx.model_dir,
                                                          image_grid_pinpoints=model.config.image_grid_pinpoints)
    return model, ClipEncoder(mm, backend), processor


# (120, 90): every pinpoint holds the whole image, so the first of the two least wasteful
# (336x672 and 672x336) wins: the pinpoint order decides between a 2x1 and a 1x2 grid
@pytest.mark.parametrize("w,h", [(672, 672), (500, 200), (200, 500), (1000, 330), (120, 90), (90, 120), (330, 1000)])
def test_anyres_tokens_equal_llava_next_for_conditional_generation(hf16, w, h):
    model, enc, processor = hf16
    assert enc.params.image.mode == "anyres"
    im = image(w, h, w + h)
    prep = pp.preprocess(im, enc.params.image)
    ref_pix = processor(im, return_tensors="np")
    assert ref_pix["pixel_values"].shape[1:] == prep.pixels.shape
    np.testing.assert_allclose(prep.pixels, ref_pix["pixel_values"][0], atol=TOL, rtol=0)
    pix = torch.tensor(prep.pixels)[None]
    sizes = torch.tensor([[h, w]])
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=pix, image_sizes=sizes, vision_feature_layer=-2,
                                       vision_feature_select_strategy="default").pooler_output[0].numpy()
    got = enc.encode(prep)
    assert got.shape[0] == pp.n_image_tokens(prep, enc.params.image)
    assert_same_tokens(got, ref)


# --------------------------------------------------------------------------- original LLaVA, MobileVLM

@pytest.fixture(scope="module")
def tower_features(root):
    """CLIPVisionModel from the separate tower folder: LLaVA's own encoder code path."""
    fx = make_checkpoint("llava-1.5", root / "ck")
    tower = transformers.CLIPVisionModel.from_pretrained(fx.vision_tower, dtype=torch.float32).eval()

    def run(pixels):
        with torch.no_grad():
            return tower(torch.tensor(pixels), output_hidden_states=True).hidden_states[-2][:, 1:]

    return run


def test_original_llava_15_layout_equals_clip_tower_and_mm_projector(root, backend, tower_features):
    fx, llm, mm = converted(root, "llava-1.5")
    enc = ClipEncoder(mm, backend)
    assert enc.params.image.mode == "pad"
    sd = shard_state_dict(fx.model_dir, "model.mm_projector.")
    prep = pp.preprocess(image(300, 450, 3), enc.params.image)
    f = tower_features(prep.pixels)
    with torch.no_grad():
        ref = torch.nn.functional.linear(
            torch.nn.functional.gelu(torch.nn.functional.linear(f, sd["0.weight"], sd["0.bias"])),
            sd["2.weight"], sd["2.bias"])[0].numpy()
    assert_same_tokens(enc.encode(prep), ref)


def _ln2d(x, w, b):
    return torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, 1e-5).permute(0, 3, 1, 2)


def _inverted_residual(x, sd, p, stride):
    # torchvision MobileNetV3 InvertedResidual(ouc, 3, ouc, ouc, use_se=True, "HS", stride),
    # as MobileVLM's LDPBlock builds it (LayerNormAct2d without act, SE with Hardsigmoid)
    F = torch.nn.functional
    c = x.shape[1]
    h = F.conv2d(x, sd[p + "0.0.weight"], None, stride, 1, groups=c)
    h = F.hardswish(_ln2d(h, sd[p + "0.1.weight"], sd[p + "0.1.bias"]))
    s = F.adaptive_avg_pool2d(h, 1)
    s = F.relu(F.conv2d(s, sd[p + "1.fc1.weight"], sd[p + "1.fc1.bias"]))
    s = F.hardsigmoid(F.conv2d(s, sd[p + "1.fc2.weight"], sd[p + "1.fc2.bias"]))
    h = _ln2d(F.conv2d(h * s, sd[p + "2.0.weight"]), sd[p + "2.1.weight"], sd[p + "2.1.bias"])
    return h + x if stride == 1 else h


def mobilevlm_projector(kind, sd, x):
    """MobileVLM's vision_projector.py (LDPNetProjector / LDPNetV2Projector) in torch."""
    F = torch.nn.functional
    if kind == "ldp":
        x = F.linear(F.gelu(F.linear(x, sd["model.mlp.1.weight"], sd["model.mlp.1.bias"])),
                     sd["model.mlp.3.weight"], sd["model.mlp.3.bias"])
    else:
        x = F.linear(F.gelu(F.linear(x, sd["mlp.mlp.0.weight"], sd["mlp.mlp.0.bias"])),
                     sd["mlp.mlp.2.weight"], sd["mlp.mlp.2.bias"])
    b, n, c = x.shape
    h = int(np.sqrt(n))
    x = x.permute(0, 2, 1).reshape(b, c, h, h)
    if kind == "ldp":
        x = _inverted_residual(x, sd, "model.mb_block.1.block.", 1)
        x = _inverted_residual(x, sd, "model.mb_block.2.block.", 2)
    else:
        x = F.adaptive_avg_pool2d(x, (h // 2, h // 2))
        x = F.conv2d(x, sd["peg.peg.0.weight"], sd["peg.peg.0.bias"], 1, 1, groups=c) + x
    return x.flatten(2).permute(0, 2, 1)


@pytest.mark.parametrize("layout,kind", [("mobilevlm-v1", "ldp"), ("mobilevlm-v2", "ldpv2")])
def test_mobilevlm_projectors_equal_the_mobilevlm_code(root, backend, tower_features, layout, kind):
    fx, llm, mm = converted(root, layout)
    enc = ClipEncoder(mm, backend)
    assert enc.params.projector == kind and enc.params.tokens_per_tile == 144
    sd = shard_state_dict(fx.model_dir, "model.mm_projector.")
    prep = pp.preprocess(image(350, 280, 7), enc.params.image)
    with torch.no_grad():
        ref = mobilevlm_projector(kind, sd, tower_features(prep.pixels))[0].numpy()
    assert_same_tokens(enc.encode(prep), ref)


# --------------------------------------------------------------------------- types, legacy files, errors

def rewrite(src, dst, ggml_type=None, drop_keys=(), legacy_ffn=False):
    """Copy an mmproj, re-typing the matmul weights (those whose rows fit the blocks)."""
    import gguflite
    from gguflite import quant
    from gguflite.types import TYPE_TRAITS, GGMLType

    with gguflite.open(src) as f:
        w = gguflite.GGUFWriter(dst)
        for key, field in f.fields.items():
            if key not in drop_keys:
                w.add_field(field)
        for name, ti in f.tensors.items():
            out_name = name
            if legacy_ffn and ".ffn_up." in name:
                out_name = name.replace(".ffn_up.", ".ffn_down.")
            elif legacy_ffn and ".ffn_down." in name:
                out_name = name.replace(".ffn_down.", ".ffn_up.")
            t = None if ggml_type is None else GGMLType[ggml_type]
            matmul = (len(ti.shape) == 2 and name.endswith(".weight") and "position" not in name)
            if t is not None and matmul and ti.shape[-1] % TYPE_TRAITS[t].block_size == 0:
                x = np.array(ti.data, np.float32)
                w.add_tensor(out_name, ti.shape, t, quant.quantize(x, t))
            else:
                w.add_tensor_from(ti, out_name)
        w.write()
    return dst


@pytest.mark.parametrize("ggml_type,min_cos", [("F16", 0.9999), ("BF16", 0.999), ("Q8_0", 0.999),
                                               ("Q4_0", 0.97), ("Q4_K", 0.97)])
def test_weights_run_in_the_type_the_file_stores(root, backend, hf15, tmp_path, ggml_type, min_cos):
    import gguflite

    model, enc32 = hf15
    dst = rewrite(enc32.path, tmp_path / f"mmproj-{ggml_type}.gguf", ggml_type)
    with gguflite.open(dst) as f:
        types = {ti.type_name for ti in f.tensors.values()}
    assert ggml_type in types
    enc = ClipEncoder(dst, backend)
    prep = pp.preprocess(image(320, 240, 9), enc.params.image)
    ref = enc32.encode(prep)
    assert_same_tokens(enc.encode(prep), ref, min_cos)


def test_legacy_key_set_and_fc_naming_load_and_give_the_same_tokens(hf15, backend, tmp_path):
    # llama.cpp's legacy converter: no feature_layer (the unused last block already dropped),
    # fc1 stored as ffn_down and fc2 as ffn_up, no image_aspect_ratio
    model, enc32 = hf15
    dst = rewrite(enc32.path, tmp_path / "legacy.gguf", None,
                  drop_keys=("clip.vision.feature_layer", "clip.vision.image_aspect_ratio", "general.type"),
                  legacy_ffn=True)
    enc = ClipEncoder(dst, backend, image_mode="crop")  # without the key a file means LLaVA-1.5's pad
    assert enc.params.n_run == enc32.params.n_run  # all stored blocks, not one fewer (#25817)
    prep = pp.preprocess(image(300, 300, 4), enc.params.image)
    np.testing.assert_allclose(enc.encode(prep), enc32.encode(prep), rtol=0, atol=1e-5)


def test_files_that_cannot_be_run_raise_mmproj_error(hf15, backend, tmp_path):
    model, enc32 = hf15
    dst = rewrite(enc32.path, tmp_path / "nolayers.gguf", None, drop_keys=("clip.vision.patch_size",))
    with pytest.raises(MmprojError, match="patch_size"):
        ClipEncoder(dst, backend)
    llm_path = os.path.join(os.path.dirname(enc32.path),
                            os.path.basename(enc32.path).replace("mmproj-", ""))
    with pytest.raises(MmprojError, match="not an mmproj"):
        ClipEncoder(llm_path, backend)
    with pytest.raises(Exception, match="tile"):
        enc32.encode_tile(np.zeros((3, 10, 10), np.float32))


def test_only_the_blocks_up_to_the_feature_layer_run(hf15, backend, tmp_path):
    import gguflite
    from gguflite.types import ValueType

    model, enc32 = hf15
    dst = tmp_path / "layer1.gguf"
    with gguflite.open(enc32.path) as f:
        w = gguflite.GGUFWriter(dst)
        for key, field in f.fields.items():
            if key != "clip.vision.feature_layer":
                w.add_field(field)
        w.add("clip.vision.feature_layer", np.array([1], np.int32), type=(ValueType.ARRAY, ValueType.INT32))
        for ti in f.tensors.values():
            w.add_tensor_from(ti)
        w.write()
    enc = ClipEncoder(dst, backend)
    assert enc.params.n_run == 1 and not any(n.startswith("v.blk.1.") for n in enc.weights)
    prep = pp.preprocess(image(300, 300, 8), enc.params.image)
    with torch.no_grad():
        hs = model.model.vision_tower(torch.tensor(prep.pixels), output_hidden_states=True).hidden_states
    assert_same_tokens(enc.tile_features(prep.pixels[0]), hs[1][0, 1:].numpy())
