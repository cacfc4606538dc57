"""Validated ggml ops: every wrapper checks its arguments in Python, mirroring the
``GGML_ASSERT``s of ggml.c (0.25.3), before it calls C, and raises ``GGMLError``.

All ops take the context that will hold the result first (like ggml) and return a
:class:`~ggml_bind.tensor.Tensor`.  Shapes and axes are **numpy order**: ``mul_mat(ctx, W, x)``
with ``W`` of shape ``(out, in)`` and ``x`` of shape ``(n, in)`` gives ``(n, out)``,
i.e. ``x @ W.T``; ``permute(ctx, a, axes)`` is ``np.transpose(a, axes)``.

Two more guards sit outside this module because ggml only fails later:
- :class:`ggml_bind.graph.Graph` checks at build time that a backend of its scheduler
  supports every node (type combinations a kernel lacks abort at compute time);
- index tensors passed to :func:`get_rows` / :func:`set_rows` that are graph inputs get
  their bound recorded here and their values checked by ``Graph.compute``.

Op list: add, mul, scale, norm, rms_norm, gelu, gelu_erf, gelu_quick, silu, relu, tanh,
sigmoid, hardswish, hardsigmoid, swiglu_split,
mul_mat, soft_max_ext, rope_ext, flash_attn_ext, conv_2d, get_rows, set_rows, concat,
reshape, view, permute, transpose, cont, cast, cpy.
"""
from __future__ import annotations

from . import lib as _lib
from .errors import GGMLError, GGMLLayoutError, GGMLShapeError, GGMLTypeError
from .tensor import MAX_DIMS, Context, Tensor, ggml_axis, ggml_permutation, ne_from_shape, type_id, type_name

F32, F16, BF16, I32, I64 = 0, 1, 30, 26, 27
_FLOAT = (F32, F16, BF16)


# --------------------------------------------------------------------------- helpers


def _prep(ctx: Context, op: str, *tensors: Tensor | None, room: int = 1) -> None:
    """Everything alive, from live contexts, and room in ``ctx`` for ``room`` new tensors."""
    if not isinstance(ctx, Context):
        raise GGMLTypeError(f"first argument must be a Context, got {type(ctx).__name__}", op=op)
    ctx.check()
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise GGMLTypeError(f"expected a Tensor, got {type(t).__name__}", op=op)
        t.ctx.check()
        if t.ctx is not ctx and t.ctx.graph is not None:
            raise GGMLError(
                f"tensor {t.name!r} belongs to another graph; graphs share weights and caches, "
                "not intermediate results", op=op
            )
        ctx.depend_on(t.ctx)  # the result reads t: keep t's context (and buffer) alive
    ctx.ensure_room(room, op)


def _fail(cls, op, msg, *tensors):
    desc = ", ".join(f"{t.name or '?'}: {t.type_name} {t.shape}" for t in tensors if t is not None)
    raise cls(f"{msg} ({desc})" if desc else msg, op=op)


def _types(op: str, t: Tensor, allowed, what: str = "input") -> None:
    if t.type not in allowed:
        names = "/".join(type_name(a) for a in allowed)
        _fail(GGMLTypeError, op, f"{what} must be {names}, got {t.type_name}", t)


def _contiguous(op: str, t: Tensor, what: str = "input") -> None:
    if not t.contiguous:
        _fail(GGMLLayoutError, op, f"{what} must be contiguous (use ops.cont)", t)


def _can_repeat(op: str, a: Tensor, b: Tensor) -> None:
    """``ggml_can_repeat(b, a)``: each dim of a is a multiple of b's (numpy broadcasting
    of b into a, generalised to tiling)."""
    if not all(x % y == 0 for x, y in zip(a.ne, b.ne)):
        _fail(GGMLShapeError, op, "second operand cannot be broadcast (tiled) to the first", a, b)


def _wrap(ctx: Context, ptr, ndim: int) -> Tensor:
    return Tensor(ctx, ptr, min(MAX_DIMS, max(1, ndim)))


