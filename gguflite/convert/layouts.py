"""Which LLaVA checkpoint is this?  ``detect(folder, config, ...) -> Layout``.

The layout is read from config.json (``architectures[0]``, then ``model_type``):

| architectures[0]                    | kind          | family                               |
|-------------------------------------|---------------|--------------------------------------|
| LlavaLlamaForCausalLM               | llava         | LLaVA-1.5, LLaVA-1.6 vicuna          |
| LlavaMistralForCausalLM             | llava         | LLaVA-1.6 mistral, BakLLaVA-1        |
| MobileLlamaForCausalLM              | mobilevlm     | MobileVLM v1 (ldpnet), v2 (ldpnetv2) |
| LlavaForConditionalGeneration       | llava-hf      | llava-hf LLaVA-1.5                   |
| LlavaNextForConditionalGeneration   | llava-next-hf | llava-hf LLaVA-1.6                   |

Anything else is refused by name.  A ``Layout`` says how each source tensor name splits
into a part (``llm``, ``vision``, ``projector``, ``newline``) plus a local name for the
tables in ``gguflite.names``, and carries the hyperparameters: the LLM's (``TextParams``),
the vision tower's (``VisionParams``), the projector type, the feature layer and the
image preprocessing settings.

Preprocessing is written as LLaVA's own ``image_aspect_ratio`` vocabulary (LLaVA's
``mm_utils.process_images``): ``pad`` (expand to a square, then the CLIP processor),
``anyres`` (LLaVA-1.6 tiles), anything else the plain CLIP processor (resize, centre crop);
LLaVA's training default and our name for that is ``square``.  The original layouts pass the
config's value on, ``square`` when it has none (``process_images`` then falls through to the
plain processor); llava-hf 1.5's CLIPImageProcessor never pads: ``square``; llava-hf 1.6:
``anyres``.  Grid pinpoints are (width, height) pairs, as LLaVA's ``select_best_resolution``
and llama.cpp's clip.cpp read them; transformers' LlavaNext config lists (height, width)
pairs, so llava-next-hf pinpoints are swapped.

Hyperparameters missing from a config take the defaults of the transformers config class
the checkpoint was written with (llava-hf's ``text_config`` omits e.g. ``hidden_size``
because it equals ``LlamaConfig``'s default); ``DEFAULTS`` lists them.  The original
LLaVA-1.6 checkpoints carry their (fine-tuned) CLIP tower but not its config: the tower's
config then comes from ``--vision-tower``, from ``mm_vision_tower`` if it is a local folder,
or, for the OpenAI CLIP towers those checkpoints name, from the weights' shapes and the
OpenAI CLIP conventions (head size 64, eps 1e-5, quick-GELU, the CLIP mean/std).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import CheckpointError
from .. import names
from .checkpoint import read_json

# Defaults of the transformers config classes (LlamaConfig, MistralConfig, CLIPVisionConfig)
DEFAULTS = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, max_position_embeddings=2048,
                  rms_norm_eps=1e-6, rope_theta=10000.0, head_dim=None),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096 * 32,
                    rms_norm_eps=1e-6, rope_theta=10000.0, head_dim=None),
    "clip_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, image_size=224, patch_size=32, layer_norm_eps=1e-5,
                              hidden_act="quick_gelu", projection_dim=512),
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

ARCHITECTURES = {
    "LlavaLlamaForCausalLM": ("llava", "llama"),
    "LlavaMistralForCausalLM": ("llava", "mistral"),
    "MobileLlamaForCausalLM": ("mobilevlm", "llama"),
    "LlavaForConditionalGeneration": ("llava-hf", None),
    "LlavaNextForConditionalGeneration": ("llava-next-hf", None),
}
MODEL_TYPES = {"llava": "LlavaLlamaForCausalLM", "llava_llama": "LlavaLlamaForCausalLM",
               "llava_mistral": "LlavaMistralForCausalLM", "mobilevlm": "MobileLlamaForCausalLM",
               "llava_next": "LlavaNextForConditionalGeneration"}
_CLIP_VISION_TOP = ("embeddings", "encoder", "pre_layrnorm", "post_layernorm")
PROJECTOR_TYPES = {"mlp2x_gelu": "mlp", "ldpnet": "ldp", "ldpnetv2": "ldpv2"}


@dataclass
class TextParams:
    """The decoder's hyperparameters (LLaMA and Mistral alike)."""

    model_type: str  # "llama" | "mistral"
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    rms_eps: float
    rope_theta: float
    head_dim: int


