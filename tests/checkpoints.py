"""Tiny LLaVA checkpoints at the real configurations, for tests (needs torch, transformers,
safetensors and sentencepiece).

Each fixture folder has the config.json fields, tensor names, file formats and sharding of
the real repository it imitates, with tiny dimensions (LLM: 64 wide, 2 layers, 4 heads,
vocab 320 from a SentencePiece model trained on the fly; CLIP tower: 128 wide, 3 layers,
2 heads, 336 px / 14 px patches so that llama.cpp's fixed 24x24 LDP grid works).

API::

    from tests.checkpoints import LAYOUTS, make_checkpoint
    fx = make_checkpoint("llava-1.5", "/tmp/ckpts")   # -> Fixture
    fx.model_dir        # the checkpoint folder (pass to convert_llava / gguflite convert-llava)
    fx.vision_tower     # the separate CLIP folder for llava-1.5 / mobilevlm-*, else None
    fx.reference_llm()  # transformers Llama/MistralForCausalLM (float32) loaded from the files
    fx.text_config      # the LLM's transformers config dict
    fx.llm_state_dict() # {HF LLM name: float32 torch tensor} read back from the files

    from tests.checkpoints import make_gguf
    llm_path, mmproj_path, fx = make_gguf("llava-1.5", "/tmp/ckpts", outtype="f32")
                        # checkpoint + both GGUF files (cached: reuses files already there)

In a test session, build them once with a session fixture::

    @pytest.fixture(scope="session")
    def llava15(tmp_path_factory):
        return make_gguf("llava-1.5", tmp_path_factory.mktemp("llava"), outtype="f32")

Command line (from the repository root)::

    python tests/checkpoints.py OUTDIR [LAYOUT ...]       # write them for manual use

LAYOUTS (name → what it imitates):

    llava-1.5             liuhaotian/llava-v1.5-7b: LlavaLlamaForCausalLM, 2 .bin shards + index,
                          mm_projector in the last shard, rotary inv_freq buffers; tower in a
                          separate two-tower CLIPModel folder (openai/clip-vit-large-patch14-336,
                          pytorch_model.bin, preprocessor_config.json)
    llava-1.6-vicuna      liuhaotian/llava-v1.6-vicuna-7b: 3 safetensors shards, tower inside
                          (model.vision_tower.vision_tower.*), image_newline, anyres pinpoints
    llava-1.6-mistral     liuhaotian/llava-v1.6-mistral-7b: LlavaMistralForCausalLM, GQA, rope 1e6
    bakllava-1            SkunkworksAI/BakLLaVA-1: LlavaMistralForCausalLM (llava_mistral),
                          2 .bin shards, tower inside, no anyres
    mobilevlm-v1          mtgv/MobileVLM-1.7B: MobileLlamaForCausalLM, ldpnet, pytorch_model.bin,
                          separate tower
    mobilevlm-v2          mtgv/MobileVLM_V2-1.7B: ldpnetv2, model.safetensors, separate tower
    llava-hf-1.5          llava-hf/llava-1.5-7b-hf: LlavaForConditionalGeneration, 3 safetensors
                          shards, language_model./vision_tower./multi_modal_projector. keys,
                          <image>=320 and <pad>=321 added, vocab padded to 384
    llava-hf-1.6-mistral  llava-hf/llava-v1.6-mistral-7b-hf: LlavaNextForConditionalGeneration,
                          image_newline, pinpoints, Mistral text_config

The BakLLaVA-1 and MobileVLM config.json files were not available to copy: their fields
follow the LLaVA / MobileVLM source code (model_type, architectures, mm_* keys) and may
differ in details the converter does not read.

Keyword options of make_checkpoint: ``seed``, ``tower_in_config`` (llava-1.5/mobilevlm: put the
CLIP folder's absolute path in mm_vision_tower instead of the hub name).  Fixtures are
deterministic for a given seed, and a folder that is already complete is reused as is.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

LAYOUTS = ("llava-1.5", "llava-1.6-vicuna", "llava-1.6-mistral", "bakllava-1", "mobilevlm-v1",
           "mobilevlm-v2", "llava-hf-1.5", "llava-hf-1.6-mistral")

N_SP = 320  # SentencePiece vocabulary of the tiny tokenizer
HF_VOCAB = 384  # llava-hf pads 32002 -> 32064; we pad 322 -> 384
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

VISION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
              image_size=336, patch_size=14, layer_norm_eps=1e-5, hidden_act="quick_gelu", projection_dim=32)
LLAMA = dict(vocab_size=N_SP, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
             hidden_act="silu", bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
MISTRAL = dict(LLAMA, num_key_value_heads=2, rope_theta=1000000.0, max_position_embeddings=1024,
               sliding_window=None)


@dataclass
class Fixture:
    layout: str
    model_dir: str
    vision_tower: str | None
    text_config: dict  # for transformers (model_type included)
    llm_prefix: str  # prefix of the LLM tensors in the files ("" or "language_model.")
    files: list = field(default_factory=list)

    def llm_state_dict(self) -> dict:
        """The LLM's tensors as float32 torch tensors, read back with torch / safetensors."""
        import torch
        from safetensors.torch import load_file

        sd = {}
        for f in sorted(os.listdir(self.model_dir)):
            p = os.path.join(self.model_dir, f)
            if f.endswith(".safetensors"):
                sd.update(load_file(p))
            elif f.endswith(".bin"):
                sd.update(torch.load(p, weights_only=True))
        out = {}
        for k, v in sd.items():
            if not k.startswith(self.llm_prefix) or "mm_projector" in k or "vision_tower" in k or "image_newline" in k:
                continue
            k = k[len(self.llm_prefix):]
            if k.startswith("model.") or k.startswith("lm_head."):
                if "rotary_emb" not in k:
                    out[k] = v.float()
        return out

    def reference_llm(self):
        """transformers' own model (float32, eval mode) with this checkpoint's LLM weights."""
        import transformers

        cfg = dict(self.text_config)
        model_type = cfg.pop("model_type")
        cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM)}[model_type]
        model = cls[1](cls[0](**cfg)).float().eval()
        model.load_state_dict(self.llm_state_dict(), strict=True)
        return model


