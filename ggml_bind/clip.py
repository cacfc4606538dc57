"""The LLaVA image encoder on ggml: CLIP ViT + projector, read from an mmproj GGUF file.

Per 336x336 tile (one graph, built once and recomputed for every tile and image):

    pixels (1, 3, S, S) --conv_2d (patch embedding)--> (P*P, D) patches
    x = concat(class_embd, patches)          CLS FIRST, then the patches (as CLIP does;
                                             llama.cpp appends CLS last, #25814)
    x += position_embd[0 .. P*P]             (get_rows with positions 0..P*P)
    x = pre_ln(x)
    for the first L blocks:                  L = max(clip.vision.feature_layer), else every
        x += attn(ln1(x)); x += mlp(ln2(x))  stored block (hidden_states[L], no post-LN)
    features = x[1:]                          drop the CLS row -> (P*P, D)
    projector: mlp  mm.2(gelu(mm.0(f)))       gelu is erf-GELU, as nn.GELU in LLaVA
               ldp  MobileVLM LDPNet          -> (P/2)^2 tokens
               ldpv2 MobileVLM LDPNetV2       -> (P/2)^2 tokens

Anyres (LLaVA-1.6): every tile goes through the same graph; :meth:`ClipEncoder.encode`
then lays the projected tiles out as LLaVA does (base image first, the tile grid unpadded,
``v.image_newline`` after each row) with numpy.

Weights are used in the type the file stores (F32, F16, BF16, Q8_0, Q4_0, Q4_K, ...);
activations are F32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops
from .errors import GGMLError
from .preprocess import CLIP_MEAN, CLIP_STD, ImageConfig, PreparedImage, anyres_layout

PROJECTORS = ("mlp", "ldp", "ldpv2")


class MmprojError(GGMLError, ValueError):
    """An mmproj file that this encoder cannot run (missing keys/tensors, bad shapes)."""


@dataclass(frozen=True)
class VisionParams:
    image_size: int
    patch_size: int
    n_embd: int          # D, the tower width
    n_head: int
    n_ff: int
    n_layer: int         # blocks stored in the file
    n_run: int           # blocks run: hidden_states[n_run]
    eps: float
    act: str             # "quick_gelu" | "gelu"
    projector: str
    n_out: int           # width of the projected tokens (the LLM's n_embd)
    image: ImageConfig

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_tile(self) -> int:
        p = self.patches_per_side
        return p * p if self.projector == "mlp" else ((p + 1) // 2) ** 2


def _meta(meta, key, path, kind=int, default=None):
    if key not in meta:
        if default is not None:
            return default
        raise MmprojError(f"{path}: missing key {key!r}")
    v = meta[key]
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise MmprojError(f"{path}: key {key!r} has value {v!r}, expected {kind.__name__}") from None


def vision_params(meta, tensors, path="mmproj", image_mode: str | None = None) -> VisionParams:
    """Hyperparameters from mmproj metadata (``clip.*``), checked against the tensor shapes.
    ``tensors``: name -> numpy-order shape.  ``image_mode`` overrides the preprocessing."""
    if not meta.get("clip.has_vision_encoder", True):
        raise MmprojError(f"{path}: clip.has_vision_encoder is false")
    proj = meta.get("clip.projector_type", meta.get("clip.vision.projector_type"))
    if proj not in PROJECTORS:
        raise MmprojError(f"{path}: projector type {proj!r} is not supported (known: {', '.join(PROJECTORS)})")
    k = "clip.vision."
    size = _meta(meta, k + "image_size", path)
    patch = _meta(meta, k + "patch_size", path)
    d = _meta(meta, k + "embedding_length", path)
    n_head = _meta(meta, k + "attention.head_count", path)
    n_ff = _meta(meta, k + "feed_forward_length", path)
    n_layer = _meta(meta, k + "block_count", path)
    eps = _meta(meta, k + "attention.layer_norm_epsilon", path, float, 1e-5)
    if size <= 0 or patch <= 0 or size % patch:
        raise MmprojError(f"{path}: image_size {size} is not a multiple of patch_size {patch}")
    if n_head <= 0 or d % n_head:
        raise MmprojError(f"{path}: embedding_length {d} is not a multiple of head_count {n_head}")
    stored = sum(1 for n in tensors if n.startswith("v.blk.") and n.endswith(".attn_q.weight"))
    if stored < n_layer:
        raise MmprojError(f"{path}: block_count is {n_layer} but only {stored} blocks are stored")
    feature = meta.get(k + "feature_layer")
    if feature is not None and len(feature):
        n_run = int(max(int(x) for x in feature))
        if not 1 <= n_run <= n_layer:
            raise MmprojError(f"{path}: feature_layer {list(feature)} outside 1..{n_layer}")
    else:
        # legacy files without feature_layer already dropped the unused last block
        # (LLaVA reads hidden_states[-2]); run them all (llama.cpp runs one fewer, #25817)
        n_run = n_layer
    act = "gelu" if meta.get("clip.use_gelu", False) else "quick_gelu"
    if meta.get("clip.use_silu", False):
        raise MmprojError(f"{path}: clip.use_silu towers are not supported")
    mean = tuple(float(x) for x in meta.get(k + "image_mean", CLIP_MEAN))
    std = tuple(float(x) for x in meta.get(k + "image_std", CLIP_STD))
    pins = meta.get(k + "image_grid_pinpoints")
    pinpoints = ()
    if pins is not None and len(pins):
        pins = [int(x) for x in pins]
        if len(pins) % 2:
            raise MmprojError(f"{path}: image_grid_pinpoints has an odd number of values")
        pinpoints = tuple((pins[i], pins[i + 1]) for i in range(0, len(pins), 2))  # (width, height)
    if image_mode is None:
        aspect = str(meta.get(k + "image_aspect_ratio", "pad"))
        image_mode = "anyres" if pinpoints or aspect.startswith("anyres") else "pad" if aspect == "pad" else "crop"
    if proj != "mlp" and image_mode == "anyres":
        raise MmprojError(f"{path}: anyres is only defined for the mlp projector, not {proj}")
    out_name = {"mlp": "mm.2.weight", "ldp": "mm.model.mlp.3.weight", "ldpv2": "mm.model.mlp.2.weight"}[proj]
    if out_name not in tensors:
        raise MmprojError(f"{path}: projector tensor {out_name!r} is missing")
    try:
        image = ImageConfig(size, patch, mean, std, image_mode, pinpoints)
    except ValueError as e:
        raise MmprojError(f"{path}: {e}") from None
    return VisionParams(size, patch, d, n_head, n_ff, n_layer, n_run, eps, act, proj,
                        int(tensors[out_name][0]), image)


class ClipEncoder:
    """The image encoder of one mmproj file on one backend.

    Args:
        path: the mmproj GGUF file.
        backend: a :class:`~ggml_bind.backend.Backend` (weights go to its memory).
        sched: the :class:`~ggml_bind.backend.Scheduler` that runs the graph (default: a new
            one over ``backend``).
        image_mode: "pad", "crop" or "anyres" to override what the file says.
        flash_attn: None = fused attention (K and V in F16, F32 accumulation) when the backend
            runs it, as libmtmd's auto mode does; True/False to force.
    """

    def __init__(self, path, backend, sched=None, image_mode: str | None = None, flash_attn: bool | None = None):
        import gguflite

        from .backend import Scheduler
        from .graph import Graph
        from .weights import load_weights

        self.path = str(path)
        with gguflite.open(path) as f:
            arch = f.metadata.get("general.architecture")
            if arch not in (None, "clip"):
                raise MmprojError(f"{path}: general.architecture is {arch!r}, not an mmproj ('clip') file")
            self.params = vision_params(f.metadata, {n: t.shape for n, t in f.tensors.items()}, self.path, image_mode)
            self.newline = None
            if "v.image_newline" in f.tensors:
                self.newline = np.array(f.tensors["v.image_newline"].data, dtype=np.float32).reshape(-1)
            n_run = self.params.n_run

            def needed(name: str) -> bool:  # blocks past the feature layer and post_ln are never run
                if name.startswith("v.blk."):
                    return int(name.split(".")[2]) < n_run
                return not name.startswith("v.post_ln")

            self.weights = load_weights(f, backend, select=needed)
        self.backend = backend
        self.sched = sched if sched is not None else Scheduler([backend])
        self._ffn = self._ffn_names()
        self._check_shapes()
        self.flash_attn = self._probe_flash_attn() if flash_attn is None else bool(flash_attn)
        self._make_constants()
        p = self.params
        n_nodes = 64 * p.n_run + 512
        self.graph = Graph(self.sched, self._build, max_nodes=n_nodes)
        self._positions = np.arange(p.patches_per_side ** 2 + 1, dtype=np.int32)

    # ------------------------------------------------------------------ checks
    def _w(self, name: str):
        try:
            return self.weights[name]
        except KeyError:
            raise MmprojError(f"{self.path}: tensor {name!r} is missing", tensor=name) from None

    def _ffn_names(self) -> tuple:
        """(fc1, fc2) tensor stems: ``ffn_up``/``ffn_down``, or swapped in files of llama.cpp's
        legacy converter, which named fc1 ``ffn_down`` (recognised, as clip.cpp does, by shape)."""
        p = self.params
        down = self.weights.get("v.blk.0.ffn_down.weight")
        if down is not None and tuple(down.shape) == (p.n_ff, p.n_embd) and p.n_ff != p.n_embd:
            return "ffn_down", "ffn_up"
        return "ffn_up", "ffn_down"

    def _check_shapes(self) -> None:
        p = self.params
        n_pos = p.patches_per_side ** 2 + 1
        want = {"v.patch_embd.weight": (p.n_embd, 3, p.patch_size, p.patch_size),
                "v.class_embd": (p.n_embd,), "v.position_embd.weight": (n_pos, p.n_embd)}
        for i in range(p.n_run):
            b = f"v.blk.{i}."
            for n in ("attn_q", "attn_k", "attn_v", "attn_out"):
                want[b + n + ".weight"] = (p.n_embd, p.n_embd)
            want[b + self._ffn[0] + ".weight"] = (p.n_ff, p.n_embd)
            want[b + self._ffn[1] + ".weight"] = (p.n_embd, p.n_ff)
        for name, shape in want.items():
            got = self._w(name).shape
            if tuple(got) != shape:
                raise MmprojError(f"{self.path}: tensor {name!r} has shape {got}, expected {shape}", tensor=name)
        if p.projector == "mlp" and self._w("mm.0.weight").shape[1] != p.n_embd:
            raise MmprojError(f"{self.path}: projector input width {self._w('mm.0.weight').shape[1]} "
                              f"is not the tower width {p.n_embd}", tensor="mm.0.weight")
        if p.image.mode == "anyres" and (self.newline is None or self.newline.shape != (p.n_out,)):
            raise MmprojError(f"{self.path}: anyres needs v.image_newline of width {p.n_out}", tensor="v.image_newline")

    # ------------------------------------------------------------------ graph
    def _probe_flash_attn(self) -> bool:
        """Whether the backend runs flash_attn_ext on this tower's attention shapes."""
        from .tensor import Context

        p = self.params
        T, dh = p.patches_per_side ** 2 + 1, p.n_embd // p.n_head
        with Context(n_tensors=8) as ctx:
            q = ctx.new_tensor("f32", (p.n_head, T, dh))
            k = ctx.new_tensor("f16", (p.n_head, T, dh))
            v = ctx.new_tensor("f16", (p.n_head, T, dh))
            return bool(self.backend.supports(ops.flash_attn_ext(ctx, q, k, v, None, 1.0)))

    def _f32(self, ctx, t):
        return t if t.type == ops.F32 else ops.cast(ctx, t, "f32")

    def _linear(self, ctx, x, name: str, bias: bool = True):
        y = ops.mul_mat(ctx, self._w(name + ".weight"), x)
        if bias and (name + ".bias") in self.weights:
            y = ops.add(ctx, y, self._f32(ctx, self.weights[name + ".bias"]))
        return y

    def _layer_norm(self, ctx, x, name: str, eps: float):
        x = ops.norm(ctx, x, eps)
        x = ops.mul(ctx, x, self._f32(ctx, self._w(name + ".weight")))
        return ops.add(ctx, x, self._f32(ctx, self._w(name + ".bias")))

    def _build(self, ctx):
        p = self.params
        S, P, D, H = p.image_size, p.patches_per_side, p.n_embd, p.n_head
        T, dh = P * P + 1, p.n_embd // p.n_head
        pixels = ctx.input("pixels", "f32", (1, 3, S, S))
        positions = ctx.input("positions", "i32", (T,))

        x = ops.conv_2d(ctx, self._w("v.patch_embd.weight"), pixels, stride=p.patch_size)   # (1, D, P, P)
        x = ops.cont(ctx, ops.transpose(ctx, ops.reshape(ctx, x, (D, P * P))))                # (P*P, D)
        if "v.patch_embd.bias" in self.weights:
            x = ops.add(ctx, x, self._f32(ctx, self.weights["v.patch_embd.bias"]))
        cls = ops.reshape(ctx, self._f32(ctx, self._w("v.class_embd")), (1, D))
        x = ops.concat(ctx, cls, x, 0)                                                       # (T, D), CLS first
        x = ops.add(ctx, x, ops.get_rows(ctx, self._w("v.position_embd.weight"), positions))
        x = self._layer_norm(ctx, x, "v.pre_ln", p.eps)

        scale = 1.0 / float(np.sqrt(dh))
        for i in range(p.n_run):
            b = f"v.blk.{i}."
            h = self._layer_norm(ctx, x, b + "ln1", p.eps)
            q = ops.reshape(ctx, self._linear(ctx, h, b + "attn_q"), (T, H, dh))
            k = ops.reshape(ctx, self._linear(ctx, h, b + "attn_k"), (T, H, dh))
            v = ops.reshape(ctx, self._linear(ctx, h, b + "attn_v"), (T, H, dh))
            q = ops.permute(ctx, q, (1, 0, 2))                                  # (H, T, dh)
            k = ops.permute(ctx, k, (1, 0, 2))
            if self.flash_attn:
                k16 = ops.cast(ctx, k, "f16")                                   # (H, T, dh)
                v16 = ops.cast(ctx, ops.permute(ctx, v, (1, 0, 2)), "f16")      # (H, T, dh)
                a = ops.reshape(ctx, ops.flash_attn_ext(ctx, q, k16, v16, None, scale), (T, D))
            else:
                vt = ops.cont(ctx, ops.permute(ctx, v, (1, 2, 0)))              # (H, dh, T)
                kq = ops.soft_max_ext(ctx, ops.mul_mat(ctx, k, q), None, scale)  # (H, Tq, Tk)
                a = ops.mul_mat(ctx, vt, kq)                                    # (H, T, dh)
                a = ops.cont(ctx, ops.permute(ctx, a, (1, 0, 2)), (T, D))
            x = ops.add(ctx, x, self._linear(ctx, a, b + "attn_out"))
            h = self._layer_norm(ctx, x, b + "ln2", p.eps)
            h = self._linear(ctx, h, b + self._ffn[0])
            h = ops.gelu_erf(ctx, h) if p.act == "gelu" else ops.gelu_quick(ctx, h)
            x = ops.add(ctx, x, self._linear(ctx, h, b + self._ffn[1]))

        row = D * 4
        feats = ops.view(ctx, x, (T - 1, D), offset=row)                        # drop CLS
        feats = ops.cont(ctx, feats)
        if p.projector == "mlp":
            y = self._linear(ctx, ops.gelu_erf(ctx, self._linear(ctx, feats, "mm.0")), "mm.2")
        elif p.projector == "ldp":
            y = self._ldp(ctx, feats, P)
        else:
            y = self._ldpv2(ctx, feats, P)
        return {"features": feats, "embd": y}


    # ------------------------------------------------------------------ MobileVLM projectors
    # Spatial ops on a P x P token grid (tokens row-major, y*P + x) are written as products
    # with constant 0/1 (or averaging) matrices, kept in their own backend buffer:
    #   dw{G}_s{s}: (9*Mo, G*G) rows (offset o, output p) pick input (y*s+dy-1, x*s+dx-1)
    #   pool2:      (N/4, N) 2x2 average (AdaptiveAvgPool2d to P/2 x P/2)
    #   mean{G}:    (1, G*G) global average (squeeze-and-excitation)

    def _make_constants(self) -> None:
        from .tensor import Context

        self.consts = None
        p = self.params
        if p.projector == "mlp":
            return
        P = p.patches_per_side
        if P % 2:
            raise MmprojError(f"{self.path}: the {p.projector} projector needs an even patch grid, got {P}x{P}")
        Q = (P + 2 - 3) // 2 + 1  # grid after the stride-2 block
        if p.projector == "ldp":
            mats = {f"dw{P}_s1": _dw_shifts(P, 1), f"dw{P}_s2": _dw_shifts(P, 2),
                    f"mean{P}": np.full((1, P * P), 1.0 / (P * P), np.float32),
                    f"mean{Q}": np.full((1, Q * Q), 1.0 / (Q * Q), np.float32)}
        else:
            mats = {"pool2": _pool2(P), f"dw{P // 2}_s1": _dw_shifts(P // 2, 1)}
        self.consts = Context(n_tensors=len(mats) + 1)
        tensors = {k: self.consts.new_tensor("f32", m.shape, k) for k, m in mats.items()}
        self._const_buffer = self.consts.allocate(self.backend, usage="weights")
        for k, m in mats.items():
            tensors[k].set(m)
        self._c = tensors

    def _spatial(self, ctx, x, name: str):
        """(N, C) tokens -> (M, C) through the constant (M, N) matrix ``name``."""
        xt = ops.cont(ctx, ops.transpose(ctx, x))                                # (C, N)
        return ops.cont(ctx, ops.transpose(ctx, ops.mul_mat(ctx, self._c[name], xt)))

    def _depthwise(self, ctx, x, weight: str, stride: int, G: int):
        """3x3 depthwise conv, padding 1, on a G x G grid: (G*G, C) -> (Mo, C)."""
        C = x.shape[-1]
        xt = ops.cont(ctx, ops.transpose(ctx, x))                                # (C, N)
        y = ops.mul_mat(ctx, self._c[f"dw{G}_s{stride}"], xt)                    # (C, 9*Mo)
        mo = y.shape[-1] // 9
        y = ops.cont(ctx, ops.permute(ctx, ops.reshape(ctx, y, (C, 9, mo)), (0, 2, 1)))  # (C, Mo, 9)
        k = ops.reshape(ctx, self._f32(ctx, self._w(weight)), (C, 1, 9))
        y = ops.reshape(ctx, ops.mul_mat(ctx, y, k), (C, mo))                    # (C, Mo)
        return ops.cont(ctx, ops.transpose(ctx, y))                              # (Mo, C)

    def _matrix(self, ctx, name: str, rows: int):
        """A 1x1 conv weight (rows, cols[, 1, 1]) as a 2-D matrix."""
        w = self._w(name)
        return w if w.ndim == 2 else ops.reshape(ctx, w, (rows, w.n_elements // rows))

    def _inverted_residual(self, ctx, x, prefix: str, stride: int, G: int):
        """torchvision InvertedResidual as MobileVLM configures it (no expansion, SE with
        hardsigmoid, hardswish, LayerNorm over channels, residual when stride 1)."""
        eps = 1e-5
        C = x.shape[-1]
        h = self._depthwise(ctx, x, prefix + "0.0.weight", stride, G)           # (Mo, C)
        h = self._layer_norm(ctx, h, prefix + "0.1", eps)
        h = ops.hardswish(ctx, h)
        Go = (G + 2 - 3) // stride + 1
        s = ops.mul_mat(ctx, self._c[f"mean{Go}"], ops.cont(ctx, ops.transpose(ctx, h)))  # (C, 1)
        s = ops.reshape(ctx, s, (1, C))
        sq = self._w(prefix + "1.fc1.bias").shape[0]
        s = ops.add(ctx, ops.mul_mat(ctx, self._matrix(ctx, prefix + "1.fc1.weight", sq), s),
                    self._f32(ctx, self._w(prefix + "1.fc1.bias")))
        s = ops.relu(ctx, s)
        s = ops.add(ctx, ops.mul_mat(ctx, self._matrix(ctx, prefix + "1.fc2.weight", C), s),
                    self._f32(ctx, self._w(prefix + "1.fc2.bias")))
        h = ops.mul(ctx, h, ops.hardsigmoid(ctx, s))
        h = ops.mul_mat(ctx, self._matrix(ctx, prefix + "2.0.weight", C), h)
        h = self._layer_norm(ctx, h, prefix + "2.1", eps)
        return ops.add(ctx, h, x) if stride == 1 else h

    def _ldp(self, ctx, feats, P: int):
        """MobileVLM LDPNetProjector: Linear, GELU, Linear, then two InvertedResidual blocks
        (stride 1 with residual, stride 2): (P*P, D) -> ((P/2)^2, d)."""
        x = self._linear(ctx, ops.gelu_erf(ctx, self._linear(ctx, feats, "mm.model.mlp.1")), "mm.model.mlp.3")
        x = self._inverted_residual(ctx, x, "mm.model.mb_block.1.block.", 1, P)
        return self._inverted_residual(ctx, x, "mm.model.mb_block.2.block.", 2, P)

    def _ldpv2(self, ctx, feats, P: int):
        """MobileVLM LDPNetV2Projector: Linear, GELU, Linear, 2x2 average pool, then the PEG
        (3x3 depthwise conv with bias) added to its input: (P*P, D) -> ((P/2)^2, d)."""
        x = self._linear(ctx, ops.gelu_erf(ctx, self._linear(ctx, feats, "mm.model.mlp.0")), "mm.model.mlp.2")
        x = self._spatial(ctx, x, "pool2")                                       # (P/2 * P/2, d)
        y = self._depthwise(ctx, x, "mm.model.peg.0.weight", 1, P // 2)
        y = ops.add(ctx, y, self._f32(ctx, self._w("mm.model.peg.0.bias")))
        return ops.add(ctx, y, x)

    # ------------------------------------------------------------------ running
    def _run(self, tile: np.ndarray, output: str) -> np.ndarray:
        S = self.params.image_size
        tile = np.asarray(tile, dtype=np.float32)
        if tile.shape != (3, S, S):
            raise GGMLError(f"a tile must be (3, {S}, {S}) float32, got {tile.shape}")
        out = self.graph.compute({"pixels": tile[None], "positions": self._positions}, outputs=[output])
        return out[output]

    def tile_features(self, tile: np.ndarray) -> np.ndarray:
        """The tower's features of one tile before the projector: (P*P, D)."""
        return self._run(tile, "features")

    def encode_tile(self, tile: np.ndarray) -> np.ndarray:
        """Projected tokens of one normalised tile (3, S, S): (tokens_per_tile, n_out)."""
        return self._run(tile, "embd")

    def encode(self, image: PreparedImage) -> np.ndarray:
        """The LLM input embeddings of one preprocessed image: (n_tokens, n_out)."""
        tiles = [self.encode_tile(t) for t in image.pixels]
        if image.grid is None:
            if len(tiles) != 1:
                raise GGMLError(f"expected one tile, got {len(tiles)}")
            return tiles[0]
        return self.arrange_anyres(tiles, image.size, image.grid)

    def arrange_anyres(self, tiles: list, size: tuple, grid: tuple) -> np.ndarray:
        """LLaVA-1.6 ``spatial_unpad``: base tile first, then the (rows*P, cols*P) grid of
        tile features cut to the image's aspect, with ``image_newline`` after each row."""
        P = self.params.patches_per_side
        cols, rows = grid
        if len(tiles) != 1 + cols * rows:
            raise GGMLError(f"a {cols}x{rows} grid needs {1 + cols * rows} tiles, got {len(tiles)}")
        n = tiles[0].shape[-1]
        grid_feats = np.stack(tiles[1:]).reshape(rows, cols, P, P, n)         # (r, c, y, x, n)
        full = grid_feats.transpose(0, 2, 1, 3, 4).reshape(rows * P, cols * P, n)
        kr, kc, top, left = anyres_layout(size, grid, P)
        kept = full[top:top + kr, left:left + kc]
        nl = np.broadcast_to(self.newline.astype(np.float32), (kr, 1, n))
        body = np.concatenate([kept, nl], axis=1).reshape(kr * (kc + 1), n)
        return np.concatenate([tiles[0], body], axis=0)

    def free(self) -> None:
        self.graph.free()
        if self.consts is not None:
            self.consts.free()
        self.weights.free()


def _dw_shifts(P: int, stride: int) -> np.ndarray:
    """(9*Mo, P*P) selection matrix of a 3x3, padding-1 convolution on a P x P grid."""
    Q = (P + 2 - 3) // stride + 1
    m = np.zeros((9, Q * Q, P * P), np.float32)
    for o in range(9):
        dy, dx = divmod(o, 3)
        for y in range(Q):
            for x in range(Q):
                iy, ix = y * stride + dy - 1, x * stride + dx - 1
                if 0 <= iy < P and 0 <= ix < P:
                    m[o, y * Q + x, iy * P + ix] = 1.0
    return m.reshape(9 * Q * Q, P * P)


def _pool2(P: int) -> np.ndarray:
    """(P/2 * P/2, P*P) matrix of a 2x2 average pool."""
    Q = P // 2
    m = np.zeros((Q * Q, P * P), np.float32)
    for y in range(Q):
        for x in range(Q):
            for dy in range(2):
                for dx in range(2):
                    m[y * Q + x, (2 * y + dy) * P + 2 * x + dx] = 0.25
    return m
