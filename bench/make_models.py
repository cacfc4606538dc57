"""Models at real shapes with random weights, for the benchmarks (timings do not depend on
the values, so nothing needs downloading).

    python -m bench.make_models OUTDIR [--size tiny|small|full|7b] [--source]

writes into OUTDIR:

- ``mmproj-<size>-f16.gguf``: a CLIP ViT + LLaVA-1.5 ``mlp`` projector, keys and tensor names
  as llama.cpp's clip.cpp reads them (docs: /work/shared/reference/llava-to-gguf.md §1-3):
  the tower cut to ``layers - 1`` blocks with ``clip.vision.feature_layer = [layers - 1]``
  (ViT-L/14-336: 23 of 24), no ``post_ln``, F16 2-D/4-D weights, F32 norms and biases.
- ``llm-<size>-f16.gguf``: a LLaMA decoder (TinyLlama-1.1B or LLaMA-7B shape) with a
  SentencePiece-style ``tokenizer.ggml.*`` vocabulary (``<unk> <s> </s>``, the 256 byte
  pieces, then unique normal pieces) that llama.cpp loads and tokenizes with.
- with ``--source``: ``llava-v1.5-<size>/`` and ``clip-vit-large-patch14-336-<size>/``, a
  LLaVA-1.5 checkpoint in the real layout (``torch.save`` shards ``pytorch_model-0000k-of-
  0000n.bin`` + index, projector in the last shard, rotary ``inv_freq`` buffers,
  ``tokenizer.model``) and its separate two-tower CLIP folder (``pytorch_model.bin``,
  config, preprocessor and CLIP BPE tokenizer files), for the conversion benchmark.
  Tensor names and shapes come from transformers' own models built on the meta device.

Sizes (``SIZES``): ``full`` is CLIP ViT-L/14-336 + TinyLlama-1.1B, ``7b`` swaps in LLaMA-7B
(GPU machines), ``small`` keeps the full widths with fewer layers (CLIP 4 -> 3 blocks, LLM
4 layers) so one run fits a busy 2-core machine, ``tiny`` is for the smoke test.

Weights are slices of one pool of N(0, 0.02) float16 values (and 1 + that for norm weights)
at a per-tensor random offset: random enough for timing, and each tensor is produced only
when the streaming writer asks for it, so memory stays at about one tensor (one shard for
the torch source).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace

import numpy as np

import gguflite
from gguflite import GGMLType, ValueType

U32, I32, F32 = ValueType.UINT32, ValueType.INT32, ValueType.FLOAT32
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class ClipShape:
    width: int  # hidden size
    heads: int
    layers: int  # of the source tower; the mmproj keeps layers - 1 (hidden_states[-2])
    ff: int
    image: int = 336
    patch: int = 14
    eps: float = 1e-5

    @property
    def n_pos(self) -> int:
        return (self.image // self.patch) ** 2 + 1


@dataclass(frozen=True)
class LlmShape:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int = 32000
    n_ctx: int = 2048
    eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


VIT_L_336 = ClipShape(1024, 16, 24, 4096)
TINYLLAMA = LlmShape(2048, 22, 32, 4, 5632, n_ctx=2048)
LLAMA_7B = LlmShape(4096, 32, 32, 32, 11008, n_ctx=4096)

SIZES: dict[str, tuple[ClipShape, LlmShape]] = {
    "tiny": (ClipShape(64, 2, 3, 128), LlmShape(64, 2, 4, 2, 128, n_vocab=512, n_ctx=512)),
    "small": (replace(VIT_L_336, layers=4), replace(TINYLLAMA, n_layer=4)),
    "full": (VIT_L_336, TINYLLAMA),
    "7b": (VIT_L_336, LLAMA_7B),
}


class WeightPool:
    """Random float16 values, handed out as slices at random offsets (no per-tensor RNG cost)."""

    def __init__(self, seed: int = 0, size: int = 1 << 22):
        rng = np.random.default_rng(seed)
        self._pool = (rng.standard_normal(size, dtype=np.float32) * 0.02).astype(np.float16)
        self._pool2 = np.concatenate([self._pool, self._pool])  # any window of `size` is contiguous
        self._rng = rng

    def f16(self, shape, *, around: float = 0.0) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        size = self._pool.size
        start = int(self._rng.integers(size))
        if n <= size:
            flat = self._pool2[start:start + n].copy()
        else:
            flat = np.resize(self._pool2[start:start + size], n)
        if around:
            flat += np.float16(around)
        return flat.reshape(shape)

    def f32(self, shape, *, around: float = 0.0) -> np.ndarray:
        return self.f16(shape, around=around).astype(np.float32)


# --------------------------------------------------------------------------- GGUF files


def spm_vocab(n_vocab: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A LLaMA-style SentencePiece vocabulary: <unk> <s> </s>, <0x00>..<0xFF>, then unique
    normal pieces ("▁a", "a", "▁b", ..., then two letters, ...) with decreasing scores."""
    if n_vocab < 3 + 256 + 26:
        raise ValueError(f"n_vocab {n_vocab} is too small for a byte-fallback SentencePiece vocabulary")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = list(letters)
    while len(tokens) < n_vocab:
        for w in words:
            for piece in ("\u2581" + w, w):
                if len(tokens) < n_vocab:
                    tokens.append(piece)
                    types.append(1)
        words = [w + c for w in words for c in letters]
    scores = np.zeros(n_vocab, dtype=np.float32)
    scores[259:] = -np.arange(n_vocab - 259, dtype=np.float32)
    return tokens, scores, np.array(types, dtype=np.int32)