def _f(x, op: str, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise GGMLTypeError(f"{what} must be a number, got {x!r}", op=op) from None
    return v


# --------------------------------------------------------------------------- elementwise


def add(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
    """a + b, b broadcast (tiled) over a; result has a's shape and type."""
    op = "ggml_add"
    _prep(ctx, op, a, b)
    _types(op, a, _FLOAT)
    _types(op, b, _FLOAT, "second operand")
    _can_repeat(op, a, b)
    return _wrap(ctx, _lib.C().ggml_add(ctx.ptr, a.ptr, b.ptr), max(a.ndim, b.ndim))


def mul(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
    """a * b elementwise, b broadcast (tiled) over a."""
    op = "ggml_mul"
    _prep(ctx, op, a, b)
    _types(op, a, _FLOAT)
    _types(op, b, _FLOAT, "second operand")
    _can_repeat(op, a, b)
    return _wrap(ctx, _lib.C().ggml_mul(ctx.ptr, a.ptr, b.ptr), max(a.ndim, b.ndim))


def scale(ctx: Context, a: Tensor, s: float) -> Tensor:
    op = "ggml_scale"
    _prep(ctx, op, a)
    _types(op, a, (F32,))
    _contiguous(op, a)  # ggml_is_padded_1d(a)
    return _wrap(ctx, _lib.C().ggml_scale(ctx.ptr, a.ptr, _f(s, op, "scale")), a.ndim)


def _unary(name: str, ctx: Context, a: Tensor) -> Tensor:
    op = f"ggml_{name}"
    _prep(ctx, op, a)
    _types(op, a, (F32, F16))
    if not _lib.C().ggml_is_contiguous_rows(a.ptr):
        _fail(GGMLLayoutError, op, "rows must be contiguous (use ops.cont)", a)
    return _wrap(ctx, getattr(_lib.C(), op)(ctx.ptr, a.ptr), a.ndim)


def gelu(ctx: Context, a: Tensor) -> Tensor:
    """GELU, tanh approximation (ggml may use a lookup table for F16 inputs)."""
    return _unary("gelu", ctx, a)


def gelu_erf(ctx: Context, a: Tensor) -> Tensor:
    """GELU with the exact erf."""
    return _unary("gelu_erf", ctx, a)


def gelu_quick(ctx: Context, a: Tensor) -> Tensor:
    """x * sigmoid(1.702 x) (CLIP's quick_gelu)."""
    return _unary("gelu_quick", ctx, a)


def silu(ctx: Context, a: Tensor) -> Tensor:
    return _unary("silu", ctx, a)


def relu(ctx: Context, a: Tensor) -> Tensor:
    return _unary("relu", ctx, a)


def tanh(ctx: Context, a: Tensor) -> Tensor:
    return _unary("tanh", ctx, a)


def sigmoid(ctx: Context, a: Tensor) -> Tensor:
    return _unary("sigmoid", ctx, a)


def hardswish(ctx: Context, a: Tensor) -> Tensor:
    """x * relu6(x + 3) / 6 (MobileVLM's LDP projector)."""
    return _unary("hardswish", ctx, a)


def hardsigmoid(ctx: Context, a: Tensor) -> Tensor:
    """relu6(x + 3) / 6."""
    return _unary("hardsigmoid", ctx, a)


def swiglu_split(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
    """silu(a) * b, same shapes (the LLaMA MLP gate)."""
    op = "ggml_swiglu_split"
    _prep(ctx, op, a, b)
    _types(op, a, (F32, F16))
    _types(op, b, (a.type,), "second operand")
    if a.ne != b.ne:
        _fail(GGMLShapeError, op, "operands must have the same shape", a, b)
    for t in (a, b):
        if not _lib.C().ggml_is_contiguous_1(t.ptr):
            _fail(GGMLLayoutError, op, "rows must be contiguous (use ops.cont)", t)
    return _wrap(ctx, _lib.C().ggml_swiglu_split(ctx.ptr, a.ptr, b.ptr), max(a.ndim, b.ndim))


def norm(ctx: Context, a: Tensor, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the last axis (no affine part)."""
    op = "ggml_norm"
    _prep(ctx, op, a)
    _types(op, a, (F32,))
    if a.nb[0] != 4:
        _fail(GGMLLayoutError, op, "rows must be contiguous (use ops.cont)", a)
    return _wrap(ctx, _lib.C().ggml_norm(ctx.ptr, a.ptr, _f(eps, op, "eps")), a.ndim)


def rms_norm(ctx: Context, a: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(mean(x^2) + eps) over the last axis."""
    op = "ggml_rms_norm"
    _prep(ctx, op, a)
    _types(op, a, (F32,))
    if a.nb[0] != 4:
        _fail(GGMLLayoutError, op, "rows must be contiguous (use ops.cont)", a)
    return _wrap(ctx, _lib.C().ggml_rms_norm(ctx.ptr, a.ptr, _f(eps, op, "eps")), a.ndim)


# --------------------------------------------------------------------------- matmul / attention


def mul_mat(ctx: Context, a: Tensor, b: Tensor, *, f32_acc: bool = False) -> Tensor:
    """``b @ a.T`` batched: a (..., M, K) weights (any type, quantized included), b (..., N, K)
    F32 activations -> (..., N, M) F32.  a's batch dims must divide b's (broadcast)."""
    op = "ggml_mul_mat"
    _prep(ctx, op, a, b)
    if a.ne[0] != b.ne[0]:
        _fail(GGMLShapeError, op, f"inner dims differ: {a.ne[0]} vs {b.ne[0]}", a, b)
    if b.ne[2] % a.ne[2] or b.ne[3] % a.ne[3]:
        _fail(GGMLShapeError, op, "batch dims of the first operand must divide the second's", a, b)
    if a.transposed:
        _fail(GGMLLayoutError, op, "first operand must not be transposed (use ops.cont)", a)
    _types(op, b, (F32, F16), "second operand")
    r = _lib.C().ggml_mul_mat(ctx.ptr, a.ptr, b.ptr)
    if f32_acc:
        _lib.C().ggml_prec_set_acc(r, _lib.C().GGML_PREC_F32)
    return _wrap(ctx, r, max(a.ndim, b.ndim, 2))


def soft_max_ext(ctx: Context, a: Tensor, mask: Tensor | None = None, scale: float = 1.0, max_bias: float = 0.0) -> Tensor:
    """softmax(a * scale + mask) over the last axis.  a (..., rows, cols) F32 contiguous;
    mask F16/F32 contiguous (..., >= rows, cols), its batch dims dividing a's."""
    op = "ggml_soft_max_ext"
    _prep(ctx, op, a, mask)
    _types(op, a, (F32,))
    _contiguous(op, a)
    if mask is not None:
        _types(op, mask, (F16, F32), "mask")
        _contiguous(op, mask, "mask")
        if mask.ne[0] != a.ne[0] or mask.ne[1] < a.ne[1]:
            _fail(GGMLShapeError, op, "mask must have the same last dim and at least as many rows", a, mask)
        if a.ne[2] % mask.ne[2] or a.ne[3] % mask.ne[3]:
            _fail(GGMLShapeError, op, "mask batch dims must divide the input's", a, mask)
    elif max_bias > 0:
        raise GGMLError("max_bias > 0 (ALiBi) needs a mask", op=op)
    m = mask.ptr if mask is not None else _lib.ffi().NULL
    r = _lib.C().ggml_soft_max_ext(ctx.ptr, a.ptr, m, _f(scale, op, "scale"), _f(max_bias, op, "max_bias"))
    return _wrap(ctx, r, a.ndim)


ROPE_NORMAL, ROPE_NEOX = 0, 2


def rope_ext(
    ctx: Context,
    a: Tensor,
    pos: Tensor,
    n_dims: int,
    mode: int = ROPE_NORMAL,
    *,
    freq_base: float = 10000.0,
    freq_scale: float = 1.0,
    n_ctx_orig: int = 0,
    ext_factor: float = 0.0,
    attn_factor: float = 1.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    freq_factors: Tensor | None = None,
) -> Tensor:
    """Rotary embedding of a (..., n_tokens, n_heads, head_dim) at positions ``pos``
    (I32, (n_tokens,)), rotating the first ``n_dims`` of each head.  Mode 0 (NORMAL,
    LLaMA: adjacent pairs) or 2 (NEOX: halves)."""
    op = "ggml_rope_ext"
    _prep(ctx, op, a, pos, freq_factors)
    _types(op, a, (F32, F16))
    _types(op, pos, (I32,), "positions")
    if mode not in (ROPE_NORMAL, ROPE_NEOX):
        raise GGMLError(f"rope mode {mode} is not supported here (0 = normal, 2 = neox)", op=op)
    if pos.ndim != 1 or pos.ne[0] != a.ne[2]:
        _fail(GGMLShapeError, op, f"positions must be a vector of length {a.ne[2]} (n_tokens)", a, pos)
    n_dims = int(n_dims)
    if n_dims <= 0 or n_dims % 2 or n_dims > a.ne[0]:
        _fail(GGMLShapeError, op, f"n_dims must be even and in 2..{a.ne[0]}, got {n_dims}", a)
    if freq_factors is not None:
        _types(op, freq_factors, (F32,), "freq_factors")
        if freq_factors.ne[0] < n_dims // 2:
            _fail(GGMLShapeError, op, f"freq_factors needs at least {n_dims // 2} values", freq_factors)
    ff = freq_factors.ptr if freq_factors is not None else _lib.ffi().NULL
    r = _lib.C().ggml_rope_ext(
        ctx.ptr, a.ptr, pos.ptr, ff, n_dims, mode, int(n_ctx_orig), _f(freq_base, op, "freq_base"),
        _f(freq_scale, op, "freq_scale"), _f(ext_factor, op, "ext_factor"), _f(attn_factor, op, "attn_factor"),
        _f(beta_fast, op, "beta_fast"), _f(beta_slow, op, "beta_slow"),
    )
    return _wrap(ctx, r, a.ndim)


def flash_attn_ext(
    ctx: Context,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    scale: float = 1.0,
    max_bias: float = 0.0,
    logit_softcap: float = 0.0,
    *,
    f32_acc: bool = True,
) -> Tensor:
    """Fused attention softmax(q k^T * scale + mask) v.

    q (B, H, Nq, D) F32; k (B, Hkv, Nkv, D) and v (B, Hkv, Nkv, Dv) (F16 on the CPU); H a
    multiple of Hkv (GQA); mask F16 contiguous (.., >= Nq, Nkv).  Result (B, Nq, H, Dv) F32,
    i.e. heads already interleaved per token, as llama.cpp expects.
    """
    op = "ggml_flash_attn_ext"
    _prep(ctx, op, q, k, v, mask)
    _types(op, q, (F32,), "q")
    _types(op, k, (F16, F32, BF16), "k")
    _types(op, v, (F16, F32, BF16), "v")
    if k.ne[0] != q.ne[0]:
        _fail(GGMLShapeError, op, "q and k head dims differ", q, k)
    if q.ne[2] % k.ne[2] or q.ne[3] != k.ne[3] or q.ne[3] != v.ne[3]:
        _fail(GGMLShapeError, op, "q heads must be a multiple of k heads, batch dims equal", q, k, v)
    if v.ne[1] != k.ne[1] or v.ne[2] != k.ne[2]:
        _fail(GGMLShapeError, op, "k and v must have the same length and heads", k, v)
    if mask is not None:
        _types(op, mask, (F16,), "mask")
        _contiguous(op, mask, "mask")
        if mask.ne[0] != k.ne[1] or mask.ne[1] < q.ne[1]:
            _fail(GGMLShapeError, op, "mask must be (.., >= Nq, Nkv)", q, k, mask)
        if q.ne[2] % mask.ne[2] or q.ne[3] % mask.ne[3]:
            _fail(GGMLShapeError, op, "mask batch dims must divide q's", q, mask)
    elif max_bias > 0:
        raise GGMLError("max_bias > 0 (ALiBi) needs a mask", op=op)
    m = mask.ptr if mask is not None else _lib.ffi().NULL
    r = _lib.C().ggml_flash_attn_ext(
        ctx.ptr, q.ptr, k.ptr, v.ptr, m, _f(scale, op, "scale"), _f(max_bias, op, "max_bias"),
        _f(logit_softcap, op, "logit_softcap"),
    )
    if f32_acc:
        _lib.C().ggml_prec_set_acc(r, _lib.C().GGML_PREC_F32)
    return _wrap(ctx, r, 4)


def conv_2d(ctx: Context, kernel: Tensor, x: Tensor, stride=(1, 1), padding=(0, 0), dilation=(1, 1)) -> Tensor:
    """2-D convolution (im2col + mul_mat, as CLIP's patch embedding): kernel (OC, IC, KH, KW)
    F16/F32, x (N, IC, H, W) F32 -> (N, OC, OH, OW) F32.  ``stride`` etc. are (y, x)."""
    op = "ggml_conv_2d"
    _prep(ctx, op, kernel, x, room=10)
    _types(op, kernel, (F16, F32), "kernel")
    _types(op, x, (F32,), "input")
    (s1, s0), (p1, p0), (d1, d0) = (_pair(v, op, n) for v, n in ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    if min(s0, s1, d0, d1) < 1 or min(p0, p1) < 0:
        raise GGMLError("stride and dilation must be >= 1, padding >= 0", op=op)
    KW, KH, IC, _ = kernel.ne
    W, H, xIC, _ = x.ne
    if IC != xIC:
        _fail(GGMLShapeError, op, f"kernel has {IC} input channels, input has {xIC}", kernel, x)
    OW = (W + 2 * p0 - d0 * (KW - 1) - 1) // s0 + 1
    OH = (H + 2 * p1 - d1 * (KH - 1) - 1) // s1 + 1
    if OW <= 0 or OH <= 0:
        _fail(GGMLShapeError, op, "input is smaller than the (dilated) kernel", kernel, x)
    r = _lib.C().ggml_conv_2d(ctx.ptr, kernel.ptr, x.ptr, s0, s1, p0, p1, d0, d1)
    return _wrap(ctx, r, 4)


def _pair(v, op, name):
    if isinstance(v, int):
        return v, v
    try:
        a, b = (int(x) for x in v)
    except (TypeError, ValueError):
        raise GGMLTypeError(f"{name} must be an int or a pair of ints, got {v!r}", op=op) from None
    return a, b


# --------------------------------------------------------------------------- rows


def _note_index_bound(ctx: Context, idx: Tensor, bound: int, op: str) -> None:
    """Record that the values of input ``idx`` must lie in [0, bound) (checked by Graph)."""
    p = idx.ptr
    if not p.flags & _lib.C().GGML_TENSOR_FLAG_INPUT and p.view_src != _lib.ffi().NULL:
        p = p.view_src  # a view (reshape, slice) of an input: check the whole input
    if p.flags & _lib.C().GGML_TENSOR_FLAG_INPUT:
        key = int(_lib.ffi().cast("uintptr_t", p))
        old = idx.ctx.index_bounds.get(key)
        idx.ctx.index_bounds[key] = (min(old[0], bound) if old else bound, op)


def get_rows(ctx: Context, a: Tensor, idx: Tensor) -> Tensor:
    """``a[idx]`` along the row axis: a (R, C) or (B, R, C), idx I32 (n,) or (B, n) ->
    (n, C) / (B, n, C), F32 (embedding lookup).  Indices must be in [0, R)."""
    op = "ggml_get_rows"
    _prep(ctx, op, a, idx)
    _types(op, idx, (I32,), "indices")
    if a.ne[2] != idx.ne[1] or a.ne[3] != idx.ne[2] or idx.ne[3] != 1:
        _fail(GGMLShapeError, op, "indices must be (n,) for 2-D input or (B, n) for (B, R, C)", a, idx)
    _note_index_bound(ctx, idx, a.ne[1], op)
    return _wrap(ctx, _lib.C().ggml_get_rows(ctx.ptr, a.ptr, idx.ptr), max(a.ndim, idx.ndim + 1))


def set_rows(ctx: Context, dst: Tensor, src: Tensor, idx: Tensor) -> Tensor:
    """Write ``dst[idx[i]] = src[i]`` (converting to dst's type, e.g. an F16 KV cache):
    dst (R, C), src (n, C) F32/F16, idx I64/I32 (n,).  Returns the updated view of dst;
    expand it into the graph so that the write happens."""
    op = "ggml_set_rows"
    _prep(ctx, op, dst, src, idx)
    _types(op, src, (F32, F16), "source")
    _types(op, idx, (I64, I32), "indices")
    if dst.ne[0] != src.ne[0] or dst.ne[2] != src.ne[2] or dst.ne[3] != src.ne[3]:
        _fail(GGMLShapeError, op, "destination and source rows must match", dst, src)
    if src.ne[1] != idx.ne[0] or src.ne[2] % idx.ne[1] or src.ne[3] % idx.ne[2] or idx.ne[3] != 1:
        _fail(GGMLShapeError, op, "one index per source row", src, idx)
    for t in (dst, src):
        if not _lib.C().ggml_is_contiguous_rows(t.ptr):
            _fail(GGMLLayoutError, op, "rows must be contiguous", t)
    _note_index_bound(ctx, idx, dst.ne[1], op)
    return _wrap(ctx, _lib.C().ggml_set_rows(ctx.ptr, dst.ptr, src.ptr, idx.ptr), dst.ndim)


# --------------------------------------------------------------------------- layout


def concat(ctx: Context, a: Tensor, b: Tensor, axis: int) -> Tensor:
    """``np.concatenate([a, b], axis)``; same type, same shape off ``axis``."""
    op = "ggml_concat"
    _prep(ctx, op, a, b)
    ndim = max(a.ndim, b.ndim)
    dim = ggml_axis(axis, ndim, op)
    if a.type != b.type:
        _fail(GGMLTypeError, op, "operands must have the same type", a, b)
    if any(a.ne[d] != b.ne[d] for d in range(MAX_DIMS) if d != dim):
        _fail(GGMLShapeError, op, f"shapes must match except on axis {axis}", a, b)
    return _wrap(ctx, _lib.C().ggml_concat(ctx.ptr, a.ptr, b.ptr, dim), ndim)


def reshape(ctx: Context, a: Tensor, shape) -> Tensor:
    """A view of contiguous ``a`` with a new numpy-order ``shape`` (same element count)."""
    op = "ggml_reshape"
    _prep(ctx, op, a)
    ne = ne_from_shape(shape)
    _contiguous(op, a)
    if ne[0] * ne[1] * ne[2] * ne[3] != a.n_elements:
        _fail(GGMLShapeError, op, f"cannot reshape {a.n_elements} elements to {tuple(shape)}", a)
    _check_blocks(op, a, ne[0])
    r = _lib.C().ggml_reshape_4d(ctx.ptr, a.ptr, *ne)
    return _wrap(ctx, r, len(tuple(shape)))


def _check_blocks(op, a, ne0):
    blck = _lib.C().ggml_blck_size(a.type)
    if ne0 % blck:
        _fail(GGMLShapeError, op, f"last dim {ne0} is not a multiple of the block size {blck}", a)


def view(ctx: Context, a: Tensor, shape, offset: int = 0, strides=None) -> Tensor:
    """A strided view into ``a``: numpy-order ``shape`` and byte ``strides`` (default: packed
    rows of ``a``'s type), starting ``offset`` bytes into ``a``.  Must stay inside ``a``."""
    op = "ggml_view"
    _prep(ctx, op, a)
    ne = ne_from_shape(shape)
    ndim = len(tuple(shape))
    _check_blocks(op, a, ne[0])
    C = _lib.C()
    row = int(C.ggml_row_size(a.type, ne[0]))
    if strides is None:
        nb = [int(C.ggml_type_size(a.type)), row, row * ne[1], row * ne[1] * ne[2]]
    else:
        st = [int(s) for s in strides]
        if len(st) != ndim or any(s < 0 for s in st):
            raise GGMLShapeError(f"strides must be {ndim} non-negative byte counts, got {strides!r}", op=op)
        nb = [int(C.ggml_type_size(a.type))] + st[::-1][1:] + [0] * (MAX_DIMS - ndim)
        if st[-1] != nb[0]:
            raise GGMLLayoutError(f"the last stride must be the element size {nb[0]}", op=op)
        for i in range(ndim, MAX_DIMS):
            nb[i] = nb[i - 1] * ne[i - 1]
    offset = int(offset)
    extent = row + sum((ne[i] - 1) * nb[i] for i in range(1, MAX_DIMS))
    packed = row * ne[1] * ne[2] * ne[3]
    if offset < 0 or offset + max(extent, packed if strides is None else extent) > a.nbytes:
        _fail(GGMLShapeError, op, f"view of {tuple(shape)} at offset {offset} runs past the {a.nbytes} bytes", a)
    if offset + packed > a.nbytes:  # ggml asserts on the packed size too
        _fail(GGMLShapeError, op, f"view of {packed} packed bytes at offset {offset} runs past the source", a)
    r = C.ggml_view_4d(ctx.ptr, a.ptr, ne[0], ne[1], ne[2], ne[3], nb[1], nb[2], nb[3], offset)
    return _wrap(ctx, r, ndim)


def permute(ctx: Context, a: Tensor, axes) -> Tensor:
    """``np.transpose(a, axes)`` as a (non-contiguous) view."""
    op = "ggml_permute"
    _prep(ctx, op, a)
    perm = ggml_permutation(axes, a.ndim, op)
    return _wrap(ctx, _lib.C().ggml_permute(ctx.ptr, a.ptr, *perm), a.ndim)


def transpose(ctx: Context, a: Tensor) -> Tensor:
    """Swap the last two axes (a view)."""
    op = "ggml_transpose"
    _prep(ctx, op, a)
    return _wrap(ctx, _lib.C().ggml_transpose(ctx.ptr, a.ptr), max(2, a.ndim))


def cont(ctx: Context, a: Tensor, shape=None) -> Tensor:
    """A contiguous copy of ``a``, optionally with a new shape of the same element count."""
    op = "ggml_cont"
    _prep(ctx, op, a)
    if shape is None:
        return _wrap(ctx, _lib.C().ggml_cont(ctx.ptr, a.ptr), a.ndim)
    ne = ne_from_shape(shape)
    if ne[0] * ne[1] * ne[2] * ne[3] != a.n_elements:
        _fail(GGMLShapeError, op, f"cannot make {a.n_elements} elements into {tuple(shape)}", a)
    _check_blocks(op, a, ne[0])
    return _wrap(ctx, _lib.C().ggml_cont_4d(ctx.ptr, a.ptr, *ne), len(tuple(shape)))


def cast(ctx: Context, a: Tensor, ggml_type) -> Tensor:
    """``a`` converted to another type (F32 <-> F16/BF16; F32 -> quantized rows)."""
    op = "ggml_cast"
    _prep(ctx, op, a)
    t = type_id(ggml_type)
    blck = _lib.C().ggml_blck_size(t)
    if a.ne[0] % blck:
        _fail(GGMLShapeError, op, f"last dim {a.ne[0]} is not a multiple of the {type_name(t)} block size {blck}", a)
    return _wrap(ctx, _lib.C().ggml_cast(ctx.ptr, a.ptr, t), a.ndim)


def cpy(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
    """Copy ``a`` into ``b`` (same element count, converting type); returns the view of b."""
    op = "ggml_cpy"
    _prep(ctx, op, a, b)
    if a.n_elements != b.n_elements:
        _fail(GGMLShapeError, op, "element counts differ", a, b)
    return _wrap(ctx, _lib.C().ggml_cpy(ctx.ptr, a.ptr, b.ptr), b.ndim)
