"""ggml_bind.llava end to end: greedy answers from image + prompt equal transformers' generate
on the same tiny checkpoints (LLaVA-1.5 original and llava-hf, LLaVA-NeXT at several aspect
ratios, MobileVLM-style), and bad input gives a clear error, not a crash."""
import numpy as np
import pytest

import torch
import transformers
import sentencepiece as spm

from gguflite.convert import convert_llava  # noqa: E402
from tests.checkpoints import N_SP, make_checkpoint  # noqa: E402

from ggml_bind import preprocess as pp  # noqa: E402
from ggml_bind.llama import ContextFullError  # noqa: E402
from ggml_bind.llava import LlavaError, LlavaModel  # noqa: E402

pytestmark = pytest.mark.slow
N_NEW = 32
TOL = 1 / 255 / min(pp.CLIP_STD)  # one grey level, after normalisation


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("llava")


_cache = {}


def converted(root, layout):
    if layout not in _cache:
        fx = make_checkpoint(layout, root / "ck")
        llm, mm = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=root / "out" / layout,
                                outtype="f32", progress=False)
        _cache[layout] = (fx, llm, mm)
    return _cache[layout]


def load(llm, mm, **kw):
    # F32 weights, F32 cache, plain attention: the exact path, comparable token by token;
    # the tiny LLaMA was trained for 512 positions, one image takes 576
    kw.setdefault("n_ctx", 1024)
    return LlavaModel.load(llm, mm, n_threads=2, kv_type="f32", flash_attn=False, **kw)


def image(w, h, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def reference_ids(fx, text, n_image_tokens, image_token):
    """LLaVA's tokenizer_image_token with the original tokenizer.model: BOS, chunks encoded
    one by one, the image placeholder repeated once per image token."""
    sp = spm.SentencePieceProcessor(model_file=fx.model_dir + "/tokenizer.model")
    before, after = text.split("<image>")
    return [1] + sp.encode(before), [image_token] * n_image_tokens, sp.encode(after)


def until_eos(ids, eos=2):
    ids = list(ids)
    return ids[: ids.index(eos)] if eos in ids else ids


def hf_generate_from_embeds(lm, embeds):
    with torch.no_grad():
        out = lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                          max_new_tokens=N_NEW, do_sample=False, eos_token_id=2, pad_token_id=0)
    return until_eos(out[0].tolist())


# --------------------------------------------------------------------------- llava-hf

def test_llava_hf_15_greedy_answer_equals_transformers_generate(root):
    fx, llm, mm = converted(root, "llava-hf-1.5")
    m = load(llm, mm, n_ctx=1024)
    img = image(320, 240, 1)
    # the mmproj's image_aspect_ratio selects llava-hf's processor: resize + centre crop, no pad
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    assert m.encoder.params.image.mode == "crop"
    ref_pix = CLIPImageProcessorPil.from_pretrained(fx.model_dir)(img, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(pp.preprocess(img, m.encoder.params.image).pixels, ref_pix, atol=TOL, rtol=0)
    got = list(m.generate_tokens("What is in the picture?", images=[img], max_tokens=N_NEW))
    text = m.format_prompt("What is in the picture?", 1)
    a, img_ids, b = reference_ids(fx, text, 576, N_SP)
    model = transformers.LlavaForConditionalGeneration.from_pretrained(fx.model_dir, dtype=torch.float32).eval()
    pix = torch.tensor(pp.preprocess(img, m.encoder.params.image).pixels)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([a + img_ids + b]), pixel_values=pix, max_new_tokens=N_NEW,
                             do_sample=False, eos_token_id=2, pad_token_id=0)
    ref = until_eos(out[0, len(a + img_ids + b):].tolist())
    assert got == ref
    assert len(got) > 4


@pytest.fixture(scope="module")
def next16(root):
    fx, llm, mm = converted(root, "llava-hf-1.6-mistral")
    model = transformers.LlavaNextForConditionalGeneration.from_pretrained(fx.model_dir, dtype=torch.float32).eval()
    return fx, load(llm, mm, n_ctx=4096), model  # the checkpoint's own (height, width) pinpoints