def write_mmproj(path: str, clip: ClipShape, n_embd_llm: int, *, seed: int = 0, name: str = "bench") -> str:
    """The LLaVA-1.5 mmproj GGUF: tower cut to ``clip.layers - 1`` blocks + mlp projector."""
    pool = WeightPool(seed)
    d, n_blk = clip.width, clip.layers - 1
    w = gguflite.GGUFWriter(path)
    for k, v, t in [("general.architecture", "clip", None), ("general.type", "mmproj", None),
                    ("general.name", name, None), ("general.description", "random weights for benchmarks", None),
                    ("general.file_type", 1, U32), ("clip.has_vision_encoder", True, None),
                    ("clip.projector_type", "mlp", None),
                    ("clip.vision.image_size", clip.image, U32), ("clip.vision.patch_size", clip.patch, U32),
                    ("clip.vision.embedding_length", d, U32), ("clip.vision.feed_forward_length", clip.ff, U32),
                    ("clip.vision.projection_dim", n_embd_llm, U32),
                    ("clip.vision.attention.head_count", clip.heads, U32),
                    ("clip.vision.attention.layer_norm_epsilon", clip.eps, F32),
                    ("clip.vision.block_count", n_blk, U32),
                    ("clip.vision.feature_layer", np.array([n_blk], dtype=np.int32), None),
                    ("clip.vision.image_mean", np.array(CLIP_MEAN, dtype=np.float32), None),
                    ("clip.vision.image_std", np.array(CLIP_STD, dtype=np.float32), None),
                    ("clip.use_gelu", False, None), ("clip.use_silu", False, None)]:
        w.add(k, v, type=t)
    F16, F32T = GGMLType.F16, GGMLType.F32

    def mat(name, shape):  # numpy-order shape
        w.add_tensor(name, shape, F16, lambda: pool.f16(shape))

    def vec(name, n, around=0.0):
        w.add_tensor(name, (n,), F32T, lambda: pool.f32((n,), around=around))

    vec("v.class_embd", d)
    w.add_tensor("v.patch_embd.weight", (d, 3, clip.patch, clip.patch), F16,
                 lambda: pool.f16((d, 3, clip.patch, clip.patch)))
    mat("v.position_embd.weight", (clip.n_pos, d))
    vec("v.pre_ln.weight", d, 1.0)
    vec("v.pre_ln.bias", d)
    for i in range(n_blk):
        p = f"v.blk.{i}."
        for a in ("attn_q", "attn_k", "attn_v", "attn_out"):
            mat(p + a + ".weight", (d, d))
            vec(p + a + ".bias", d)
        for ln in ("ln1", "ln2"):
            vec(p + ln + ".weight", d, 1.0)
            vec(p + ln + ".bias", d)
        mat(p + "ffn_up.weight", (clip.ff, d))  # fc1
        vec(p + "ffn_up.bias", clip.ff)
        mat(p + "ffn_down.weight", (d, clip.ff))  # fc2
        vec(p + "ffn_down.bias", d)
    mat("mm.0.weight", (n_embd_llm, d))
    vec("mm.0.bias", n_embd_llm)
    mat("mm.2.weight", (n_embd_llm, n_embd_llm))
    vec("mm.2.bias", n_embd_llm)
    return w.write()


