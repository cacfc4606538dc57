"""LLaVA checkpoint folder → two GGUF files: the LLM (``general.architecture=llama``) and
the mmproj (``clip``: the CLIP tower + projector), as llama.cpp / libmtmd read them.

    llm_path, mmproj_path = convert_llava("llava-v1.5-7b", vision_tower="clip-vit-large-patch14-336",
                                          outdir="out", outtype="f16")

What happens, in order (nothing is written until everything has been checked):

1. ``Checkpoint`` opens the weights lazily (safetensors / restricted .bin, sharded or not);
   ``layouts.detect`` reads config.json and refuses unknown layouts.
2. Every source tensor is split into llm / vision / projector / newline and named through
   ``gguflite.names``; unknown names are errors; known ones llama.cpp does not use (the text
   tower, post-LN, blocks after the selected layer, RoPE buffers) are reported on stderr.
3. Shapes are checked against the configs (LLM and tower), and the projector's input/output
   widths against the tower width and the LLM's ``n_embd``.
4. The vision tower is cut to the layer LLaVA reads: ``hidden_states[select]`` (-2 → the
   first 23 of 24 blocks), written as ``clip.vision.block_count = 23`` and
   ``clip.vision.feature_layer = [23]``; ``post_layernorm``/``visual_projection`` dropped.
5. ``output.write_both`` streams both files one tensor at a time to hidden temp files in
   ``outdir``, re-opens them and compares every key, tensor and data CRC32, and only then
   renames both into place.  Any failure (or Ctrl-C) removes both: both outputs or neither.

Tensor types come from ``gguflite.quant.requantize.tensor_types``, the same rules
``gguflite requantize`` follows, so a q4_k_m/q8_0/q4_0 LLM has exactly the per-tensor types
llama.cpp's ``llama_model_quantize`` gives the f32 conversion (``output.weight`` Q6_K or
Q8_0, q4_k_m's Q6_K ``attn_v``/``ffn_down`` layers, the fallbacks for rows that are not
whole blocks).  What the converter adds, as explicit choices rather than rules of its own:

- tensors llama.cpp leaves unquantized (norms, biases, class/position embeddings,
  image_newline) are written F32, as llama.cpp's converter writes them;
- convolution kernels are F16 and never quantized (ggml's conv/im2col paths want F16
  kernels, as the legacy converter wrote);
- the mmproj is quantized with ``_mmproj_scheme(outtype)``: Q8_0 for any quantized outtype
  (the tower is small and its errors compound over hundreds of image tokens), under clip.cpp's
  rule (``clip=True``: 2-D weights);
- a tensor whose rows are not whole blocks of a legacy type (llama.cpp refuses the whole
  model: "Unsupported tensor size") is written F16 (``unfit_to_f16=True``).
"""
from __future__ import annotations

import os
import re
import sys

import numpy as np

from .. import names
from ..errors import CheckpointError, GGUFError
from ..quant.requantize import SCHEMES, Scheme, tensor_types
from ..types import GGML_QNT_VERSION, GGMLType, TYPE_TRAITS, ValueType
from .checkpoint import Checkpoint, read_json
from .layouts import Layout, detect, vision_local, vision_params
from .output import PlannedTensor, write_both
from .tokenizer import tokenizer_metadata

