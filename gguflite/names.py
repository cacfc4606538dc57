"""Tensor-name maps, one small explicit table per architecture (tinygrad's keymap, not
gguf-py's union table): Hugging Face name → GGUF name, ``None`` for a tensor that is known
and deliberately not written, and ``UnknownTensorName`` for anything else.

``{i}`` in a pattern stands for a block number and is carried over to the GGUF name.
Names here are *local*: the converter first strips the checkpoint's own prefix
(``language_model.``, ``model.vision_tower.vision_tower.``, ``model.mm_projector.``, ...).

The tables:

- ``LLAMA``: the decoder (LLaMA, Vicuna, Mistral in HF layout).  Q and K carry a
  ``permute`` tag: HF stores them rotated for its half-split RoPE, ggml's NORMAL RoPE wants
  interleaved pairs, so ``permute_qk`` undoes HF's permutation (with n_head for Q,
  n_head_kv for K).
- ``CLIP_VISION``: the CLIP ViT tower; the text tower, ``post_layernorm`` and
  ``visual_projection`` are dropped (LLaVA reads hidden_states[-2], before both).
- ``PROJECTORS["mlp" | "ldp" | "ldpv2"]``: the LLaVA 2-layer MLP, MobileVLM's LDP and LDPv2,
  named as llama.cpp's clip.cpp expects (``mm.0``/``mm.2``; ``mm.model.*``).
"""
from __future__ import annotations

import re

import numpy as np

from .errors import CheckpointError


class UnknownTensorName(CheckpointError):
    """A checkpoint tensor that no table knows: refused rather than guessed."""


LLAMA: dict[str, object] = {
    "model.embed_tokens.weight": "token_embd.weight",  # (n_vocab, n_embd)
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",  # (n_vocab, n_embd)
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": ("blk.{i}.attn_q.weight", "q"),  # (n_head*hd, n_embd)
    "model.layers.{i}.self_attn.k_proj.weight": ("blk.{i}.attn_k.weight", "k"),  # (n_kv*hd, n_embd)
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",  # (n_ff, n_embd)
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",  # (n_embd, n_ff)
    "model.layers.{i}.self_attn.rotary_emb.inv_freq": None,  # a buffer; ggml computes RoPE itself
}

CLIP_VISION: dict[str, object] = {
    "vision_model.embeddings.class_embedding": "v.class_embd",  # (d,)
    "vision_model.embeddings.patch_embedding.weight": "v.patch_embd.weight",  # (d, 3, p, p)
    "vision_model.embeddings.position_embedding.weight": "v.position_embd.weight",  # (n_pos, d)
    "vision_model.embeddings.position_ids": None,  # a buffer: 0..n_pos-1
    "vision_model.pre_layrnorm.weight": "v.pre_ln.weight",  # sic, CLIP's spelling
    "vision_model.pre_layrnorm.bias": "v.pre_ln.bias",
    "vision_model.encoder.layers.{i}.self_attn.q_proj.{wb}": "v.blk.{i}.attn_q.{wb}",
    "vision_model.encoder.layers.{i}.self_attn.k_proj.{wb}": "v.blk.{i}.attn_k.{wb}",
    "vision_model.encoder.layers.{i}.self_attn.v_proj.{wb}": "v.blk.{i}.attn_v.{wb}",
    "vision_model.encoder.layers.{i}.self_attn.out_proj.{wb}": "v.blk.{i}.attn_out.{wb}",
    "vision_model.encoder.layers.{i}.layer_norm1.{wb}": "v.blk.{i}.ln1.{wb}",
    "vision_model.encoder.layers.{i}.layer_norm2.{wb}": "v.blk.{i}.ln2.{wb}",
    "vision_model.encoder.layers.{i}.mlp.fc1.{wb}": "v.blk.{i}.ffn_up.{wb}",  # (d_ff, d)
    "vision_model.encoder.layers.{i}.mlp.fc2.{wb}": "v.blk.{i}.ffn_down.{wb}",  # (d, d_ff)
    # after the layer LLaVA reads: not written (clip.cpp would apply post_ln if present)
    "vision_model.post_layernorm.{wb}": None,
    "visual_projection.weight": None,
    # the text half of a two-tower CLIPModel folder
    "text_model.{any}": None,
    "text_projection.weight": None,
    "logit_scale": None,
}

PROJECTORS: dict[str, dict[str, object]] = {
    # LLaVA mlp2x_gelu: Linear(d_vis, n_embd), GELU, Linear(n_embd, n_embd)
    "mlp": {"0.{wb}": "mm.0.{wb}", "2.{wb}": "mm.2.{wb}"},
    # MobileVLM v1 LDPNetProjector: model.mlp = (Identity, Linear, GELU, Linear);
    # model.mb_block.{1,2} = torchvision InvertedResidual (dw conv, LN, SE fc1/fc2, pw conv, LN)
    "ldp": {
        "model.mlp.{i}.{wb}": "mm.model.mlp.{i}.{wb}",
        "model.mb_block.{i}.block.{j}.{k}.{wb}": "mm.model.mb_block.{i}.block.{j}.{k}.{wb}",
        "model.mb_block.{i}.block.{j}.fc{k}.{wb}": "mm.model.mb_block.{i}.block.{j}.fc{k}.{wb}",
    },
    # MobileVLM v2 LDPNetV2Projector: mlp.mlp = (Linear, GELU, Linear); peg.peg.0 = dw conv
    "ldpv2": {
        "mlp.mlp.{i}.{wb}": "mm.model.mlp.{i}.{wb}",
        "peg.peg.0.{wb}": "mm.model.peg.0.{wb}",
    },
}

# llava-hf names its two projector Linears linear_1/linear_2
HF_MLP_PROJECTOR: dict[str, object] = {"linear_1.{wb}": "mm.0.{wb}", "linear_2.{wb}": "mm.2.{wb}"}

_FIELDS = {"i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)", "k": r"(?P<k>\d+)", "wb": r"(?P<wb>weight|bias)", "any": r"(?P<any>.+)"}


def _compile(table: dict[str, object]):
    out = []
    for pattern, target in table.items():
        rx = re.escape(pattern)
        for field, sub in _FIELDS.items():
            rx = rx.replace(re.escape("{" + field + "}"), sub)
        if isinstance(target, tuple):
            out.append((re.compile(rx + r"\Z"), target[0], target[1]))
        else:
            out.append((re.compile(rx + r"\Z"), target, None))
    return out


_COMPILED: dict[int, list] = {}  # memo: id(table) -> compiled patterns (the tables are module constants)


def map_name(table: dict[str, object], name: str) -> tuple[str | None, str | None]:
    """``(gguf_name, permute)`` for a local checkpoint name; ``gguf_name`` is None for a
    known tensor that is not written; ``permute`` is "q", "k" or None.  Raises
    ``UnknownTensorName`` (with the name) when no pattern of ``table`` matches."""
    compiled = _COMPILED.setdefault(id(table), _compile(table))
    for rx, target, permute in compiled:
        m = rx.match(name)
        if m:
            if target is None:
                return None, None
            return target.format(**m.groupdict()), permute
    raise UnknownTensorName("tensor name not in the map", tensor=name)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo HF's RoPE permutation of a Q or K projection (weight ``(n_head*hd, n_in)`` or
    bias ``(n_head*hd,)``): within each head, rows [0..hd/2) and [hd/2..hd) are interleaved
    back into pairs.  Same as llama.cpp's converter (``reshape(n_head, 2, hd/2, ...)``,
    ``swapaxes(1, 2)``)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of even size")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
