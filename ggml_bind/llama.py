"""The LLaMA / Mistral decoder on ggml, with a KV cache, read from a ``llama`` GGUF file.

One step evaluates ``n`` new tokens (ids, or embeddings for image tokens) at positions
``n_past .. n_past+n-1`` (llama.cpp's recipe, ggml-binding.md §7):

    x = token_embd[ids] | embeddings                                (n, n_embd)
    per layer:  h = rms_norm(x) * attn_norm
                q, k = rope(h Wq), rope(h Wk)    NORMAL mode, base llama.rope.freq_base
                K[pos], V[pos] = k, v            set_rows into the cache (F16 by default);
                                                 attention reads the cache *through* the
                                                 set_rows result, so the write comes first
                a = softmax(q K[:n_kv]^T / sqrt(d) + mask) V[:n_kv]   GQA by broadcasting
                x += a Wo;  x += W2(silu(W1 h') * W3 h'),  h' = rms_norm(x) * ffn_norm
    logits = (rms_norm(x[last]) * output_norm) W_out                (n_vocab,)

``n_kv`` is the number of cache rows attended, padded to a multiple of 256 so that the
same graph serves 256 decode steps: graphs are cached by (input kind, n, n_kv) and only
their inputs change.  Flash attention (F16 mask) is used where the backend supports it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import ops
from .errors import GGMLError

KV_PAD = 256
MAX_GRAPHS = 8


class LlamaError(GGMLError, ValueError):
    """An LLM file this decoder cannot run (missing keys/tensors, bad shapes)."""


class ContextFullError(GGMLError, ValueError):
    """The tokens do not fit in the context window."""


@dataclass(frozen=True)
class LlamaParams:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rms_eps: float
    rope_base: float
    rope_dims: int

    @property
    def n_embd_kv(self) -> int:
        return self.n_head_kv * self.head_dim


def llama_params(meta, tensors, path="model") -> LlamaParams:
    """Hyperparameters from ``llama.*`` metadata, checked against the tensor shapes."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise LlamaError(f"{path}: general.architecture is {arch!r}; only 'llama' (LLaMA, Mistral) is supported")

    def get(key, kind=int, default=None):
        if key not in meta:
            if default is None:
                raise LlamaError(f"{path}: missing key {key!r}")
            return default
        try:
            return kind(meta[key])
        except (TypeError, ValueError):
            raise LlamaError(f"{path}: key {key!r} has value {meta[key]!r}") from None

    if "token_embd.weight" not in tensors:
        raise LlamaError(f"{path}: tensor 'token_embd.weight' is missing")
    n_vocab, n_embd = tensors["token_embd.weight"]
    n_embd_meta = get("llama.embedding_length")
    if n_embd_meta != n_embd:
        raise LlamaError(f"{path}: embedding_length {n_embd_meta} but token_embd is {n_embd} wide")
    n_head = get("llama.attention.head_count")
    n_head_kv = get("llama.attention.head_count_kv", int, n_head)
    head_dim = get("llama.attention.key_length", int, n_embd // max(n_head, 1))
    if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv:
        raise LlamaError(f"{path}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    rope_dims = get("llama.rope.dimension_count", int, head_dim)
    if rope_dims % 2 or not 0 < rope_dims <= head_dim:
        raise LlamaError(f"{path}: rope.dimension_count {rope_dims} must be even and <= head size {head_dim}")
    return LlamaParams(
        n_vocab=int(n_vocab), n_embd=int(n_embd), n_layer=get("llama.block_count"), n_head=n_head,
        n_head_kv=n_head_kv, head_dim=head_dim, n_ff=get("llama.feed_forward_length"),
        n_ctx_train=get("llama.context_length"), rms_eps=get("llama.attention.layer_norm_rms_epsilon", float),
        rope_base=get("llama.rope.freq_base", float, 10000.0), rope_dims=rope_dims)


class LlamaModel:
    """A decoder with its KV cache on one backend.

    Args:
        path: the LLM GGUF file.
        backend: where weights, cache and compute live.
        n_ctx: context window (default ``min(context_length, 4096)``).
        n_batch: most tokens evaluated per graph (longer inputs are split).
        kv_type: "f16" (as llama.cpp) or "f32" (exact, for comparisons).
        flash_attn: None = use it when the backend supports it; True/False to force.
    """

    def __init__(self, path, backend, *, n_ctx: int | None = None, n_batch: int = 512,
                 kv_type: str = "f16", flash_attn: bool | None = None, sched=None):
        import gguflite

        from .backend import Scheduler
        from .tensor import Context
        from .weights import load_weights

        self.path = str(path)
        with gguflite.open(path) as f:
            self.params = llama_params(f.metadata, {n: t.shape for n, t in f.tensors.items()}, self.path)
            self.metadata = {k: f.metadata[k] for k in f.metadata if not k.startswith("tokenizer.ggml.")}
            self.weights = load_weights(f, backend)
        p = self.params
        self._check_shapes()
        self.backend = backend
        self.n_ctx = int(min(p.n_ctx_train, 4096) if n_ctx is None else n_ctx)
        if self.n_ctx <= 0:
            raise LlamaError(f"n_ctx must be positive, got {self.n_ctx}")
        if n_batch <= 0:
            raise LlamaError(f"n_batch must be positive, got {n_batch}")
        if kv_type not in ("f16", "f32"):
            raise LlamaError(f"kv_type must be 'f16' or 'f32', got {kv_type!r}")
        self.n_batch = int(n_batch)
        self.kv_type = kv_type
        self.sched = sched if sched is not None else Scheduler([backend], graph_size=max(2048, 80 * p.n_layer + 512))
        self.kv_ctx = Context(n_tensors=2 * p.n_layer + 1)
        self.k_cache = [self.kv_ctx.new_tensor(kv_type, (self.n_ctx, p.n_embd_kv), f"cache_k_l{i}") for i in range(p.n_layer)]
        self.v_cache = [self.kv_ctx.new_tensor(kv_type, (self.n_ctx, p.n_embd_kv), f"cache_v_l{i}") for i in range(p.n_layer)]
        self.kv_buffer = self.kv_ctx.allocate(backend, usage="any")
        self.kv_buffer.clear(0)
        self._graphs: OrderedDict = OrderedDict()
        self.flash_attn = self._probe_flash_attn() if flash_attn is None else bool(flash_attn)
        self.n_past = 0

    # ------------------------------------------------------------------ checks
    def _w(self, name: str):
        try:
            return self.weights[name]
        except KeyError:
            raise LlamaError(f"{self.path}: tensor {name!r} is missing", tensor=name) from None

    def _check_shapes(self) -> None:
        p = self.params
        want = {"output_norm.weight": (p.n_embd,)}
        for i in range(p.n_layer):
            b = f"blk.{i}."
            want.update({
                b + "attn_norm.weight": (p.n_embd,), b + "ffn_norm.weight": (p.n_embd,),
                b + "attn_q.weight": (p.n_head * p.head_dim, p.n_embd),
                b + "attn_k.weight": (p.n_embd_kv, p.n_embd), b + "attn_v.weight": (p.n_embd_kv, p.n_embd),
                b + "attn_output.weight": (p.n_embd, p.n_head * p.head_dim),
                b + "ffn_gate.weight": (p.n_ff, p.n_embd), b + "ffn_up.weight": (p.n_ff, p.n_embd),
                b + "ffn_down.weight": (p.n_embd, p.n_ff)})
        if "output.weight" in self.weights:
            want["output.weight"] = (p.n_vocab, p.n_embd)
        for name, shape in want.items():
            got = tuple(self._w(name).shape)
            if got != shape:
                raise LlamaError(f"{self.path}: tensor {name!r} has shape {got}, expected {shape}", tensor=name)

    def _probe_flash_attn(self) -> bool:
        """Whether the backend runs flash_attn_ext on our shapes (llama.cpp's auto mode)."""
        if self.kv_type != "f16":
            return False
        from .tensor import Context

        p = self.params
        with Context(n_tensors=8) as ctx:
            q = ctx.new_tensor("f32", (p.n_head, 1, p.head_dim))
            k = ctx.new_tensor("f16", (p.n_head_kv, KV_PAD, p.head_dim))
            v = ctx.new_tensor("f16", (p.n_head_kv, KV_PAD, p.head_dim))
            m = ctx.new_tensor("f16", (1, KV_PAD))
            fa = ops.flash_attn_ext(ctx, q, k, v, m, 1.0)
            return bool(self.backend.supports(fa))

    # ------------------------------------------------------------------ graph
    def _build(self, ctx, kind: str, n: int, n_kv: int, all_logits: bool):
        p = self.params
        H, Hkv, dh = p.n_head, p.n_head_kv, p.head_dim
        if kind == "tokens":
            ids = ctx.input("tokens", "i32", (n,))
            x = ops.get_rows(ctx, self._w("token_embd.weight"), ids)              # (n, n_embd)
        else:
            x = ctx.input("embd", "f32", (n, p.n_embd))
        pos = ctx.input("pos", "i32", (n,))
        rows = ctx.input("kv_rows", "i64", (n,))
        mask = ctx.input("mask", "f16" if self.flash_attn else "f32", (n, n_kv))
        scale = 1.0 / float(np.sqrt(dh))
        f32 = lambda t: t if t.type == ops.F32 else ops.cast(ctx, t, "f32")  # noqa: E731

        for i in range(p.n_layer):
            b = f"blk.{i}."
            h = ops.mul(ctx, ops.rms_norm(ctx, x, p.rms_eps), f32(self._w(b + "attn_norm.weight")))
            q = ops.reshape(ctx, ops.mul_mat(ctx, self._w(b + "attn_q.weight"), h), (n, H, dh))
            k = ops.reshape(ctx, ops.mul_mat(ctx, self._w(b + "attn_k.weight"), h), (n, Hkv, dh))
            v = ops.mul_mat(ctx, self._w(b + "attn_v.weight"), h)                  # (n, Hkv*dh)
            rope = dict(freq_base=p.rope_base, n_ctx_orig=p.n_ctx_train)
            q = ops.rope_ext(ctx, q, pos, p.rope_dims, ops.ROPE_NORMAL, **rope)
            k = ops.rope_ext(ctx, k, pos, p.rope_dims, ops.ROPE_NORMAL, **rope)
            kw = ops.set_rows(ctx, self.k_cache[i], ops.reshape(ctx, k, (n, Hkv * dh)), rows)
            vw = ops.set_rows(ctx, self.v_cache[i], v, rows)
            K = ops.permute(ctx, ops.view(ctx, kw, (n_kv, Hkv, dh)), (1, 0, 2))   # (Hkv, n_kv, dh)
            qp = ops.permute(ctx, q, (1, 0, 2))                                      # (H, n, dh)
            if self.flash_attn:
                V = ops.permute(ctx, ops.view(ctx, vw, (n_kv, Hkv, dh)), (1, 0, 2))
                a = ops.flash_attn_ext(ctx, qp, K, V, mask, scale)                    # (n, H, dh)
                a = ops.reshape(ctx, a, (n, H * dh))
            else:
                Vt = ops.cont(ctx, ops.permute(ctx, ops.view(ctx, vw, (n_kv, Hkv, dh)), (1, 2, 0)))  # (Hkv, dh, n_kv)
                kq = ops.soft_max_ext(ctx, ops.mul_mat(ctx, K, qp), mask, scale)    # (H, n, n_kv)
                a = ops.mul_mat(ctx, Vt, kq)                                          # (H, n, dh)
                a = ops.cont(ctx, ops.permute(ctx, a, (1, 0, 2)), (n, H * dh))
            if i == p.n_layer - 1 and not all_logits:  # only the last position goes on from here
                a = ops.view(ctx, a, (1, H * dh), offset=(n - 1) * H * dh * 4)    # (1, H*dh)
                x = ops.view(ctx, x, (1, p.n_embd), offset=(n - 1) * p.n_embd * 4)  # (1, n_embd)
            x = ops.add(ctx, x, ops.mul_mat(ctx, self._w(b + "attn_output.weight"), a))
            h = ops.mul(ctx, ops.rms_norm(ctx, x, p.rms_eps), f32(self._w(b + "ffn_norm.weight")))
            g = ops.mul_mat(ctx, self._w(b + "ffn_gate.weight"), h)
            u = ops.mul_mat(ctx, self._w(b + "ffn_up.weight"), h)
            x = ops.add(ctx, x, ops.mul_mat(ctx, self._w(b + "ffn_down.weight"), ops.swiglu_split(ctx, g, u)))

        x = ops.mul(ctx, ops.rms_norm(ctx, x, p.rms_eps), f32(self._w("output_norm.weight")))
        out = self.weights["output.weight"] if "output.weight" in self.weights else self._w("token_embd.weight")
        return {"logits": ops.mul_mat(ctx, out, x)}

    def _graph(self, kind: str, n: int, n_kv: int, all_logits: bool):
        from .graph import Graph

        key = (kind, n, n_kv, all_logits)
        g = self._graphs.get(key)
        if g is not None:
            self._graphs.move_to_end(key)
            return g
        if len(self._graphs) >= MAX_GRAPHS:
            _, old = self._graphs.popitem(last=False)
            old.free()
        g = Graph(self.sched, lambda ctx: self._build(ctx, kind, n, n_kv, all_logits),
                  max_nodes=min(self.sched.graph_size, 80 * self.params.n_layer + 512))
        self._graphs[key] = g
        return g

    # ------------------------------------------------------------------ running
    def reset(self) -> None:
        """Forget the context (the cache rows are simply overwritten later)."""
        self.n_past = 0

    def _step(self, kind: str, data: np.ndarray, all_logits: bool) -> np.ndarray:
        n = data.shape[0]
        start = self.n_past
        n_kv = min(self.n_ctx, -(-(start + n) // KV_PAD) * KV_PAD)
        g = self._graph(kind, n, n_kv, all_logits)
        pos = np.arange(start, start + n, dtype=np.int32)
        visible = np.arange(n_kv)[None, :] <= pos[:, None]                          # causal
        mask = np.where(visible, 0.0, -np.inf).astype(np.float16 if self.flash_attn else np.float32)
        inputs = {"tokens" if kind == "tokens" else "embd": data, "pos": pos,
                  "kv_rows": pos.astype(np.int64), "mask": mask}
        if self.sched.current is not g:
            # another graph holds the compute buffers, or building a new graph reserved them
            # (Scheduler.reserve forgets the current graph without marking it unallocated)
            g.alloc()
        logits = g.compute(inputs)["logits"]
        self.n_past = start + n
        return logits

    def _eval(self, kind: str, data: np.ndarray, all_logits: bool) -> np.ndarray:
        n = data.shape[0]
        if n == 0:
            raise LlamaError("nothing to evaluate (no tokens)")
        if self.n_past + n > self.n_ctx:
            raise ContextFullError(
                f"{n} more tokens do not fit: {self.n_past} already in a context of {self.n_ctx}")
        outs = []
        for s in range(0, n, self.n_batch):
            outs.append(self._step(kind, data[s:s + self.n_batch], all_logits))
        return np.concatenate(outs, 0) if all_logits else outs[-1][0]

    def eval_tokens(self, ids, all_logits: bool = False) -> np.ndarray:
        """Append token ids; logits of the last one (n_vocab,), or of all (n, n_vocab)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.params.n_vocab):
            raise LlamaError(f"token ids must be in [0, {self.params.n_vocab}), got [{ids.min()}, {ids.max()}]")
        return self._eval("tokens", ids.astype(np.int32), all_logits)

    def eval_embeddings(self, embd, all_logits: bool = False) -> np.ndarray:
        """Append input embeddings (n, n_embd) (e.g. projected image tokens)."""
        embd = np.asarray(embd, dtype=np.float32)
        if embd.ndim != 2 or embd.shape[1] != self.params.n_embd:
            raise LlamaError(f"embeddings must be (n, {self.params.n_embd}), got {embd.shape}")
        return self._eval("embd", np.ascontiguousarray(embd), all_logits)

    def free(self) -> None:
        for g in self._graphs.values():
            g.free()
        self._graphs.clear()
        self.kv_ctx.free()
        self.weights.free()