# outtype -> llama-quantize's scheme (its general.file_type and base type of the 2-D weights)
OUTTYPES: dict[str, Scheme] = {n: SCHEMES[n] for n in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m")}
U32, I32, F32, STR, BOOL = ValueType.UINT32, ValueType.INT32, ValueType.FLOAT32, ValueType.STRING, ValueType.BOOL


# --------------------------------------------------------------------------- public API


def convert_llava(model_dir, *, vision_tower=None, outdir=None, outtype: str = "f16",
                  projector: str = "auto", progress: bool = True) -> tuple[str, str]:
    """Convert the LLaVA checkpoint in ``model_dir``; returns ``(llm_path, mmproj_path)``,
    ``<outdir>/<name>-<outtype>.gguf`` and ``<outdir>/mmproj-<name>-<outtype>.gguf`` where
    ``<name>`` is the folder's name and ``outdir`` defaults to the current directory.
    ``vision_tower``: the CLIP folder for checkpoints that do not carry their tower
    (LLaVA-1.5, MobileVLM), or its config for those that do.  Raises ``CheckpointError``
    (source problems) or another ``GGUFError``; then no output file exists."""
    if outtype not in OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}")
    model_dir = os.path.abspath(os.fspath(model_dir))
    outdir = os.path.abspath(os.fspath(outdir) if outdir is not None else os.getcwd())
    name = os.path.basename(model_dir.rstrip(os.sep)) or "model"
    llm_path = os.path.join(outdir, f"{name}-{outtype}.gguf")
    mmproj_path = os.path.join(outdir, f"mmproj-{name}-{outtype}.gguf")

    opened = []
    try:
        ckpt = Checkpoint(model_dir)
        opened.append(ckpt)
        layout = detect(model_dir, ckpt.config, projector)
        parts = _split(layout, ckpt)
        tower_dir, tower_cfg = _tower(layout, parts, vision_tower, model_dir, opened)
        layout.vision = vision_params(layout, tower_cfg, tower_dir,
                                      {k: t.shape for k, t in parts["vision"].items()}, model_dir)
        dropped: list[str] = []
        llm_plan = _plan_llm(layout, parts["llm"], outtype, dropped)
        mm_plan = _plan_mmproj(layout, parts, outtype, dropped)
        for p in (llm_path, mmproj_path):
            if _same_file_in(p, [model_dir, tower_dir]):
                raise CheckpointError("output would be written inside a source folder", path=p)
        llm_meta = _llm_metadata(layout, name, outtype, model_dir)
        mm_meta = _mmproj_metadata(layout, name, outtype)
        os.makedirs(outdir, exist_ok=True)
        if progress and dropped:
            shown = ", ".join(dropped[:4]) + (", ..." if len(dropped) > 4 else "")
            print(f"not written ({len(dropped)} tensors llama.cpp does not use): {shown}", file=sys.stderr)
        write_both([(llm_path, llm_meta, llm_plan), (mmproj_path, mm_meta, mm_plan)], progress)
    except GGUFError as e:
        raise e.with_path(model_dir)  # name the checkpoint when the raiser knew no file
    finally:
        for c in opened:
            c.close()
    return llm_path, mmproj_path


# --------------------------------------------------------------------------- planning


def _split(layout: Layout, ckpt: Checkpoint) -> dict[str, dict]:
    parts: dict[str, dict] = {"llm": {}, "vision": {}, "projector": {}, "newline": {}}
    for src_name, t in ckpt.tensors.items():
        part, local = layout.split(src_name)
        parts[part][local] = t
    return parts


def _tower(layout: Layout, parts, vision_tower, model_dir, opened):
    """Find the vision tower: inside the checkpoint or in a separate CLIP folder."""
    hint = layout.tower_hint
    # mm_vision_tower is usually a hub name; a local folder (absolute, or relative to the
    # checkpoint) is used when nothing was passed
    hint_dir = os.path.join(model_dir, hint) if hint else None  # join keeps an absolute hint
    if vision_tower is not None:
        tower_dir = os.path.abspath(os.fspath(vision_tower))
    else:
        tower_dir = hint_dir if hint_dir and os.path.isfile(os.path.join(hint_dir, "config.json")) else None
    if parts["vision"]:  # the checkpoint carries its tower; a folder only supplies the config
        if tower_dir is None:
            return None, None
        return tower_dir, read_json(os.path.join(tower_dir, "config.json"))
    if layout.vision_config is not None and tower_dir is None:
        raise CheckpointError("config.json describes a vision tower but the checkpoint has no vision_tower.* tensors",
                              path=model_dir)
    if tower_dir is None:
        raise CheckpointError(f"the checkpoint has no vision tower and {hint!r} is not a local folder: "
                              "pass --vision-tower DIR (a CLIP ViT checkpoint folder)", path=model_dir)
    tower = Checkpoint(tower_dir)
    opened.append(tower)
    mt = tower.config.get("model_type")
    if mt not in ("clip", "clip_vision_model"):
        raise CheckpointError(f"vision tower is a {mt!r} model, expected a CLIP model",
                              path=os.path.join(tower_dir, "config.json"), key="model_type")
    for n, t in tower.tensors.items():
        parts["vision"][vision_local(n)] = t
    return tower_dir, tower.config