# --------------------------------------------------------------------------- pieces

_CORPUS_WORDS = ("the a an image shows cat dog red blue green small large picture of on in with and is are "
                 "what describe this photo there two three people sitting standing near table tree sky "
                 "USER ASSISTANT question answer chat between curious human artificial intelligence").split()


def _tokenizer_model(workdir: str) -> bytes:
    """A LLaMA-style SentencePiece BPE model (byte fallback, <unk>/<s>/</s> = 0/1/2)."""
    import sentencepiece as spm

    cache = os.path.join(workdir, ".tokenizer.model")
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            return f.read()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(_CORPUS_WORDS, size=12)) + f" {i}." for i in range(400)]
    prefix = os.path.join(workdir, ".sp")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=N_SP, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, minloglevel=2)
    os.replace(prefix + ".model", cache)
    os.unlink(prefix + ".vocab")
    with open(cache, "rb") as f:
        return f.read()


def _llm(text_config: dict, seed: int) -> dict:
    """HF LLM state dict (float16) of a random tiny Llama/Mistral."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = dict(text_config)
    mt = cfg.pop("model_type")
    if mt == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**cfg))
    with torch.no_grad():  # make the tiny model's logits less flat than N(0, 0.02) init gives
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
            else:
                p.normal_(1.0, 0.1)
    return {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}


def _clip_vision(seed: int, two_tower: bool) -> tuple[dict, dict]:
    """(state dict float16, config dict) of a tiny CLIPVisionModel or two-tower CLIPModel."""
    import torch
    import transformers

    torch.manual_seed(seed)
    if two_tower:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    vocab_size=100, max_position_embeddings=77, projection_dim=32,
                    bos_token_id=1, eos_token_id=2, pad_token_id=1)
        cfg = transformers.CLIPConfig(text_config=text, vision_config=VISION, projection_dim=32)
        model = transformers.CLIPModel(cfg)
        config = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 32,
                  "text_config": dict(text, model_type="clip_text_model"),
                  "vision_config": dict(VISION, model_type="clip_vision_model"),
                  "logit_scale_init_value": 2.6592, "torch_dtype": "float32"}
    else:
        model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION))
        config = dict(VISION, model_type="clip_vision_model", architectures=["CLIPVisionModel"])
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    if not two_tower:  # transformers 5 drops the "vision_model." level that saved checkpoints have
        sd = {k if k.startswith("vision_model.") else "vision_model." + k: v for k, v in sd.items()}
    # older checkpoints (the ones LLaVA points at) store the position_ids buffer
    sd["vision_model.embeddings.position_ids"] = torch.arange(
        (VISION["image_size"] // VISION["patch_size"]) ** 2 + 1).unsqueeze(0)
    return sd, config


def _mlp_projector(d_vis: int, n_embd: int, names=("0", "2")) -> dict:
    import torch

    return {f"{names[0]}.weight": torch.randn(n_embd, d_vis) * 0.05, f"{names[0]}.bias": torch.randn(n_embd) * 0.05,
            f"{names[1]}.weight": torch.randn(n_embd, n_embd) * 0.05, f"{names[1]}.bias": torch.randn(n_embd) * 0.05}


def _ldp_projector(d_vis: int, d: int) -> dict:
    """MobileVLM LDPNetProjector: model.mlp (Identity, Linear, GELU, Linear) and two
    torchvision InvertedResidual blocks (dw 3x3 conv, LayerNorm, SE(fc1, fc2), pw conv, LN)."""
    import torch

    sq = max(8, (d // 4 + 4) // 8 * 8)  # torchvision _make_divisible(d // 4, 8)
    sd = {"model.mlp.1.weight": torch.randn(d, d_vis) * 0.05, "model.mlp.1.bias": torch.randn(d) * 0.05,
          "model.mlp.3.weight": torch.randn(d, d) * 0.05, "model.mlp.3.bias": torch.randn(d) * 0.05}
    for i in (1, 2):
        p = f"model.mb_block.{i}.block."
        sd.update({p + "0.0.weight": torch.randn(d, 1, 3, 3) * 0.1,
                   p + "0.1.weight": 1 + torch.randn(d) * 0.1, p + "0.1.bias": torch.randn(d) * 0.1,
                   p + "1.fc1.weight": torch.randn(sq, d, 1, 1) * 0.1, p + "1.fc1.bias": torch.randn(sq) * 0.1,
                   p + "1.fc2.weight": torch.randn(d, sq, 1, 1) * 0.1, p + "1.fc2.bias": torch.randn(d) * 0.1,
                   p + "2.0.weight": torch.randn(d, d, 1, 1) * 0.1,
                   p + "2.1.weight": 1 + torch.randn(d) * 0.1, p + "2.1.bias": torch.randn(d) * 0.1})
    return sd


def _ldpv2_projector(d_vis: int, d: int) -> dict:
    """MobileVLM LDPNetV2Projector: mlp.mlp (Linear, GELU, Linear), peg.peg.0 dw 3x3 conv."""
    import torch

    return {"mlp.mlp.0.weight": torch.randn(d, d_vis) * 0.05, "mlp.mlp.0.bias": torch.randn(d) * 0.05,
            "mlp.mlp.2.weight": torch.randn(d, d) * 0.05, "mlp.mlp.2.bias": torch.randn(d) * 0.05,
            "peg.peg.0.weight": torch.randn(d, 1, 3, 3) * 0.1, "peg.peg.0.bias": torch.randn(d) * 0.1}


def _prefixed(prefix: str, sd: dict) -> dict:
    return {prefix + k: v.half().contiguous() if v.is_floating_point() else v for k, v in sd.items()}


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def _write_shards(folder: str, sd: dict, fmt: str, n_shards: int, last: tuple = ()) -> list[str]:
    """Write ``sd`` the way save_pretrained does: one file, or ``n_shards`` shards + index.
    Tensors whose name starts with one of ``last`` go to the last shard."""
    import torch
    from safetensors.torch import save_file

    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    names = [k for k in sd if not k.startswith(last)] + [k for k in sd if k.startswith(last)]
    if n_shards == 1:
        groups = [names]
        fnames = [f"{stem}.{ext}"]
    else:
        per = -(-len([k for k in names if not k.startswith(last)]) // n_shards)
        groups = [names[i * per:(i + 1) * per] for i in range(n_shards - 1)]
        groups.append(names[(n_shards - 1) * per:])
        fnames = [f"{stem}-{i + 1:05d}-of-{n_shards:05d}.{ext}" for i in range(n_shards)]
    for g, fn in zip(groups, fnames):
        part = {k: sd[k] for k in g}
        path = os.path.join(folder, fn)
        if fmt == "safetensors":
            save_file(part, path, metadata={"format": "pt"})
        else:
            torch.save(part, path)
    if n_shards > 1:
        total = sum(v.numel() * v.element_size() for v in sd.values())
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: fn for g, fn in zip(groups, fnames) for k in g}}
        _write_json(os.path.join(folder, f"{stem}.{ext}.index.json"), index)
    return fnames


def _tokenizer_files(folder: str, sp_model: bytes, added: dict | None = None, pad: str | None = None) -> None:
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(sp_model)
    decoder = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True} for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>"))}
    for content, tid in (added or {}).items():
        decoder[str(tid)] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
    _write_json(os.path.join(folder, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": pad or "<unk>",
        "clean_up_tokenization_spaces": False, "legacy": False, "model_max_length": 4096,
        "tokenizer_class": "LlamaTokenizer"})
    _write_json(os.path.join(folder, "special_tokens_map.json"),
                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": pad or "<unk>"})
    if added:
        _write_json(os.path.join(folder, "added_tokens.json"), added)


def _make_clip_folder(root: str, seed: int) -> str:
    """openai/clip-vit-large-patch14-336 in miniature: two-tower CLIPModel, pytorch_model.bin."""
    import torch

    folder = os.path.join(root, "clip-vit-large-patch14-336" + (f"-seed{seed}" if seed else ""))
    if os.path.exists(os.path.join(folder, "preprocessor_config.json")):  # written last
        return folder
    os.makedirs(folder, exist_ok=True)
    sd, config = _clip_vision(seed + 1000, two_tower=True)
    torch.save(sd, os.path.join(folder, "pytorch_model.bin"))
    _write_json(os.path.join(folder, "config.json"), config)
    _write_json(os.path.join(folder, "preprocessor_config.json"), {
        "crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": 336})
    return folder


# --------------------------------------------------------------------------- layouts


def make_checkpoint(layout: str, root, *, seed: int = 0, tower_in_config: bool = False) -> Fixture:
    """Write the tiny ``layout`` checkpoint under ``root`` (``root/<layout>``; the separate
    CLIP tower, when there is one, in ``root/clip-vit-large-patch14-336``) and describe it."""
    import torch

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    root = os.path.abspath(os.fspath(root))
    os.makedirs(root, exist_ok=True)
    folder = os.path.join(root, layout + ("-towerpath" if tower_in_config else "") + (f"-seed{seed}" if seed else ""))
    mistral = "mistral" in layout or layout == "bakllava-1"
    hf = layout.startswith("llava-hf")
    text_config = dict(MISTRAL if mistral else LLAMA, model_type="mistral" if mistral else "llama")
    if hf:
        text_config["vocab_size"] = HF_VOCAB
        text_config["pad_token_id"] = N_SP + 1
    separate = layout in ("llava-1.5", "mobilevlm-v1", "mobilevlm-v2")
    if os.path.exists(os.path.join(folder, "generation_config.json")):  # written last: complete
        tower = _make_clip_folder(root, seed) if separate else None
        files = sorted(f for f in os.listdir(folder) if f.endswith((".bin", ".safetensors")))
        return Fixture(layout, folder, tower, text_config, "language_model." if hf else "", files)
    os.makedirs(folder, exist_ok=True)
    sp_model = _tokenizer_model(root)
    torch.manual_seed(seed)
    llm = _llm(text_config, seed)
    n_embd, d_vis = text_config["hidden_size"], VISION["hidden_size"]
    tower = None
    common = {k: v for k, v in text_config.items() if k not in ("model_type", "sliding_window")}
    common.update(torch_dtype="float16", transformers_version="4.36.2", use_cache=True, initializer_range=0.02,
                  pretraining_tp=1, rope_scaling=None, attention_bias=False, pad_token_id=0)

    if separate:
        tower = _make_clip_folder(root, seed)
    hub_tower = "openai/clip-vit-large-patch14-336"

    if layout == "llava-1.5":
        sd = dict(llm)
        for i in range(text_config["num_hidden_layers"]):  # transformers 4.31 saved these buffers
            hd = n_embd // text_config["num_attention_heads"]
            sd[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = 1.0 / (
                10000 ** (torch.arange(0, hd, 2).float() / hd))
        sd.update(_prefixed("model.mm_projector.", _mlp_projector(d_vis, n_embd)))
        files = _write_shards(folder, sd, "bin", 2, last=("model.mm_projector.",))
        config = dict(common, _name_or_path="./checkpoints/vicuna-7b-v1-5", architectures=["LlavaLlamaForCausalLM"],
                      model_type="llava", freeze_mm_mlp_adapter=False, image_aspect_ratio="pad",
                      max_length=4096, mm_hidden_size=d_vis, mm_projector_type="mlp2x_gelu",
                      mm_use_im_patch_token=False, mm_use_im_start_end=False, mm_vision_select_feature="patch",
                      mm_vision_select_layer=-2, mm_vision_tower=tower if tower_in_config else hub_tower,
                      tune_mm_mlp_adapter=False, use_mm_proj=True)
        config["transformers_version"] = "4.31.0"
        _tokenizer_files(folder, sp_model)
    elif layout in ("llava-1.6-vicuna", "llava-1.6-mistral", "bakllava-1"):
        vis_sd, _ = _clip_vision(seed + 1, two_tower=False)
        sd = dict(llm)
        sd.update(_prefixed("model.vision_tower.vision_tower.", vis_sd))
        sd.update(_prefixed("model.mm_projector.", _mlp_projector(d_vis, n_embd)))
        anyres = layout != "bakllava-1"
        if anyres:
            sd["model.image_newline"] = (torch.randn(n_embd) * 0.1).half()
        if layout == "bakllava-1":
            files = _write_shards(folder, sd, "bin", 2)
        else:
            files = _write_shards(folder, sd, "safetensors", 3)
        config = dict(common, _name_or_path="./checkpoints/llava-v1.6", model_type="llava_mistral" if mistral else "llava",
                      architectures=["LlavaMistralForCausalLM" if mistral else "LlavaLlamaForCausalLM"],
                      freeze_mm_mlp_adapter=False, image_aspect_ratio="anyres" if anyres else "pad",
                      mm_hidden_size=d_vis, mm_projector_type="mlp2x_gelu", mm_use_im_patch_token=False,
                      mm_use_im_start_end=False, mm_vision_select_feature="patch", mm_vision_select_layer=-2,
                      mm_vision_tower=hub_tower, tune_mm_mlp_adapter=False, use_mm_proj=True)
        if anyres:
            config.update(image_grid_pinpoints=PINPOINTS, mm_patch_merge_type="spatial_unpad",
                          unfreeze_mm_vision_tower=True, image_crop_resolution=224, image_split_resolution=224,
                          mm_vision_tower_lr=2e-6, mm_projector_lr=None)
        if mistral:
            config.update(sliding_window=None)
        _tokenizer_files(folder, sp_model)
    elif layout in ("mobilevlm-v1", "mobilevlm-v2"):
        v2 = layout == "mobilevlm-v2"
        sd = dict(llm)
        proj = _ldpv2_projector(d_vis, n_embd) if v2 else _ldp_projector(d_vis, n_embd)
        sd.update(_prefixed("model.mm_projector.", proj))
        files = _write_shards(folder, sd, "safetensors" if v2 else "bin", 1)
        config = dict(common, _name_or_path="mtgv/MobileLLaMA-1.4B-Chat", architectures=["MobileLlamaForCausalLM"],
                      model_type="mobilevlm", image_aspect_ratio="pad", mm_hidden_size=d_vis,
                      mm_projector_type="ldpnetv2" if v2 else "ldpnet", mm_use_im_patch_token=False,
                      mm_use_im_start_end=False, mm_vision_select_feature="patch", mm_vision_select_layer=-2,
                      mm_vision_tower=tower if tower_in_config else hub_tower, vision_tower_type="clip",
                      tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False, use_mm_proj=True)
        _tokenizer_files(folder, sp_model)
    else:  # llava-hf
        next_ = layout == "llava-hf-1.6-mistral"
        vis_sd, _ = _clip_vision(seed + 1, two_tower=False)
        sd = _prefixed("language_model.", llm)
        sd.update(_prefixed("vision_tower.", vis_sd))
        del sd["vision_tower.vision_model.embeddings.position_ids"]  # llava-hf repos do not store it
        sd.update(_prefixed("multi_modal_projector.", _mlp_projector(d_vis, n_embd, ("linear_1", "linear_2"))))
        if next_:
            sd["image_newline"] = (torch.randn(n_embd) * 0.1).half()
        files = _write_shards(folder, sd, "safetensors", 3)
        tc = {k: v for k, v in text_config.items()}
        tc.update(architectures=["MistralForCausalLM" if mistral else "LlamaForCausalLM"], torch_dtype="float16")
        config = {"architectures": ["LlavaNextForConditionalGeneration" if next_ else "LlavaForConditionalGeneration"],
                  "model_type": "llava_next" if next_ else "llava", "ignore_index": -100,
                  "image_token_index": N_SP, "pad_token_id": N_SP + 1, "projector_hidden_act": "gelu",
                  "text_config": tc, "vision_config": dict(VISION, model_type="clip_vision_model"),
                  "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
                  "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.39.0",
                  "vocab_size": HF_VOCAB}
        if next_:
            config["image_grid_pinpoints"] = PINPOINTS
            config["use_image_newline_parameter"] = True
        _tokenizer_files(folder, sp_model, added={"<image>": N_SP, "<pad>": N_SP + 1}, pad="<pad>")
        _write_json(os.path.join(folder, "preprocessor_config.json"), {
            "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_normalize": True,
            "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "image_processor_type": "CLIPImageProcessor",
            "resample": 3, "size": {"shortest_edge": 336}})
    _write_json(os.path.join(folder, "config.json"), config)
    _write_json(os.path.join(folder, "generation_config.json"),
                {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_length": 4096})
    return Fixture(layout, folder, tower, text_config, "language_model." if hf else "", files)


def make_gguf(layout: str, root, *, outtype: str = "f16", seed: int = 0) -> tuple[str, str, Fixture]:
    """``make_checkpoint`` then ``gguflite.convert.convert_llava`` into ``root/gguf``;
    returns ``(llm_path, mmproj_path, fixture)``.  Files already converted are reused."""
    from gguflite.convert import convert_llava

    fx = make_checkpoint(layout, root, seed=seed)
    outdir = os.path.join(os.path.abspath(os.fspath(root)), "gguf")
    llm = os.path.join(outdir, f"{layout}-{outtype}.gguf")
    mmproj = os.path.join(outdir, f"mmproj-{layout}-{outtype}.gguf")
    if not (os.path.exists(llm) and os.path.exists(mmproj)):
        llm, mmproj = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=outdir, outtype=outtype,
                                    progress=False)
    return llm, mmproj, fx


def big_endian_bin(le_path, be_path) -> None:
    """Rewrite a one-storage ``torch.save`` archive as a big-endian one (``byteorder`` = big,
    float32 storage bytes swapped), as torch writes it on a big-endian machine."""
    import zipfile

    with zipfile.ZipFile(le_path) as z:
        root = z.namelist()[0].split("/")[0]
        pkl = z.read(f"{root}/data.pkl")
        data = np.frombuffer(z.read(f"{root}/data/0"), "<f4").astype(">f4").tobytes()
    with zipfile.ZipFile(be_path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "big")
        z.writestr("archive/data/0", data)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    for layout in argv[1:] or LAYOUTS:
        fx = make_checkpoint(layout, argv[0])
        print(f"{layout:22s} {fx.model_dir}" + (f"  (vision tower: {fx.vision_tower})" if fx.vision_tower else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