def write_llm(path: str, s: LlmShape, *, seed: int = 1, name: str = "bench") -> str:
    """A LLaMA GGUF (F16 matrices, F32 norms) with a SentencePiece vocabulary."""
    pool = WeightPool(seed)
    tokens, scores, types = spm_vocab(s.n_vocab)
    kv = s.n_head_kv * s.head_dim
    w = gguflite.GGUFWriter(path)
    for k, v, t in [("general.architecture", "llama", None), ("general.name", name, None),
                    ("general.file_type", 1, U32),
                    ("llama.context_length", s.n_ctx, U32), ("llama.embedding_length", s.n_embd, U32),
                    ("llama.block_count", s.n_layer, U32), ("llama.feed_forward_length", s.n_ff, U32),
                    ("llama.attention.head_count", s.n_head, U32), ("llama.attention.head_count_kv", s.n_head_kv, U32),
                    ("llama.rope.dimension_count", s.head_dim, U32), ("llama.rope.freq_base", s.rope_base, F32),
                    ("llama.attention.layer_norm_rms_epsilon", s.eps, F32), ("llama.vocab_size", s.n_vocab, U32),
                    ("tokenizer.ggml.model", "llama", None), ("tokenizer.ggml.pre", "default", None),
                    ("tokenizer.ggml.tokens", tokens, None), ("tokenizer.ggml.scores", scores, None),
                    ("tokenizer.ggml.token_type", types, None),
                    ("tokenizer.ggml.unknown_token_id", 0, U32), ("tokenizer.ggml.bos_token_id", 1, U32),
                    ("tokenizer.ggml.eos_token_id", 2, U32),
                    ("tokenizer.ggml.add_bos_token", True, None), ("tokenizer.ggml.add_eos_token", False, None)]:
        w.add(k, v, type=t)

    def mat(name, shape):
        w.add_tensor(name, shape, GGMLType.F16, lambda: pool.f16(shape))

    def norm(name):
        w.add_tensor(name, (s.n_embd,), GGMLType.F32, lambda: pool.f32((s.n_embd,), around=1.0))

    mat("token_embd.weight", (s.n_vocab, s.n_embd))
    for i in range(s.n_layer):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight")
        mat(p + "attn_q.weight", (s.n_embd, s.n_embd))
        mat(p + "attn_k.weight", (kv, s.n_embd))
        mat(p + "attn_v.weight", (kv, s.n_embd))
        mat(p + "attn_output.weight", (s.n_embd, s.n_embd))
        norm(p + "ffn_norm.weight")
        mat(p + "ffn_gate.weight", (s.n_ff, s.n_embd))
        mat(p + "ffn_up.weight", (s.n_ff, s.n_embd))
        mat(p + "ffn_down.weight", (s.n_embd, s.n_ff))
    norm("output_norm.weight")
    mat("output.weight", (s.n_vocab, s.n_embd))
    return w.write()


# --------------------------------------------------------------------------- torch source