def _fail_shape(part: str, gname: str, src, want) -> CheckpointError:
    return CheckpointError(f"shape mismatch: {part} tensor has shape {tuple(src.shape)}, the config implies {tuple(want)}",
                           path=getattr(getattr(src, "_file", None), "path", None), tensor=src.name)


def _map_checked(table, local: str, t, expect: dict, dropped: list, part: str, outside: str):
    """``(gguf name, permute)`` of source tensor ``t`` after checking that it belongs to the
    model config.json describes and has the shape the config implies; ``(None, None)`` (and
    the name in ``dropped``) for tensors llama.cpp does not use."""
    gname, permute = names.map_name(table, local)
    if gname is None:
        dropped.append(t.name)
        return None, None
    if gname not in expect:
        raise CheckpointError(f"{gname} is outside {outside}", tensor=t.name)
    if tuple(t.shape) != expect[gname]:
        raise _fail_shape(part, gname, t, expect[gname])
    return gname, permute


def _plan_llm(layout: Layout, tensors: dict, outtype: str, dropped: list) -> list[PlannedTensor]:
    tp = layout.text
    q, kv = tp.n_head * tp.head_dim, tp.n_head_kv * tp.head_dim
    expect = {"token_embd.weight": (tp.n_vocab, tp.n_embd), "output_norm.weight": (tp.n_embd,),
              "output.weight": (tp.n_vocab, tp.n_embd)}
    per_layer = {"attn_norm.weight": (tp.n_embd,), "attn_q.weight": (q, tp.n_embd), "attn_k.weight": (kv, tp.n_embd),
                 "attn_v.weight": (kv, tp.n_embd), "attn_output.weight": (tp.n_embd, q),
                 "ffn_norm.weight": (tp.n_embd,), "ffn_gate.weight": (tp.n_ff, tp.n_embd),
                 "ffn_up.weight": (tp.n_ff, tp.n_embd), "ffn_down.weight": (tp.n_embd, tp.n_ff)}
    for i in range(tp.n_layer):
        expect.update({f"blk.{i}.{k}": v for k, v in per_layer.items()})
    plan = []
    for local, t in tensors.items():
        gname, permute = _map_checked(names.LLAMA, local, t, expect, dropped, "LLM",
                                      f"the {tp.n_layer}-layer model of config.json")
        if gname is None:
            continue
        heads = {"q": tp.n_head, "k": tp.n_head_kv}.get(permute)
        plan.append(PlannedTensor(gname, t, tuple(t.shape), GGMLType.F32, heads))
    missing = set(expect) - {p.name for p in plan} - {"output.weight"}
    if missing:
        raise CheckpointError(f"LLM tensors missing from the checkpoint: {sorted(missing)[:6]}")
    _assign_types(plan, OUTTYPES[outtype], n_layer=tp.n_layer, clip=False)
    return sorted(plan, key=lambda p: _order(p.name))


def _order(gname: str):
    m = re.match(r"(v\.)?blk\.(\d+)\.", gname)
    return (1, int(m.group(2)), gname) if m else (0 if not gname.startswith(("output", "mm.")) else 2, 0, gname)


def _assign_types(plan: list[PlannedTensor], scheme: Scheme, *, n_layer: int | None, clip: bool,
                  conv: frozenset = frozenset()):
    """Set each planned tensor's type: llama.cpp's (``tensor_types``, over the whole file so its
    layer counters and tied-embedding rule see every name), F32 where llama.cpp does not
    quantize, F16 for the convolution kernels named in ``conv``."""
    types = tensor_types([(p.name, p.shape) for p in plan if p.name not in conv], scheme,
                         n_layer=n_layer, clip=clip, unfit_to_f16=True)
    for p in plan:
        p.type = GGMLType.F16 if p.name in conv else types[p.name] or GGMLType.F32


def _mmproj_scheme(outtype: str) -> Scheme:
    """The mmproj's scheme: Q8_0 for any quantized outtype (the tower is small and sensitive:
    8 bits whatever the LLM gets), else the outtype itself."""
    scheme = OUTTYPES[outtype]
    return SCHEMES["q8_0"] if TYPE_TRAITS[scheme.base].quantized else scheme