# (120, 90): all pinpoints hold the whole image and 336x672 ties with 672x336, so the
# pinpoint order (transformers' (height, width), the mmproj's (width, height)) picks the grid
@pytest.mark.parametrize("w,h", [(500, 200), (240, 600), (672, 672), (120, 90)])
def test_llava_next_greedy_answer_equals_transformers_generate_for_several_aspect_ratios(next16, w, h):
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    fx, m, model = next16
    assert m.template.name == "mistral_instruct"
    img = image(w, h, w)
    got = list(m.generate_tokens("Describe the image.", images=[img], max_tokens=N_NEW))
    prep = pp.preprocess(img, m.encoder.params.image)
    processor = LlavaNextImageProcessorPil.from_pretrained(fx.model_dir,
                                                          image_grid_pinpoints=model.config.image_grid_pinpoints)
    ref_pix = processor(img, return_tensors="np")["pixel_values"]
    assert ref_pix.shape[1:] == prep.pixels.shape
    np.testing.assert_allclose(prep.pixels, ref_pix[0], atol=TOL, rtol=0)
    n_img = pp.n_image_tokens(prep, m.encoder.params.image)
    assert m.timings["prompt_tokens"] > n_img
    a, img_ids, b = reference_ids(fx, m.format_prompt("Describe the image.", 1), n_img, N_SP)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([a + img_ids + b]), pixel_values=torch.tensor(prep.pixels)[None],
                             image_sizes=torch.tensor([[h, w]]), max_new_tokens=N_NEW, do_sample=False,
                             eos_token_id=2, pad_token_id=0)
    assert got == until_eos(out[0, len(a + img_ids + b):].tolist())


# --------------------------------------------------------------------------- original layouts

def test_original_llava_15_and_mobilevlm_answers_equal_llama_generate_on_llava_embeddings(root):
    """LLaVA's own path: CLIP tower hidden_states[-2][:, 1:] -> projector, spliced between
    the text embeddings, then LlamaForCausalLM.generate(inputs_embeds=...)."""
    from tests.test_clip import mobilevlm_projector, shard_state_dict

    F = torch.nn.functional
    for layout, kind in (("llava-1.5", "mlp"), ("mobilevlm-v2", "ldpv2"), ("mobilevlm-v1", "ldp")):
        fx, llm, mm = converted(root, layout)
        m = load(llm, mm, n_ctx=1024)
        assert m.encoder.params.image.mode == "pad" and m.template.name == "vicuna_v1"
        img = image(300, 420, 11)
        got = list(m.generate_tokens("Describe the image.", images=[img], max_tokens=N_NEW))

        tower = transformers.CLIPVisionModel.from_pretrained(fx.vision_tower, dtype=torch.float32).eval()
        sd = shard_state_dict(fx.model_dir, "model.mm_projector.")
        pix = torch.tensor(pp.preprocess(img, m.encoder.params.image).pixels)
        lm = fx.reference_llm()
        with torch.no_grad():
            f = tower(pix, output_hidden_states=True).hidden_states[-2][:, 1:]
            if kind == "mlp":
                feats = F.linear(F.gelu(F.linear(f, sd["0.weight"], sd["0.bias"])), sd["2.weight"], sd["2.bias"])
            else:
                feats = mobilevlm_projector(kind, sd, f)
            a, _, b = reference_ids(fx, m.format_prompt("Describe the image.", 1), 0, 0)
            emb = lm.get_input_embeddings()
            embeds = torch.cat([emb(torch.tensor([a])), feats, emb(torch.tensor([b]))], 1)
        assert got == hf_generate_from_embeds(lm, embeds), layout


def test_two_images_in_a_raw_prompt_go_where_their_markers_are(root):
    F = torch.nn.functional
    fx, llm, mm = converted(root, "llava-1.5")
    m = load(llm, mm, n_ctx=1536)
    imgs = [image(300, 200, 21), image(200, 300, 22)]
    text = "USER: first <image> then <image>\nWhich is brighter? ASSISTANT:"
    got = list(m.generate_tokens(text, images=imgs, max_tokens=N_NEW, template="raw"))

    from tests.test_clip import shard_state_dict

    tower = transformers.CLIPVisionModel.from_pretrained(fx.vision_tower, dtype=torch.float32).eval()
    sd = shard_state_dict(fx.model_dir, "model.mm_projector.")
    lm = fx.reference_llm()
    sp = spm.SentencePieceProcessor(model_file=fx.model_dir + "/tokenizer.model")
    a, b, c = text.split("<image>")
    emb = lm.get_input_embeddings()
    with torch.no_grad():
        parts = [emb(torch.tensor([[1] + sp.encode(a)]))]
        for img, after in zip(imgs, (b, c)):
            pix = torch.tensor(pp.preprocess(img, m.encoder.params.image).pixels)
            f = tower(pix, output_hidden_states=True).hidden_states[-2][:, 1:]
            parts.append(F.linear(F.gelu(F.linear(f, sd["0.weight"], sd["0.bias"])), sd["2.weight"], sd["2.bias"]))
            parts.append(emb(torch.tensor([sp.encode(after)])))
        embeds = torch.cat(parts, 1)
    assert m.timings["prompt_tokens"] == embeds.shape[1]
    assert got == hf_generate_from_embeds(lm, embeds)