@dataclass
class VisionParams:
    """The CLIP ViT tower's hyperparameters, and where they came from."""

    hidden: int
    n_ff: int
    n_layer: int
    n_head: int
    image_size: int
    patch_size: int
    eps: float
    hidden_act: str
    image_mean: list
    image_std: list
    source: str


@dataclass
class Layout:
    kind: str
    architecture: str
    text: TextParams
    projector: str  # "mlp" | "ldp" | "ldpv2"
    select_layer: int  # as in the config: -2 = hidden_states[-2]
    vision_config: dict | None  # the tower's config when the checkpoint has one
    tower_hint: str | None  # mm_vision_tower: a hub name or a local folder
    grid_pinpoints: list | None = None  # [[width, height], ...] for LLaVA-1.6 anyres
    patch_merge_type: str | None = None
    image_aspect_ratio: str | None = None  # "pad" | "anyres" | "square" (plain CLIP processor)
    pad_token_id: int | None = None
    vision: VisionParams | None = field(default=None)

    # ------------------------------------------------------------------ names
    def split(self, name: str) -> tuple[str, str]:
        """``(part, local_name)`` of a source tensor name."""
        if self.kind in ("llava", "mobilevlm"):
            rules = [("model.mm_projector.", "projector", ""),
                     ("model.vision_tower.vision_tower.", "vision", ""),
                     ("model.image_newline", "newline", "")]
        else:
            rules = [("multi_modal_projector.", "projector", ""), ("model.multi_modal_projector.", "projector", ""),
                     ("vision_tower.", "vision", ""), ("model.vision_tower.", "vision", ""),
                     ("image_newline", "newline", ""), ("model.image_newline", "newline", ""),
                     ("language_model.", "llm", ""), ("model.language_model.", "llm", "model."),
                     ("lm_head.", "llm", "lm_head.")]
        for prefix, part, repl in rules:
            if part == "newline" and name == prefix:
                return part, ""
            if part != "newline" and name.startswith(prefix):
                local = repl + name[len(prefix):]
                return part, vision_local(local) if part == "vision" else local
        if self.kind in ("llava", "mobilevlm"):
            return "llm", name
        raise names.UnknownTensorName(f"tensor name not expected in a {self.architecture} checkpoint", tensor=name)

    def projector_table(self) -> dict:
        if self.kind in ("llava-hf", "llava-next-hf") and self.projector == "mlp":
            return names.HF_MLP_PROJECTOR
        return names.PROJECTORS[self.projector]

    @property
    def feature_layer(self) -> int:
        """Number of CLIP blocks LLaVA runs: hidden_states[select] is the output of block
        ``n_layer + select`` (select < 0) or ``select`` (hidden_states[0] = embeddings)."""
        n = self.vision.n_layer
        layer = n + self.select_layer + 1 if self.select_layer < 0 else self.select_layer
        if not 1 <= layer <= n:
            raise CheckpointError(f"vision select layer {self.select_layer} is outside a {n}-layer tower",
                                  key="mm_vision_select_layer")
        return layer


# transformers' LlavaNextConfig fills in these (height, width) pairs when a config has none.
HF_DEFAULT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


def vision_local(name: str) -> str:
    """A CLIP tower tensor name with the ``vision_model.`` level that transformers < 5 saved
    (transformers >= 5 saves CLIPVisionModel weights without it)."""
    return "vision_model." + name if name.split(".")[0] in _CLIP_VISION_TOP else name


def _int(cfg, key, where, default=None):
    v = cfg.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise CheckpointError(f"expected an integer, got {v!r}", path=where, key=key)
    return v


def _text_params(cfg: dict, model_type: str, where: str) -> TextParams:
    d = {**DEFAULTS[model_type], **{k: v for k, v in cfg.items() if v is not None}}
    n_head = _int(d, "num_attention_heads", where)
    n_embd = _int(d, "hidden_size", where)
    n_kv = d.get("num_key_value_heads") or n_head
    head_dim = d.get("head_dim") or n_embd // n_head
    return TextParams(model_type, _int(d, "vocab_size", where), n_embd, _int(d, "intermediate_size", where),
                      _int(d, "num_hidden_layers", where), n_head, int(n_kv),
                      _int(d, "max_position_embeddings", where), float(d["rms_norm_eps"]),
                      float(d.get("rope_theta", 10000.0)), int(head_dim))