def _plan_mmproj(layout: Layout, parts, outtype: str, dropped: list) -> list[PlannedTensor]:
    vp, n_embd = layout.vision, layout.text.n_embd
    keep = layout.feature_layer
    d, f = vp.hidden, vp.n_ff
    n_pos = (vp.image_size // vp.patch_size) ** 2 + 1
    expect = {"v.class_embd": (d,), "v.patch_embd.weight": (d, 3, vp.patch_size, vp.patch_size),
              "v.position_embd.weight": (n_pos, d), "v.pre_ln.weight": (d,), "v.pre_ln.bias": (d,)}
    per_layer = {"attn_q": (d, d), "attn_k": (d, d), "attn_v": (d, d), "attn_out": (d, d), "ln1": None, "ln2": None,
                 "ffn_up": (f, d), "ffn_down": (d, f)}
    for i in range(vp.n_layer):
        for k, w in per_layer.items():
            expect[f"v.blk.{i}.{k}.weight"] = w or (d,)
            expect[f"v.blk.{i}.{k}.bias"] = (w[0],) if w else (d,)
    plan, conv = [], set()
    for local, t in parts["vision"].items():
        gname, _ = _map_checked(names.CLIP_VISION, local, t, expect, dropped, "vision",
                                f"the {vp.n_layer}-layer tower of {vp.source}")
        if gname is None:
            continue
        m = re.match(r"v\.blk\.(\d+)\.", gname)
        if m and int(m.group(1)) >= keep:
            dropped.append(t.name)
            continue  # after hidden_states[select]: never run
        plan.append(PlannedTensor(gname, t, tuple(t.shape), GGMLType.F32))
        if len(t.shape) == 4:
            conv.add(gname)
    missing = {k for k in expect if not re.match(r"v\.blk\.(\d+)\.", k) or int(k.split(".")[2]) < keep}
    missing -= {p.name for p in plan}
    if missing:
        raise CheckpointError(f"vision tensors missing: {sorted(missing)[:6]}")

    table = layout.projector_table()
    proj = {}
    for local, t in parts["projector"].items():
        try:
            gname, _ = names.map_name(table, local)
        except names.UnknownTensorName:
            raise names.UnknownTensorName(f"not a {layout.projector} projector tensor (try --projector)",
                                          tensor=t.name) from None
        shape = tuple(t.shape)
        if len(shape) == 4:  # legacy layout: depthwise (d,1,3,3) -> (d,3,3); 1x1 convs -> 2-D
            shape = tuple(s for s in shape if s != 1) or (1,)
            if len(shape) > 1:
                conv.add(gname)
        proj[gname] = PlannedTensor(gname, t, shape, GGMLType.F32)
    _check_projector(layout, proj, d, n_embd)
    plan += proj.values()
    for t in parts["newline"].values():
        if tuple(t.shape) != (n_embd,):
            raise _fail_shape("image_newline", "v.image_newline", t, (n_embd,))
        plan.append(PlannedTensor("v.image_newline", t, (n_embd,), GGMLType.F32))
    _assign_types(plan, _mmproj_scheme(outtype), n_layer=None, clip=True, conv=frozenset(conv))
    return sorted(plan, key=lambda p: _order(p.name))


# first Linear (input width = tower width) and last tensor (output width = LLM n_embd)
_PROJECTOR_ENDS = {
    "mlp": ("mm.0.weight", "mm.2.weight", ["mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"]),
    "ldp": ("mm.model.mlp.1.weight", "mm.model.mb_block.2.block.2.1.bias",
            ["mm.model.mlp.1.weight", "mm.model.mlp.3.weight"]
            + [f"mm.model.mb_block.{i}.block.{s}" for i in (1, 2)
               for s in ("0.0.weight", "0.1.weight", "0.1.bias", "1.fc1.weight", "1.fc1.bias", "1.fc2.weight",
                         "1.fc2.bias", "2.0.weight", "2.1.weight", "2.1.bias")]),
    "ldpv2": ("mm.model.mlp.0.weight", "mm.model.peg.0.bias",
              ["mm.model.mlp.0.weight", "mm.model.mlp.2.weight", "mm.model.peg.0.weight", "mm.model.peg.0.bias"]),
}


def _check_projector(layout: Layout, proj: dict, d_vis: int, n_embd: int):
    first, last, required = _PROJECTOR_ENDS[layout.projector]
    missing = [n for n in required if n not in proj]
    if missing:
        raise CheckpointError(f"{layout.projector} projector tensors missing: {missing[:6]} "
                              "(llama.cpp's llava graph needs them)")
    if proj[first].shape[-1] != d_vis:
        raise CheckpointError(f"width mismatch: the projector takes {proj[first].shape[-1]}-wide features but the "
                              f"vision tower is {d_vis} wide", tensor=proj[first].source.name)
    if proj[last].shape[0] != n_embd:
        raise CheckpointError(f"width mismatch: the projector outputs {proj[last].shape[0]}-wide embeddings but the "
                              f"LLM's embedding_length is {n_embd}", tensor=proj[last].source.name)


# --------------------------------------------------------------------------- metadata


def _llm_metadata(layout: Layout, name: str, outtype: str, model_dir: str):
    tp = layout.text
    meta = [("general.architecture", "llama", STR), ("general.type", "model", STR), ("general.name", name, STR),
            ("general.file_type", int(OUTTYPES[outtype].file_type), U32)]
    if TYPE_TRAITS[OUTTYPES[outtype].base].quantized:
        meta.append(("general.quantization_version", GGML_QNT_VERSION, U32))
    meta += [("llama.context_length", tp.n_ctx, U32), ("llama.embedding_length", tp.n_embd, U32),
             ("llama.block_count", tp.n_layer, U32), ("llama.feed_forward_length", tp.n_ff, U32),
             ("llama.attention.head_count", tp.n_head, U32), ("llama.attention.head_count_kv", tp.n_head_kv, U32),
             ("llama.attention.layer_norm_rms_epsilon", tp.rms_eps, F32),
             ("llama.rope.dimension_count", tp.head_dim, U32), ("llama.rope.freq_base", tp.rope_theta, F32),
             ("llama.vocab_size", tp.n_vocab, U32)]
    if tp.head_dim * tp.n_head != tp.n_embd:
        meta += [("llama.attention.key_length", tp.head_dim, U32), ("llama.attention.value_length", tp.head_dim, U32)]
    meta += tokenizer_metadata(model_dir, tp.n_vocab, layout.pad_token_id)
    return meta


def _mmproj_metadata(layout: Layout, name: str, outtype: str):
    vp = layout.vision
    keep = layout.feature_layer
    meta = [("general.architecture", "clip", STR), ("general.type", "mmproj", STR), ("general.name", name, STR),
            ("general.description", f"image encoder for {layout.architecture} ({vp.source})", STR),
            ("general.file_type", int(OUTTYPES[outtype].file_type), U32),
            ("clip.has_vision_encoder", True, BOOL), ("clip.has_text_encoder", False, BOOL),
            ("clip.projector_type", layout.projector, STR),
            ("clip.use_gelu", vp.hidden_act == "gelu", BOOL), ("clip.use_silu", False, BOOL),
            ("clip.vision.image_size", vp.image_size, U32), ("clip.vision.patch_size", vp.patch_size, U32),
            ("clip.vision.embedding_length", vp.hidden, U32), ("clip.vision.feed_forward_length", vp.n_ff, U32),
            ("clip.vision.projection_dim", layout.text.n_embd, U32),
            ("clip.vision.attention.head_count", vp.n_head, U32),
            ("clip.vision.attention.layer_norm_epsilon", vp.eps, F32),
            ("clip.vision.block_count", keep, U32),
            ("clip.vision.feature_layer", np.array([keep], np.int32), (ValueType.ARRAY, I32)),
            ("clip.vision.image_mean", np.array(vp.image_mean, np.float32), (ValueType.ARRAY, F32)),
            ("clip.vision.image_std", np.array(vp.image_std, np.float32), (ValueType.ARRAY, F32))]
    if layout.grid_pinpoints:
        flat = np.array([x for p in layout.grid_pinpoints for x in p], np.int32)
        meta.append(("clip.vision.image_grid_pinpoints", flat, (ValueType.ARRAY, I32)))
    if layout.patch_merge_type:
        meta.append(("clip.vision.mm_patch_merge_type", layout.patch_merge_type, STR))
    if layout.image_aspect_ratio:
        meta.append(("clip.vision.image_aspect_ratio", layout.image_aspect_ratio, STR))
    return meta


def _same_file_in(path: str, folders) -> bool:
    path = os.path.realpath(path)
    for d in folders:
        if d and os.path.dirname(path) == os.path.realpath(d):
            return True
    return False