@pytest.fixture(scope="module")
def m15(root):
    fx, llm, mm = converted(root, "llava-1.5")
    return fx, load(llm, mm)


def test_text_only_logits_equal_llama_for_causal_lm(m15):
    fx, m = m15
    text = "a red cat sitting near the table"
    sp = spm.SentencePieceProcessor(model_file=fx.model_dir + "/tokenizer.model")
    with torch.no_grad():
        ref = fx.reference_llm()(torch.tensor([[1] + sp.encode(text)])).logits[0, -1].numpy()
    np.testing.assert_allclose(m.logits(text), ref, atol=1e-3, rtol=0)


def test_encode_image_gives_the_projected_tokens(m15):
    fx, m = m15
    emb = m.encode_image(image(200, 200, 2))
    assert emb.shape == (576, m.llm.params.n_embd) and emb.dtype == np.float32
    assert m.timings["image_encode_ms"] > 0
    # precomputed embeddings give the same answer as the image
    a = m.generate("Describe the image.", images=[image(200, 200, 2)], max_tokens=8)
    b = m.generate("Describe the image.", images=[emb], max_tokens=8)
    assert a == b


def test_streaming_pieces_join_to_the_whole_answer_and_stop_strings_cut_it(m15):
    fx, m = m15
    img = image(256, 256, 3)
    whole = m.generate("Describe the image.", images=[img], max_tokens=24)
    pieces = list(m.generate("Describe the image.", images=[img], max_tokens=24, stream=True))
    assert "".join(pieces) == whole
    ids = list(m.generate_tokens("Describe the image.", images=[img], max_tokens=24))
    assert whole == m.tokenizer.decode(ids)
    if len(whole.strip()) > 3:
        stop = whole.strip()[2:4]
        cut = m.generate("Describe the image.", images=[img], max_tokens=24, stop=[stop])
        assert cut == whole[: whole.find(stop)]
    assert m.timings["eval_tokens"] >= 0 and m.timings["prompt_tokens"] > 576


def test_seeded_sampling_is_reproducible(m15):
    fx, m = m15
    img = image(256, 200, 4)
    kw = dict(images=[img], max_tokens=16, temperature=0.9, top_k=40, top_p=0.95, seed=123)
    assert list(m.generate_tokens("Describe.", **kw)) == list(m.generate_tokens("Describe.", **kw))
    with pytest.raises(TypeError, match="unknown sampling"):
        list(m.generate_tokens("x", temprature=1.0))


# --------------------------------------------------------------------------- bad input

def test_unreadable_image_files_raise_a_clear_error_and_the_model_stays_usable(m15, tmp_path):
    fx, m = m15
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(pp.ImageError, match="notes.txt"):
        m.generate("Describe.", images=[bad], max_tokens=4)
    with pytest.raises(pp.ImageError, match="no such file"):
        m.encode_image(tmp_path / "missing.png")
    huge = tmp_path / "huge.png"
    from tests.test_preprocess import png_header_only

    huge.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(pp.ImageError, match="too large.*400000000 pixels"):
        m.generate("Describe.", images=[huge], max_tokens=4)
    assert isinstance(m.generate("Describe.", images=[image(64, 64)], max_tokens=4), str)


def test_mmproj_whose_width_does_not_match_the_llm_is_refused(root, tmp_path):
    import gguflite

    fx, llm, mm = converted(root, "llava-1.5")
    dst = tmp_path / "mmproj-narrow.gguf"
    with gguflite.open(mm) as f:
        w = gguflite.GGUFWriter(dst)
        for key, field in f.fields.items():
            w.add_field(field)
        for name, ti in f.tensors.items():
            if name in ("mm.2.weight", "mm.2.bias"):
                data = np.array(ti.data, np.float32)[:32]
                w.add_tensor(name, data.shape, ti.type, data)
            else:
                w.add_tensor_from(ti)
        w.write()
    with pytest.raises(LlavaError, match="outputs 32-wide embeddings but the LLM .* is 64 wide"):
        load(llm, dst)


def test_a_prompt_longer_than_the_context_is_refused_before_any_work(root):
    fx, llm, mm = converted(root, "llava-1.5")
    m = load(llm, mm, n_ctx=600)
    with pytest.raises(ContextFullError, match="needs .* tokens .* context holds 600"):
        m.generate("word " * 200, images=[image(64, 64)], max_tokens=4)
    with pytest.raises(ContextFullError):
        m.logits("word " * 700)
    assert isinstance(m.generate("hi", max_tokens=2), str)
    assert isinstance(ContextFullError("x"), ValueError)