def detect(folder: str, config: dict, projector: str = "auto") -> Layout:
    """The layout of the checkpoint whose config.json is ``config``; refuses unknown ones."""
    where = os.path.join(folder, "config.json")
    archs = config.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else MODEL_TYPES.get(config.get("model_type"))
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"unsupported checkpoint layout {arch or config.get('model_type')!r}; supported: "
            + ", ".join(ARCHITECTURES), path=where, key="architectures")
    kind, llm_type = ARCHITECTURES[arch]
    if kind in ("llava", "mobilevlm"):
        text = _text_params(config, llm_type, where)
        mm_type = config.get("mm_projector_type", "linear")
        auto = PROJECTOR_TYPES.get(mm_type)
        select = config.get("mm_vision_select_layer", -2)
        feature = config.get("mm_vision_select_feature", "patch")
        vision_cfg = None
        hint = config.get("mm_vision_tower")
        pinpoints = config.get("image_grid_pinpoints")
        merge = config.get("mm_patch_merge_type")
        aspect = config.get("image_aspect_ratio") or "square"
        pad = config.get("pad_token_id")
    else:
        tc = config.get("text_config") or {}
        llm_type = tc.get("model_type", "llama")
        if llm_type not in ("llama", "mistral"):
            raise CheckpointError(f"unsupported language model {llm_type!r}", path=where, key="text_config.model_type")
        text = _text_params(tc, llm_type, where)
        if "vocab_size" in config and "vocab_size" not in tc:
            text.n_vocab = _int(config, "vocab_size", where)
        mm_type = "mlp2x_gelu" if config.get("projector_hidden_act", "gelu") == "gelu" else config["projector_hidden_act"]
        auto = PROJECTOR_TYPES.get(mm_type)
        select = config.get("vision_feature_layer", -2)
        feature = {"default": "patch", "full": "cls_patch"}.get(config.get("vision_feature_select_strategy", "default"))
        vision_cfg = config.get("vision_config") or {}
        if vision_cfg.get("model_type", "clip_vision_model") != "clip_vision_model":
            raise CheckpointError(f"unsupported vision tower {vision_cfg.get('model_type')!r}",
                                  path=where, key="vision_config.model_type")
        hint = None
        pinpoints = None
        if kind == "llava-next-hf":
            pinpoints = config.get("image_grid_pinpoints")
            if pinpoints is None:  # LlavaNextConfig's documented default, (height, width) pairs
                pinpoints = [list(p) for p in HF_DEFAULT_PINPOINTS]
        merge = "spatial_unpad" if kind == "llava-next-hf" else None
        aspect = "anyres" if kind == "llava-next-hf" else "square"
        pad = config.get("pad_token_id", tc.get("pad_token_id"))
    if projector == "auto":
        if auto is None:
            raise CheckpointError(f"unsupported projector {mm_type!r} (llama.cpp's llava graph needs "
                                  "mlp2x_gelu, ldpnet or ldpnetv2)", path=where, key="mm_projector_type")
        projector = auto
    elif projector not in names.PROJECTORS:
        raise CheckpointError(f"unknown projector type {projector!r}; known: {', '.join(names.PROJECTORS)}")
    if isinstance(select, bool) or not isinstance(select, int):
        raise CheckpointError(f"only a single integer select layer is supported, got {select!r}",
                              path=where, key="mm_vision_select_layer")
    if feature != "patch":
        raise CheckpointError(f"vision select feature {feature!r} is not supported (llama.cpp drops CLS)",
                              path=where, key="mm_vision_select_feature")
    if pinpoints is not None and not (isinstance(pinpoints, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) and x > 0 for x in p) for p in pinpoints)):
        raise CheckpointError(f"malformed image_grid_pinpoints {pinpoints!r}", path=where, key="image_grid_pinpoints")
    if aspect == "anyres" and not pinpoints:
        raise CheckpointError("image_aspect_ratio is 'anyres' but the config has no image_grid_pinpoints "
                              "(LLaVA needs them to pick a tile grid)", path=where, key="image_grid_pinpoints")
    if pinpoints is not None and kind == "llava-next-hf":
        pinpoints = [[w, h] for h, w in pinpoints]  # transformers' (height, width) -> LLaVA's (width, height)
    if not isinstance(aspect, str):
        raise CheckpointError(f"image_aspect_ratio must be a string, got {aspect!r}", path=where,
                              key="image_aspect_ratio")
    return Layout(kind, arch, text, projector, select, vision_cfg, hint, pinpoints, merge, aspect,
                  pad if isinstance(pad, int) and not isinstance(pad, bool) else None)