def _meta_state(model_cls, config) -> dict:
    """{name: shape} of a transformers model, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        model = model_cls(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _torch_f16(pool: WeightPool, shape, around=0.0):
    import torch

    return torch.from_numpy(pool.f16(shape, around=around))


def _save_atomic(obj, path: str) -> None:
    import torch

    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_clip_source(folder: str, clip: ClipShape, *, seed: int = 2) -> str:
    """openai/clip-vit-large-patch14-336's layout: two-tower CLIPModel in pytorch_model.bin
    (the text tower at its real ViT-L size, 12 x 768, except for tiny towers), config,
    preprocessor, BPE tokenizer."""
    import torch
    import transformers

    os.makedirs(folder, exist_ok=True)
    real = clip.width >= VIT_L_336.width  # the tiny size gets a tiny text tower too
    text = dict(hidden_size=768 if real else 32, intermediate_size=3072 if real else 64,
                num_hidden_layers=12 if real else 1, num_attention_heads=12 if real else 2,
                vocab_size=49408, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    vision = dict(hidden_size=clip.width, intermediate_size=clip.ff, num_hidden_layers=clip.layers,
                  num_attention_heads=clip.heads, image_size=clip.image, patch_size=clip.patch,
                  layer_norm_eps=clip.eps, hidden_act="quick_gelu", projection_dim=768)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)
    shapes = _meta_state(transformers.CLIPModel, cfg)
    pool = WeightPool(seed)
    sd = {}
    for k, shp in shapes.items():
        if k.endswith("position_ids"):
            sd[k] = torch.arange(shp[-1]).unsqueeze(0)
        elif k == "logit_scale":
            sd[k] = torch.tensor(4.6052)
        else:
            sd[k] = _torch_f16(pool, shp, around=1.0 if ("norm" in k and k.endswith("weight")) else 0.0)
    if "vision_model.embeddings.position_ids" not in sd:  # older checkpoints store the buffer
        sd["vision_model.embeddings.position_ids"] = torch.arange(clip.n_pos).unsqueeze(0)
    if "text_model.embeddings.position_ids" not in sd:
        sd["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    _save_atomic(sd, os.path.join(folder, "pytorch_model.bin"))
    del sd
    _write_json(os.path.join(folder, "config.json"), {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 768,
        "logit_scale_init_value": 2.6592, "torch_dtype": "float16",
        "text_config": dict(text, model_type="clip_text_model"),
        "vision_config": dict(vision, model_type="clip_vision_model")})
    _write_json(os.path.join(folder, "preprocessor_config.json"), {
        "crop_size": clip.image, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": clip.image})
    # a byte-level BPE tokenizer without merges: enough for CLIPProcessor.from_pretrained
    byte_chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    vocab = {c: i for i, c in enumerate(byte_chars + [c + "</w>" for c in byte_chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    _write_json(os.path.join(folder, "vocab.json"), vocab)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    _write_json(os.path.join(folder, "tokenizer_config.json"), {
        "tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 77})
    _write_json(os.path.join(folder, "special_tokens_map.json"), {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"})
    return folder


def write_llava_source(folder: str, s: LlmShape, clip: ClipShape, *, tower: str, seed: int = 3,
                       shard_bytes: int = 5 << 30) -> str:
    """liuhaotian/llava-v1.5-7b's layout: LlavaLlamaForCausalLM weights in ``torch.save``
    shards + index (at least 2, projector in the last), rotary inv_freq buffers,
    tokenizer.model (SentencePiece, ``s.n_vocab`` pieces), config with mm_* fields."""
    import torch
    import transformers

    from ggml_bind.tokenizer import build_model_proto

    os.makedirs(folder, exist_ok=True)
    cfg = transformers.LlamaConfig(vocab_size=s.n_vocab, hidden_size=s.n_embd, intermediate_size=s.n_ff,
                                   num_hidden_layers=s.n_layer, num_attention_heads=s.n_head,
                                   num_key_value_heads=s.n_head_kv, max_position_embeddings=s.n_ctx,
                                   rms_norm_eps=s.eps, rope_theta=s.rope_base, tie_word_embeddings=False)
    shapes = _meta_state(transformers.LlamaForCausalLM, cfg)
    shapes = {k: v for k, v in shapes.items() if "rotary_emb" not in k}
    for i in range(s.n_layer):  # transformers 4.31 saved these buffers; the real checkpoint has them
        shapes[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = (s.head_dim // 2,)
    proj = {"model.mm_projector.0.weight": (s.n_embd, clip.width), "model.mm_projector.0.bias": (s.n_embd,),
            "model.mm_projector.2.weight": (s.n_embd, s.n_embd), "model.mm_projector.2.bias": (s.n_embd,)}
    names = list(shapes)
    total = sum(int(np.prod(v)) * 2 for v in list(shapes.values()) + list(proj.values()))
    n_shards = max(2, -(-total // shard_bytes))
    per = -(-len(names) // n_shards)
    groups = [names[i * per:(i + 1) * per] for i in range(n_shards)]
    groups[-1] = groups[-1] + list(proj)
    shapes.update(proj)
    pool = WeightPool(seed)
    weight_map = {}
    for j, group in enumerate(groups):
        fname = f"pytorch_model-{j + 1:05d}-of-{n_shards:05d}.bin"
        sd = {}
        for k in group:
            if k.endswith("inv_freq"):
                hd = s.head_dim
                sd[k] = 1.0 / (s.rope_base ** (torch.arange(0, hd, 2).float() / hd))
            else:
                sd[k] = _torch_f16(pool, shapes[k], around=1.0 if k.endswith("norm.weight") else 0.0)
            weight_map[k] = fname
        _save_atomic(sd, os.path.join(folder, fname))
        del sd
    _write_json(os.path.join(folder, "pytorch_model.bin.index.json"),
                {"metadata": {"total_size": total}, "weight_map": weight_map})
    _write_json(os.path.join(folder, "config.json"), {
        "_name_or_path": "./checkpoints/vicuna-7b-v1-5", "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava", "vocab_size": s.n_vocab, "hidden_size": s.n_embd, "intermediate_size": s.n_ff,
        "num_hidden_layers": s.n_layer, "num_attention_heads": s.n_head, "num_key_value_heads": s.n_head_kv,
        "max_position_embeddings": s.n_ctx, "max_length": s.n_ctx, "rms_norm_eps": s.eps,
        "rope_theta": s.rope_base, "rope_scaling": None, "hidden_act": "silu", "initializer_range": 0.02,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "pretraining_tp": 1, "tie_word_embeddings": False,
        "torch_dtype": "float16", "transformers_version": "4.31.0", "use_cache": True,
        "freeze_mm_mlp_adapter": False, "image_aspect_ratio": "pad", "mm_hidden_size": clip.width,
        "mm_projector_type": "mlp2x_gelu", "mm_use_im_patch_token": False, "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2, "mm_vision_tower": os.path.abspath(tower),
        "tune_mm_mlp_adapter": False, "use_mm_proj": True})
    tokens, scores, types = spm_vocab(s.n_vocab)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(build_model_proto(tokens, scores, types, unk_id=0, bos_id=1, eos_id=2))
    _write_json(os.path.join(folder, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<unk>", "legacy": False, "model_max_length": s.n_ctx,
        "tokenizer_class": "LlamaTokenizer", "clean_up_tokenization_spaces": False})
    _write_json(os.path.join(folder, "special_tokens_map.json"),
                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    return folder


# --------------------------------------------------------------------------- entry points


@dataclass
class Models:
    size: str
    mmproj: str
    llm: str
    llava_dir: str | None = None
    clip_dir: str | None = None


def make(outdir: str, size: str = "small", *, gguf: bool = True, source: bool = False, reuse: bool = True) -> Models:
    """Write the ``size`` models into ``outdir`` (skipping files that exist when ``reuse``)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    clip, llm = SIZES[size]
    os.makedirs(outdir, exist_ok=True)
    m = Models(size, os.path.join(outdir, f"mmproj-{size}-f16.gguf"), os.path.join(outdir, f"llm-{size}-f16.gguf"))
    if gguf:
        if not (reuse and os.path.exists(m.mmproj)):
            write_mmproj(m.mmproj, clip, llm.n_embd, name=f"bench-{size}")
        if not (reuse and os.path.exists(m.llm)):
            write_llm(m.llm, llm, name=f"bench-{size}")
    if source:
        m.clip_dir = os.path.join(outdir, f"clip-vit-large-patch14-336-{size}")
        m.llava_dir = os.path.join(outdir, f"llava-v1.5-{size}")
        if not (reuse and os.path.exists(os.path.join(m.clip_dir, "config.json"))):
            write_clip_source(m.clip_dir, clip)
        if not (reuse and os.path.exists(os.path.join(m.llava_dir, "config.json"))):
            write_llava_source(m.llava_dir, llm, clip, tower=m.clip_dir)
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.make_models", description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--source", action="store_true", help="also write the LLaVA-1.5 torch checkpoint + CLIP folder")
    ap.add_argument("--no-gguf", action="store_true", help="skip the two GGUF files")
    ap.add_argument("--force", action="store_true", help="rewrite files that already exist")
    a = ap.parse_args(argv)
    m = make(a.outdir, a.size, gguf=not a.no_gguf, source=a.source, reuse=not a.force)
    for p in (m.mmproj, m.llm, m.llava_dir, m.clip_dir):
        if p and os.path.exists(p):
            print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
