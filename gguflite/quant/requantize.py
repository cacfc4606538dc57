"""Requantize a GGUF file to another file type, choosing types per tensor as llama.cpp does.

    requantize("model-f16.gguf", "model-q4_k_m.gguf", "q4_k_m")

This follows ``llama_model_quantize_impl`` / ``llama_tensor_get_type`` (llama.cpp's
src/llama-quant.cpp as built with ggml 0.25.3) without an importance matrix, single-threaded:

Which tensors are quantized: names ending in ``weight`` with at least 2 dimensions (trailing
size-1 ggml dims not counted), except norms (``_norm.weight``), ``ffn_gate_inp``, position
embeddings, ``token_types`` and the small Mamba/RWKV/T5/Gemma-3n tensors llama.cpp also skips.
Everything else (1-D norms, biases) is copied unchanged, so F32 norms stay F32.  For a CLIP
projector file (``general.architecture == "clip"``) the rule is clip.cpp's: exactly 2-D
``*weight`` tensors, here without the position/patch/class embeddings, which are added to
activations rather than multiplied and stay in their source type.

The type of a quantized tensor, for the file types offered here (K-quant rules apply when the
base type is a quantized one):

- ``output.weight`` (or ``token_embd.weight`` when there is no ``output.weight``: tied
  embeddings) → Q6_K unless the base is Q8_0; Q8_0 when its rows are not whole base blocks.
- ``attn_v.weight``: Q4_K_M/Q5_K_M → Q6_K where ``use_more_bits(i, n)``
  (``i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2``; ``i`` counts attn_v tensors, ``n`` counts
  attn_v/attn_qkv/attn_kv_b tensors); Q4_K_S → Q5_K for the first 4.
- ``ffn_down``: Q4_K_M/Q5_K_M → Q6_K where ``use_more_bits(i, n_layer)``; Q4_K_S → Q5_K for
  ``i < n_layer/8`` (``n_layer`` = ``{arch}.block_count``).
- ``attn_qkv.weight``: Q4_K_M → Q5_K, Q5_K_M → Q6_K.
- Rows that are not whole blocks of the chosen type fall back: Q4_K → Q5_0, Q5_K → Q5_1,
  Q6_K → Q8_0, then F16 if still not whole blocks; a legacy base type that does not fit is
  an error (llama.cpp: "Unsupported tensor size"), or F16 where the caller asks for that.

These rules live only in ``tensor_types``; the converters (``convert_llava(outtype=...)``) ask
it too, so a converted q4_k_m file has the types ``llama-quantize`` would give the f32 one.

The counters ``i`` advance in llama.cpp's tensor order (its ``weight_name_comparer``: by the
``blk.N.`` layer number, non-layer tensors first, then by name), whatever the file order.  Not reproduced: rules
for architectures or sizes we cannot see here (Falcon, 70B ``attn_v``, 8-expert MoE), the
IQ/Q2_K/Q3_K file types, importance matrices, and ``--pure`` / per-tensor overrides.  The
output keeps the source's tensor order and byte order (llama.cpp writes sorted, little-endian).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..reader import open as gguf_open
from ..types import GGML_QNT_VERSION, TYPE_TRAITS, FileType, GGMLType, ValueType
from ..writer import GGUFWriter
from . import DEQUANTIZABLE, dequantize, quantize

G = GGMLType


@dataclass(frozen=True)
class Scheme:
    """A ``--type`` choice: its llama.cpp name, base type and ``general.file_type`` value."""

    name: str
    base: GGMLType
    file_type: FileType


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("q4_k_m", G.Q4_K, FileType.MOSTLY_Q4_K_M),
        Scheme("q5_k_m", G.Q5_K, FileType.MOSTLY_Q5_K_M),
        Scheme("q4_k_s", G.Q4_K, FileType.MOSTLY_Q4_K_S),
        Scheme("q5_k_s", G.Q5_K, FileType.MOSTLY_Q5_K_S),
        Scheme("q6_k", G.Q6_K, FileType.MOSTLY_Q6_K),
        Scheme("q8_0", G.Q8_0, FileType.MOSTLY_Q8_0),
        Scheme("q4_0", G.Q4_0, FileType.MOSTLY_Q4_0),
        Scheme("q4_1", G.Q4_1, FileType.MOSTLY_Q4_1),
        Scheme("q5_0", G.Q5_0, FileType.MOSTLY_Q5_0),
        Scheme("q5_1", G.Q5_1, FileType.MOSTLY_Q5_1),
        Scheme("f16", G.F16, FileType.MOSTLY_F16),
        Scheme("bf16", G.BF16, FileType.MOSTLY_BF16),
        Scheme("f32", G.F32, FileType.ALL_F32),
    ]
}

# Substrings of 2-D+ weights llama.cpp leaves alone (llama-quant.cpp, "quantize &= ...").
_SKIP = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
         "ssm_conv1d.weight", "shortconv.conv.weight", "attn_rel_b.weight", "time_mix_first.weight",
         "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight",
         "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
         "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
         "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight")
_SKIP_EXACT = ("position_embd.weight", "token_types.weight")
# Rows that are not whole blocks of the chosen type (llama.cpp's "incompatible tensor").
_FALLBACK = {G.Q4_K: G.Q5_0, G.Q5_K: G.Q5_1, G.Q6_K: G.Q8_0}


def _llama_order(name: str) -> tuple[int, str]:
    """llama.cpp's ``weight_name_comparer``: ``sscanf(name, "blk.%d.")`` layer (-1 if none), then name."""
    m = re.match(r"blk\.\s*([+-]?\d+)", name)
    return (int(m.group(1)) if m else -1, name)


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the layers that get the extra bits of the _M mixtures."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def n_dims(shape: tuple[int, ...]) -> int:
    """``ggml_n_dims``: dimensions not counting trailing ggml (leading numpy) sizes of 1."""
    k = len(shape)
    while k > 1 and shape[len(shape) - k] == 1:
        k -= 1
    return max(k, 1)