def vision_params(layout: Layout, tower_config: dict | None, tower_dir: str | None,
                  shapes: dict[str, tuple], model_dir: str | None = None) -> VisionParams:
    """The tower's hyperparameters from (in order) the checkpoint's own vision_config, the
    tower folder's config, or the weight shapes + OpenAI CLIP conventions.  ``shapes``:
    local vision name → shape, used to fill and to cross-check.  image_mean/std come from
    preprocessor_config.json in the tower folder, else in ``model_dir`` (llava-hf), else
    the OpenAI CLIP values."""
    src = None
    if layout.vision_config is not None:
        cfg, src = layout.vision_config, "vision_config in config.json"
    elif tower_config is not None:
        cfg = tower_config.get("vision_config", tower_config) if tower_config.get("model_type") == "clip" else tower_config
        src = os.path.join(tower_dir, "config.json")
    else:
        cfg = None
    mean, std = CLIP_MEAN, CLIP_STD
    for folder in (tower_dir, model_dir):
        pp = os.path.join(folder, "preprocessor_config.json") if folder else None
        if pp and os.path.exists(pp):
            ppc = read_json(pp)
            mean, std = ppc.get("image_mean", mean), ppc.get("image_std", std)
            break
    layers = {int(n.split(".")[3]) for n in shapes if n.startswith("vision_model.encoder.layers.")}
    n_layer_w = max(layers) + 1 if layers else 0
    try:
        hidden_w = shapes["vision_model.embeddings.class_embedding"][0]
        _, _, patch_w, _ = shapes["vision_model.embeddings.patch_embedding.weight"]
        n_pos_w = shapes["vision_model.embeddings.position_embedding.weight"][0]
        n_ff_w = shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0]
    except (KeyError, ValueError):
        raise CheckpointError("the vision tower's embeddings or first layer are missing or misshapen") from None
    if cfg is None:
        hint = layout.tower_hint or ""
        if not hint.startswith("openai/clip-vit-"):
            raise CheckpointError(f"the checkpoint has a vision tower but no config for it ({hint!r} is not a "
                                  "local folder nor an OpenAI CLIP tower): pass --vision-tower DIR")
        if hidden_w % 64:
            raise CheckpointError(f"vision width {hidden_w} is not a multiple of CLIP's head size 64: pass --vision-tower DIR")
        side = int(round((n_pos_w - 1) ** 0.5))
        cfg = dict(hidden_size=hidden_w, intermediate_size=n_ff_w, num_hidden_layers=n_layer_w,
                   num_attention_heads=hidden_w // 64, image_size=side * patch_w, patch_size=patch_w,
                   layer_norm_eps=1e-5, hidden_act="quick_gelu")
        src = f"weights of {hint} (OpenAI CLIP conventions)"
    d = {**DEFAULTS["clip_vision_model"], **cfg}
    vp = VisionParams(_int(d, "hidden_size", src), _int(d, "intermediate_size", src), _int(d, "num_hidden_layers", src),
                      _int(d, "num_attention_heads", src), _int(d, "image_size", src), _int(d, "patch_size", src),
                      float(d["layer_norm_eps"]), str(d["hidden_act"]), list(mean), list(std), src)
    n_pos = (vp.image_size // vp.patch_size) ** 2 + 1
    for what, want, got in (("hidden_size", vp.hidden, hidden_w), ("patch_size", vp.patch_size, patch_w),
                            ("positions", n_pos, n_pos_w), ("intermediate_size", vp.n_ff, n_ff_w),
                            ("num_hidden_layers", vp.n_layer, n_layer_w)):
        if want != got:
            raise CheckpointError(f"shape mismatch: {src} says {what}={want} but the vision weights have {got}",
                                  key=what)
    if vp.hidden % vp.n_head:
        raise CheckpointError(f"hidden_size {vp.hidden} is not divisible by {vp.n_head} heads", path=src)
    if len(vp.image_mean) != 3 or len(vp.image_std) != 3:
        raise CheckpointError("image_mean/image_std must have 3 values", path=tower_dir)
    return vp