def should_quantize(name: str, shape: tuple[int, ...], clip: bool = False) -> bool:
    if not name.endswith("weight"):
        return False
    if clip:  # clip.cpp's rule (2-D weights), keeping the embeddings that are added, not multiplied
        return n_dims(shape) == 2 and not any(s in name for s in ("position_embd", "patch_embd", "class_embd"))
    return n_dims(shape) >= 2 and not any(s in name for s in _SKIP) and name not in _SKIP_EXACT


def tensor_types(tensors: list[tuple[str, tuple[int, ...]]], scheme: Scheme, *, n_layer: int | None = None,
                 clip: bool = False, unfit_to_f16: bool = False) -> dict[str, GGMLType | None]:
    """llama.cpp's type for each ``(name, numpy shape)`` row under ``scheme``; None where llama.cpp
    does not quantize the tensor (it keeps whatever type it has: norms, biases, embeddings).

    This is the one copy of the rules: ``requantize`` (through ``plan``) and the converters
    (``convert_llava(outtype=...)``) both ask it.  The rows must be the whole model: the
    ``attn_v``/``ffn_down`` counters and the tied-embedding rule look at every name.
    ``n_layer``: the model's block count (``{arch}.block_count``); by default the number of
    ``ffn_down`` tensors.  ``clip``: clip.cpp's rule for an mmproj (see ``should_quantize``).
    ``unfit_to_f16``: what to do with a tensor whose rows are not whole blocks of a legacy type
    (Q4_0, Q8_0, ...), which has no K-quant fallback: False (llama.cpp's llama_model_quantize)
    raises ValueError ("Unsupported tensor size"); True writes it F16 instead, so a converter
    can finish a file that llama.cpp would refuse to quantize at all.  Either way every tensor
    llama.cpp can quantize gets llama.cpp's type.
    """
    names = sorted((t[0] for t in tensors), key=_llama_order)
    shapes = {t[0]: tuple(t[1]) for t in tensors}
    has_output = "output.weight" in shapes
    n_wv = sum(any(k in n for k in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight")) for n in names)
    n_down = n_layer if n_layer is not None else sum("ffn_down" in n for n in names)
    rules = TYPE_TRAITS[scheme.base].quantized
    i_v = i_down = 0
    out: dict[str, GGMLType | None] = {}
    for name in names:
        shape = shapes[name]
        if not should_quantize(name, shape, clip):
            out[name] = None
            continue
        nx = shape[-1]
        t = scheme.base
        if rules:
            if name == "output.weight" or (not has_output and name == "token_embd.weight"):
                if nx % TYPE_TRAITS[t].block_size:
                    t = G.Q8_0
                elif t != G.Q8_0:
                    t = G.Q6_K
            elif "attn_v.weight" in name:
                if scheme.name in ("q4_k_m", "q5_k_m") and use_more_bits(i_v, n_wv):
                    t = G.Q6_K
                elif scheme.name == "q4_k_s" and i_v < 4:
                    t = G.Q5_K
                i_v += 1
            elif "ffn_down" in name:
                if scheme.name in ("q4_k_m", "q5_k_m") and use_more_bits(i_down, n_down):
                    t = G.Q6_K
                elif scheme.name == "q4_k_s" and i_down < n_down // 8:
                    t = G.Q5_K
                i_down += 1
            elif "attn_qkv.weight" in name:
                t = {"q4_k_m": G.Q5_K, "q5_k_m": G.Q6_K}.get(scheme.name, t)
        if nx % TYPE_TRAITS[t].block_size:
            if rules and t in _FALLBACK:
                t = _FALLBACK[t]
                if nx % TYPE_TRAITS[t].block_size:
                    t = G.F16
            elif unfit_to_f16:
                t = G.F16
            else:
                raise ValueError(f"tensor {name!r}: rows of {nx} are not whole {t.name} blocks")
        out[name] = t
    return {t[0]: out[t[0]] for t in tensors}  # the caller's order


def plan(tensors: list[tuple[str, tuple[int, ...], int]], scheme: Scheme, *,
         n_layer: int | None = None, clip: bool = False) -> dict[str, GGMLType | None]:
    """Target type per tensor (None: copied unchanged) for ``(name, numpy shape, type)`` rows:
    ``tensor_types``, with None also where the tensor already has its target type.
    Raises ValueError for a tensor no type can hold.
    """
    types = tensor_types([(t[0], t[1]) for t in tensors], scheme, n_layer=n_layer, clip=clip)
    return {name: None if types[name] == src_type else types[name] for name, _, src_type in tensors}


def requantize(src: str, dst: str, type_name: str, *, allow_requantize: bool = False,
               progress: Callable[[int, int], None] | None = None) -> dict[str, GGMLType | None]:
    """Write ``dst``: ``src`` with its weights quantized per ``SCHEMES[type_name]``.

    Metadata is copied with ``general.file_type`` and ``general.quantization_version`` set
    (split keys dropped), in the source's byte order; ``dst`` appears atomically or not at
    all.  Already-quantized source weights are refused unless ``allow_requantize`` (as
    ``llama-quantize --allow-requantize``).  ``progress(done_bytes, total_bytes)`` is called
    after each tensor.  Returns the plan: target type per tensor, None where copied.
    """
    try:
        scheme = SCHEMES[type_name.lower()]
    except KeyError:
        raise ValueError(f"unknown type {type_name!r}; choose from {', '.join(SCHEMES)}") from None
    with gguf_open(src) as f:
        infos = list(f.tensors.values())
        arch = f.metadata.get("general.architecture")
        n_layer = f.metadata.get(f"{arch}.block_count") if isinstance(arch, str) else None
        targets = plan([(t.name, t.shape, t.type) for t in infos], scheme,
                       n_layer=int(n_layer) if n_layer is not None else None, clip=arch == "clip")
        for t in infos:
            if targets[t.name] is None:
                continue
            if t.type not in DEQUANTIZABLE:
                raise ValueError(f"{src}: tensor {t.name!r} is {t.type_name}, which gguflite cannot dequantize")
            if TYPE_TRAITS[t.type].quantized and not allow_requantize:
                raise ValueError(f"{src}: tensor {t.name!r} is already {t.type_name}; "
                                 "requantizing loses quality (allow it with --allow-requantize)")
        w = GGUFWriter(dst, endian=f.endian)  # alignment: the copied general.alignment, else 32
        for key, fld in f.fields.items():
            if key not in ("general.file_type", "general.quantization_version") and not key.startswith("split."):
                w.add_field(fld)
        w.add("general.file_type", int(scheme.file_type), type=ValueType.UINT32)
        w.add("general.quantization_version", GGML_QNT_VERSION, type=ValueType.UINT32)
        for info in infos:
            target = targets[info.name]
            if target is None:
                w.add_tensor_from(info)
            else:
                w.add_tensor(info.name, info.shape, target, _converter(info, target, f.endian))
        w.write(progress=progress)
    return targets


def _converter(info, target: GGMLType, endian: str):
    """The writer's source callable, run when the writer reaches this tensor: dequantize
    it, quantize it (one tensor in memory at a time)."""

    def convert():
        x = dequantize(info.raw, info.type, info.shape, endian=endian)
        return quantize(x, target, endian=endian).reshape(-1)

    return convert
