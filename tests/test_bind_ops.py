"""Each op the CLIP and LLaMA graphs use, computed by ggml through ggml_bind graphs and
compared with a reference nobody here wrote (numpy math, PyTorch functional ops,
transformers' rotary embedding, the gguf package's dequantizers) on random inputs."""
import numpy as np
import pytest


from ggml_bind import lib  # noqa: E402

lib.load()  # libggml is a test dependency (llama-cpp-python): a missing one fails, never skips

import torch  # noqa: E402

from ggml_bind import Backend, Context, Graph, Scheduler, ops, quant  # noqa: E402
from ggml_bind.weights import load_weights  # noqa: E402
from gguflite.types import GGMLType as T  # noqa: E402

DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int32): "i32", np.dtype(np.int64): "i64"}
rng = np.random.default_rng(1234)


@pytest.fixture(scope="module")
def backend():
    return Backend("cpu", n_threads=2)


@pytest.fixture(scope="module")
def sched(backend):
    return Scheduler([backend], graph_size=512)


def run(sched, fn, **arrays):
    """Build a graph with one input per array (type from its dtype), output fn(ctx, **inputs)."""

    def build(ctx):
        ins = {n: ctx.input(n, DTYPES[a.dtype], a.shape) for n, a in arrays.items()}
        return {"out": fn(ctx, **ins)}

    g = Graph(sched, build, max_nodes=256)
    try:
        return g.compute(arrays)["out"]
    finally:
        g.free()


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def close(got, want, atol=1e-5, rtol=1e-5):
    want = np.asarray(want, dtype=np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


# --------------------------------------------------------------------------- norms, unary


def test_norm_matches_layer_norm_without_affine(sched):
    x = randn(3, 5, 16) * 4 + 1
    got = run(sched, lambda ctx, x: ops.norm(ctx, x, 1e-5), x=x)
    want = torch.nn.functional.layer_norm(torch.from_numpy(x), (16,), eps=1e-5).numpy()
    close(got, want, atol=1e-4)


def test_rms_norm_matches_the_formula(sched):
    x = randn(4, 32)
    got = run(sched, lambda ctx, x: ops.rms_norm(ctx, x, 1e-6), x=x)
    close(got, x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6), atol=1e-5)


@pytest.mark.parametrize(
    "op, ref, atol",
    [
        # ggml's F32 gelu goes through an F16 lookup table (GGML_GELU_FP16): ~1e-3 off
        (ops.gelu, lambda t: torch.nn.functional.gelu(t, approximate="tanh"), 3e-3),
        (ops.gelu_erf, lambda t: torch.nn.functional.gelu(t), 1e-5),
        (ops.gelu_quick, lambda t: t * torch.sigmoid(1.702 * t), 5e-3),  # F16 table too
        (ops.silu, torch.nn.functional.silu, 1e-5),
        (ops.relu, torch.relu, 0),
        (ops.tanh, torch.tanh, 1e-6),
        (ops.sigmoid, torch.sigmoid, 1e-6),
        (ops.hardswish, torch.nn.functional.hardswish, 1e-6),
        (ops.hardsigmoid, torch.nn.functional.hardsigmoid, 1e-6),
    ],
    ids=["gelu", "gelu_erf", "gelu_quick", "silu", "relu", "tanh", "sigmoid", "hardswish", "hardsigmoid"],
)
def test_unary_activations_match_torch(sched, op, ref, atol):
    x = randn(3, 40) * 3
    close(run(sched, lambda ctx, x: op(ctx, x), x=x), ref(torch.from_numpy(x)).numpy(), atol=atol, rtol=1e-3)


@pytest.mark.parametrize(
    "op, formula",
    [
        (ops.relu, lambda x: np.maximum(x, 0)),
        (ops.hardswish, lambda x: x * np.clip(x + 3, 0, 6) / 6),
        (ops.hardsigmoid, lambda x: np.clip(x + 3, 0, 6) / 6),
    ],
    ids=["relu", "hardswish", "hardsigmoid"],
)
def test_piecewise_activations_match_their_numpy_formulas_at_and_around_the_kinks(sched, op, formula):
    # MobileVLM's LDP blocks use these three; the kinks of relu6(x + 3) sit at -3 and 3
    x = np.array([[-7, -3.001, -3, -2.999, -1, -0.001, 0, 0.001, 1, 2.999, 3, 3.001, 7, 1e4]], np.float32)
    x = np.concatenate([x, randn(2, x.shape[1]) * 4])
    close(run(sched, lambda ctx, x: op(ctx, x), x=x), formula(x.astype(np.float64)), atol=1e-6, rtol=1e-6)


def test_unary_activations_refuse_integer_inputs_and_non_contiguous_rows(sched):
    from ggml_bind.errors import GGMLError

    for op in (ops.relu, ops.hardswish, ops.hardsigmoid):
        with pytest.raises(GGMLError, match=op.__name__):
            run(sched, lambda ctx, x: op(ctx, x), x=np.zeros((2, 4), np.int32))
        with pytest.raises(GGMLError, match="contiguous"):
            run(sched, lambda ctx, x: op(ctx, ops.transpose(ctx, x)), x=randn(3, 4))


def test_swiglu_split_is_silu_a_times_b(sched):
    a, b = randn(3, 24), randn(3, 24)
    got = run(sched, lambda ctx, a, b: ops.swiglu_split(ctx, a, b), a=a, b=b)
    close(got, torch.nn.functional.silu(torch.from_numpy(a)).numpy() * b, atol=1e-5)


def test_scale_multiplies(sched):
    x = randn(2, 3, 8)
    close(run(sched, lambda ctx, x: ops.scale(ctx, x, 0.125), x=x), x * 0.125)


# --------------------------------------------------------------------------- broadcasting


@pytest.mark.parametrize("b_shape", [(8,), (3, 1), (1, 3, 8), (4, 3, 8), (3, 8)])
def test_add_and_mul_broadcast_like_numpy(sched, b_shape):
    a, b = randn(4, 3, 8), randn(*b_shape)
    close(run(sched, lambda ctx, a, b: ops.add(ctx, a, b), a=a, b=b), a + b)
    close(run(sched, lambda ctx, a, b: ops.mul(ctx, a, b), a=a, b=b), a * b)


def test_add_tiles_a_smaller_operand_along_a_dim(sched):
    a, b = randn(2, 16), randn(2, 8)  # ggml repeats b twice along the last axis
    close(run(sched, lambda ctx, a, b: ops.add(ctx, a, b), a=a, b=b), a + np.tile(b, (1, 2)))


# --------------------------------------------------------------------------- mul_mat


def test_mul_mat_f32_is_x_times_w_transposed(sched):
    w, x = randn(12, 32), randn(5, 32)
    close(run(sched, lambda ctx, w, x: ops.mul_mat(ctx, w, x), w=w, x=x), x @ w.T, atol=1e-4)


def test_mul_mat_broadcasts_weight_batches(sched):
    w, x = randn(2, 6, 16), randn(4, 3, 16)  # x batch i uses w batch i // 2
    want = np.stack([x[i] @ w[i // 2].T for i in range(4)])
    close(run(sched, lambda ctx, w, x: ops.mul_mat(ctx, w, x), w=w, x=x), want, atol=1e-4)


def test_mul_mat_f16_weights(sched):
    w, x = randn(16, 64).astype(np.float16), randn(7, 64)
    got = run(sched, lambda ctx, w, x: ops.mul_mat(ctx, w, x), w=w, x=x)
    # ggml rounds x to F16 for the F16 dot product
    want = x.astype(np.float16).astype(np.float64) @ w.astype(np.float64).T
    close(got, want, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0, T.Q4_K, T.Q6_K], ids=lambda t: t.name)
def test_mul_mat_quantized_weights_from_a_gguf_file(tmp_path, backend, sched, qtype):
    import gguf
    from gguf import quants

    w = randn(8, 256)
    blocks = quant.quantize_chunk(int(qtype), w)
    path = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(str(path), "test")
    writer.add_tensor("w", blocks, raw_dtype=gguf.GGMLQuantizationType(int(qtype)))
    writer.add_tensor("b", randn(8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    W = load_weights(path, backend)
    assert W["w"].type == int(qtype) and W["w"].shape == (8, 256)
    np.testing.assert_array_equal(W["w"].get(), blocks)  # the blocks arrive untouched
    x = randn(3, 256)

    def build(ctx):
        xi = ctx.input("x", "f32", x.shape)
        return {"y": ops.add(ctx, ops.mul_mat(ctx, W["w"], xi), W["b"])}

    g = Graph(sched, build, max_nodes=16)
    got = g.compute({"x": x})["y"]
    w_deq = quants.dequantize(blocks, gguf.GGMLQuantizationType(int(qtype))).reshape(8, 256)
    want = x @ w_deq.T + W["b"].get()
    # ggml quantizes x to Q8 for the dot product: allow ~1% of the output scale
    close(got, want, atol=0.02 * np.abs(want).max(), rtol=0)
    g.free()
    W.free()


# --------------------------------------------------------------------------- attention


def test_soft_max_ext_with_mask_and_scale(sched):
    a = randn(2, 4, 6)
    mask = np.triu(np.full((4, 6), -np.inf, np.float32), k=3)  # causal-like with 2 extra keys
    for mdtype in (np.float32, np.float16):
        m = mask.astype(mdtype)
        got = run(sched, lambda ctx, a, m: ops.soft_max_ext(ctx, a, m, scale=0.5), a=a, m=m)
        want = torch.softmax(torch.from_numpy(a * 0.5 + mask), -1).numpy()
        close(got, want, atol=1e-6)


def numpy_rope_normal(x, pos, n_dims, base):
    """LLaMA (GPT-J style) rope: pairs (2i, 2i+1) rotated by pos * base**(-2i/n_dims)."""
    out = x.astype(np.float64).copy()
    inv = base ** (-np.arange(0, n_dims, 2) / n_dims)  # (n_dims/2,)
    ang = pos[:, None].astype(np.float64) * inv[None, :]  # (n_tokens, n_dims/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0:n_dims:2], x[..., 1:n_dims:2]
    out[..., 0:n_dims:2] = x0 * cos - x1 * sin
    out[..., 1:n_dims:2] = x0 * sin + x1 * cos
    return out


@pytest.mark.parametrize("n_dims", [16, 8])
def test_rope_ext_normal_mode_matches_a_numpy_rope(sched, n_dims):
    x = randn(5, 3, 16)  # (n_tokens, n_heads, head_dim)
    pos = np.array([0, 1, 2, 7, 100], np.int32)
    got = run(sched, lambda ctx, x, pos: ops.rope_ext(ctx, x, pos, n_dims, 0, freq_base=10000.0), x=x, pos=pos)
    close(got, numpy_rope_normal(x, pos, n_dims, 10000.0), atol=1e-4)


@pytest.mark.slow  # importing transformers' llama module takes seconds
def test_rope_ext_neox_mode_matches_transformers_rotate_half(sched):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    x = randn(6, 2, 32)
    pos = np.arange(3, 9, dtype=np.int32)
    got = run(sched, lambda ctx, x, pos: ops.rope_ext(ctx, x, pos, 32, ops.ROPE_NEOX, freq_base=500.0), x=x, pos=pos)
    inv = 1.0 / (500.0 ** (torch.arange(0, 32, 2, dtype=torch.float64) / 32))
    ang = torch.from_numpy(pos).double()[:, None] * inv[None]
    emb = torch.cat([ang, ang], -1)
    q = torch.from_numpy(x).double().permute(1, 0, 2)[None]  # (1, heads, tokens, dim)
    want, _ = apply_rotary_pos_emb(q, q, emb.cos()[None], emb.sin()[None])
    close(got, want[0].permute(1, 0, 2).numpy(), atol=1e-4)


def naive_attention(q, k, v, mask, scale):
    """q (B,H,Nq,D), k/v (B,Hkv,Nkv,D) -> (B,Nq,H,Dv) in float64."""
    rep = q.shape[1] // k.shape[1]
    k = np.repeat(k.astype(np.float64), rep, axis=1)
    v = np.repeat(v.astype(np.float64), rep, axis=1)
    s = q.astype(np.float64) @ k.transpose(0, 1, 3, 2) * scale + mask[: q.shape[2]]
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2)])
def test_flash_attn_ext_matches_naive_attention(sched, heads, kv_heads):
    nq, nkv, d = 5, 9, 32
    q = randn(1, heads, nq, d)
    k = randn(1, kv_heads, nkv, d).astype(np.float16)
    v = randn(1, kv_heads, nkv, d).astype(np.float16)
    mask = np.zeros((nq, nkv), np.float32)
    mask[:, 7:] = -np.inf  # two padded cache slots
    mask[0, 5:] = -np.inf
    m16 = mask.astype(np.float16)
    scale = 1 / np.sqrt(d)
    got = run(sched, lambda ctx, q, k, v, m: ops.flash_attn_ext(ctx, q, k, v, m, scale), q=q, k=k, v=v, m=m16)
    # ggml's CPU kernel rounds q to F16 for the F16 dot products
    want = naive_attention(q.astype(np.float16), k, v, mask, scale)
    close(got, want, atol=5e-3, rtol=2e-3)


def test_attention_without_flash_attn_matches_too(sched):
    """The non-FA path of clip.cpp: mul_mat(k, q) -> soft_max_ext -> mul_mat(v^T, kq)."""
    h, nq, nkv, d = 2, 4, 6, 16
    q, k, v = randn(h, nq, d), randn(h, nkv, d), randn(h, nkv, d)
    mask = np.zeros((nq, nkv), np.float32)
    mask[:, 5] = -np.inf

    def attn(ctx, q, k, v, m):
        kq = ops.mul_mat(ctx, k, q)  # (h, nq, nkv)
        kq = ops.soft_max_ext(ctx, kq, m, scale=0.25)
        vt = ops.cont(ctx, ops.permute(ctx, v, (0, 2, 1)))  # (h, d, nkv)
        return ops.mul_mat(ctx, vt, kq)  # (h, nq, d)

    got = run(sched, attn, q=q, k=k, v=v, m=mask)
    want = naive_attention(q[None], k[None], v[None], mask, 0.25)[0].transpose(1, 0, 2)
    close(got, want, atol=1e-4)


# --------------------------------------------------------------------------- conv, rows


def test_conv_2d_as_a_patch_embedding_matches_torch(sched):
    patch, oc = 4, 6
    kernel = randn(oc, 3, patch, patch).astype(np.float16)
    img = randn(1, 3, 12, 16)
    got = run(sched, lambda ctx, k, x: ops.conv_2d(ctx, k, x, stride=patch), k=kernel, x=img)
    want = torch.nn.functional.conv2d(
        torch.from_numpy(img.astype(np.float16).astype(np.float32)),
        torch.from_numpy(kernel.astype(np.float32)), stride=patch,
    ).numpy()
    close(got, want, atol=2e-2, rtol=1e-3)


def test_get_rows_picks_rows_of_f32_and_quantized_tables(sched):
    table = randn(10, 32)
    idx = np.array([3, 0, 9, 3], np.int32)
    close(run(sched, lambda ctx, t, i: ops.get_rows(ctx, t, i), t=table, i=idx), table[idx])
    blocks = quant.quantize_chunk(int(T.Q8_0), table)

    def build(ctx):
        t = ctx.input("t", T.Q8_0, table.shape)
        i = ctx.input("i", "i32", idx.shape)
        return {"out": ops.get_rows(ctx, t, i)}

    g = Graph(sched, build, max_nodes=8)
    deq = quant.dequantize(int(T.Q8_0), blocks).reshape(table.shape)
    close(g.compute({"t": blocks, "i": idx})["out"], deq[idx])
    g.free()


@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_set_rows_writes_into_an_f16_cache(backend, sched, idx_dtype):
    kv = Context(n_tensors=2)
    cache = kv.new_tensor("f16", (8, 16), "cache")
    kv.allocate(backend)
    before = randn(8, 16).astype(np.float16)
    cache.set(before)
    src = randn(3, 16)
    idx = np.array([6, 1, 4], idx_dtype)

    def build(ctx):
        s = ctx.input("src", "f32", src.shape)
        i = ctx.input("idx", DTYPES[np.dtype(idx_dtype)], idx.shape)
        return {"w": ops.set_rows(ctx, cache, s, i)}

    g = Graph(sched, build, max_nodes=8)
    g.compute({"src": src, "idx": idx})
    want = before.copy()
    want[idx] = src.astype(np.float16)
    np.testing.assert_array_equal(cache.get(), want)
    g.free()
    kv.free()


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_matches_numpy(sched, axis):
    a = randn(2, 3, 4)
    b_shape = list(a.shape)
    b_shape[axis] = 5
    b = randn(*b_shape)
    close(run(sched, lambda ctx, a, b: ops.concat(ctx, a, b, axis), a=a, b=b), np.concatenate([a, b], axis))


@pytest.mark.parametrize("axes", [(2, 0, 1), (1, 0, 2), (0, 2, 1), (2, 1, 0)])
def test_permute_then_cont_matches_numpy_transpose(sched, axes):
    a = randn(2, 3, 4)
    close(run(sched, lambda ctx, a: ops.cont(ctx, ops.permute(ctx, a, axes)), a=a), np.transpose(a, axes))


def test_permute_of_four_dims_matches_numpy(sched):
    a = randn(2, 3, 4, 5)
    axes = (0, 2, 1, 3)  # the attention head permute
    close(run(sched, lambda ctx, a: ops.cont(ctx, ops.permute(ctx, a, axes)), a=a), np.transpose(a, axes))


def test_transpose_reshape_and_cont_with_shape(sched):
    a = randn(3, 4)
    close(run(sched, lambda ctx, a: ops.cont(ctx, ops.transpose(ctx, a)), a=a), a.T)
    close(run(sched, lambda ctx, a: ops.reshape(ctx, a, (2, 6)), a=a), a.reshape(2, 6))
    close(run(sched, lambda ctx, a: ops.cont(ctx, ops.transpose(ctx, a), (12,)), a=a), a.T.reshape(12))


def test_views_select_rows_and_strided_columns(sched):
    a = randn(6, 8)
    rows = lambda ctx, a: ops.cont(ctx, ops.view(ctx, a, (2, 8), offset=2 * 8 * 4))  # noqa: E731
    close(run(sched, rows, a=a), a[2:4])
    cols = lambda ctx, a: ops.cont(ctx, ops.view(ctx, a, (6, 3), offset=4 * 4, strides=(32, 4)))  # noqa: E731
    close(run(sched, cols, a=a), a[:, 4:7])


def test_cast_to_f16_rounds_like_numpy(sched):
    a = randn(4, 8) * 100
    got = run(sched, lambda ctx, a: ops.cast(ctx, a, "f16"), a=a)
    np.testing.assert_array_equal(got, a.astype(np.float16))


# --------------------------------------------------------------------------- graph reuse


def test_a_graph_is_recomputed_with_new_inputs_without_rebuilding(backend, sched):
    w = randn(4, 8)
    calls = []

    def build(ctx):
        calls.append(1)
        x = ctx.input("x", "f32", (2, 8))
        wt = ctx.input("w", "f32", w.shape)
        return ops.gelu_quick(ctx, ops.mul_mat(ctx, wt, x))

    g = Graph(sched, build, max_nodes=8)
    for i in range(3):
        x = randn(2, 8)
        h = x @ w.T
        (y,) = g.compute({"x": x, "w": w}).values()
        close(y, h / (1 + np.exp(-1.702 * h)), atol=5e-3, rtol=1e-3)
    assert len(calls) == 1
    g.free()


def test_two_graphs_share_one_reserved_scheduler(sched):
    def build_for(n):
        def build(ctx):
            x = ctx.input("x", "f32", (n, 16))
            return {"y": ops.scale(ctx, ops.silu(ctx, x), 2.0)}

        return build

    big = Graph(sched, build_for(64), max_nodes=8)  # worst case, reserved
    small = Graph(sched, build_for(3), max_nodes=8, reserve=False)
    size = sched.buffer_size(sched.backends[-1])
    for g, n in ((small, 3), (big, 64), (small, 3)):
        x = randn(n, 16)
        close(g.compute({"x": x})["y"], 2 * x / (1 + np.exp(-x)), atol=1e-5)
    assert sched.buffer_size(sched.backends[-1]) == size  # never grew past the reservation
    big.free()
    small.free()


def test_a_cache_write_expanded_before_a_read_is_seen_by_the_read(backend, sched):
    """llama.cpp's KV-cache pattern: set_rows into the cache, then attend over a view of it."""
    kv = Context(n_tensors=2)
    cache = kv.new_tensor("f16", (8, 16), "cache")
    kv.allocate(backend)
    cache.set(np.zeros((8, 16), np.float16))

    def build(ctx):
        src = ctx.input("src", "f32", (2, 16))
        idx = ctx.input("idx", "i64", (2,))
        ctx.graph.expand(ops.set_rows(ctx, cache, src, idx))  # the write runs first
        head = ops.view(ctx, cache, (4, 16))  # rows 0..3 of the cache
        return {"read": ops.cast(ctx, head, "f32")}

    g = Graph(sched, build, max_nodes=16)
    src = randn(2, 16)
    got = g.compute({"src": src, "idx": np.array([3, 0], np.int64)})["read"]
    want = np.zeros((4, 16), np.float32)
    want[[3, 0]] = src.astype(np.float16)
    np.testing.assert_array_equal(got, want)
    got = g.compute({"src": src * 2, "idx": np.array([1, 2], np.int64)})["read"]  # reuse: cache keeps rows 0, 3
    want[[1, 2]] = (src * 2).astype(np.float16)
    np.testing.assert_array_equal(got, want)
    g.free()
    kv.free()


def test_weights_keep_numpy_order_shapes_and_exact_bytes(tmp_path, backend):
    import gguf
    tensors = {
        "a.weight": randn(3, 5),  # non-square: catches a missing ne <-> shape reversal
        "a.bias": randn(5).astype(np.float16),
        "b.table": rng.integers(-9, 9, (2, 3, 4)).astype(np.int32),
    }
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "test")
    for name, arr in tensors.items():
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    W = load_weights(path, backend)
    assert set(W) == set(tensors) and W.buffer.usage == "weights"
    for name, arr in tensors.items():
        assert W[name].shape == arr.shape
        got = W[name].get()
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)
    only_a = load_weights(path, backend, select=lambda n: n.startswith("a."))
    assert sorted(only_a) == ["a.bias", "a.weight"]
    with pytest.raises(KeyError, match="b.table"):
        only_a["b.table"]
    t = W["a.weight"]
    W.free()
    with pytest.raises(Exception, match="freed"):
        t.get()
    only_a.free()


# --------------------------------------------------------------------------- properties

from hypothesis import given, settings, strategies as st  # noqa: E402

from ggml_bind.tensor import ne_from_shape, shape_from_ne  # noqa: E402

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@given(shapes)
def test_shape_and_ne_are_reverses_of_each_other(shape):
    ne = ne_from_shape(shape)
    assert len(ne) == 4 and ne[: len(shape)] == list(shape[::-1]) and all(x == 1 for x in ne[len(shape):])
    assert shape_from_ne(ne, len(shape)) == shape


@settings(max_examples=25)
@given(st.data())
def test_permute_matches_numpy_transpose_for_any_axes(sched, data):
    shape = data.draw(shapes)
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    a = rng.standard_normal(shape).astype(np.float32)
    got = run(sched, lambda ctx, a: ops.cont(ctx, ops.permute(ctx, a, axes)), a=a)
    np.testing.assert_array_equal(got, np.transpose(a, axes))


@settings(max_examples=25)
@given(st.data())
def test_add_broadcasts_any_size_one_pattern_like_numpy(sched, data):
    shape = data.draw(shapes)
    b_shape = tuple(d if data.draw(st.booleans()) else 1 for d in shape)
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    np.testing.assert_array_equal(run(sched, lambda ctx, a, b: ops.add(ctx, a, b), a=a, b=b), a + b)


def test_a_graph_allocated_again_after_the_buffers_regrew_uses_the_new_buffers():
    """ggml's allocator keeps tensors that already have data where they are: a graph computed
    again after a bigger one regrew the compute buffers must not keep dangling pointers
    (this crashed before Graph.alloc cleared the placement of its tensors)."""
    sched = Scheduler([Backend("cpu", n_threads=1)], graph_size=16)

    def build_for(n):
        def build(ctx):
            x = ctx.input("x", "f32", (n,))
            return {"y": ops.scale(ctx, ops.add(ctx, x, x), 3.0)}

        return build

    small = Graph(sched, build_for(16), max_nodes=8)
    big = Graph(sched, build_for(1 << 20), max_nodes=8, reserve=False)  # grows the buffers
    x = np.arange(16, dtype=np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(small.compute({"x": x})["y"], 6 * x)
        big.compute({"x": np.ones(1 << 20, np.float32)})
    np.testing.assert_array_equal(small.compute({"x": x})["y"], 6 * x)
    C, ffi = lib.C(), lib.ffi()
    out = small.outputs["y"].ptr
    base = int(ffi.cast("uintptr_t", C.ggml_backend_buffer_get_base(out.buffer)))
    size = int(C.ggml_backend_buffer_get_size(out.buffer))
    assert size >= 4 << 20  # the regrown buffer
    assert base <= int(ffi.cast("uintptr_t", out.data)) < base + size
    small.free()
    big.free()


def test_weights_from_a_big_endian_file_are_swapped_and_blocks_refused(tmp_path, backend):
    import gguf
    from ggml_bind.errors import GGMLTypeError

    w32, w16 = randn(2, 3), randn(4).astype(np.float16)
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(str(path), "test", endianess=gguf.GGUFEndian.BIG)
    writer.add_tensor("w32", w32.copy())  # gguf-py byte-swaps (in place) when writing
    writer.add_tensor("w16", w16.copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    import gguflite  # gguf-py cannot write big-endian blocks; gguflite's writer can

    with gguflite.open(path) as f:
        assert f.endian == ">"
    W = load_weights(path, backend)
    np.testing.assert_array_equal(W["w32"].get(), w32)
    np.testing.assert_array_equal(W["w16"].get(), w16)
    W.free()

    qpath = tmp_path / "be_q.gguf"
    with gguflite.GGUFWriter(qpath, endian=">") as w:
        w.add_tensor("q", (1, 32), int(T.Q8_0), quant.quantize_chunk(int(T.Q8_0), randn(1, 32)))
    with pytest.raises(GGMLTypeError, match="big-endian"):
        load_weights(qpath, backend)


def test_the_documented_usage_runs_on_a_gguflite_file(tmp_path):
    """The example of ggml_bind's docstring, end to end: gguflite writes the GGUF, ggml_bind
    loads it into a WEIGHTS buffer and runs y = gelu(x @ W.T + b) twice on one graph."""
    import gguflite

    w, b = randn(16, 64), randn(16)
    path = tmp_path / "model.gguf"
    with gguflite.GGUFWriter(path) as wr:
        wr.add("general.architecture", "test")
        wr.add_tensor("fc.weight", w.shape, int(T.F32), w)
        wr.add_tensor("fc.bias", b.shape, int(T.F32), b)

    from ggml_bind import load_weights as lw

    sched = Scheduler([Backend("cpu", n_threads=2)])
    W = lw(path, sched.backends[0])

    def build(ctx):
        x = ctx.input("x", "f32", (8, 64))
        return {"y": ops.gelu(ctx, ops.add(ctx, ops.mul_mat(ctx, W["fc.weight"], x), W["fc.bias"]))}

    g = Graph(sched, build, max_nodes=16)
    for scale_ in (1.0, -2.0):
        x = randn(8, 64) * scale_
        want = torch.nn.functional.gelu(torch.from_numpy(x @ w.T + b), approximate="tanh").numpy()
        close(g.compute({"x": x})["y"], want, atol=5e-3, rtol=1e-3)
    g.free()
    W.free()


def test_a_graph_computes_again_after_another_graph_reserved_the_scheduler():
    sched = Scheduler([Backend("cpu", n_threads=1)], graph_size=16)

    def build_for(n):
        return lambda ctx: {"y": ops.scale(ctx, ctx.input("x", "f32", (n,)), 2.0)}

    first = Graph(sched, build_for(8), max_nodes=4)
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(first.compute({"x": x})["y"], 2 * x)
    second = Graph(sched, build_for(1 << 16), max_nodes=4)  # reserve: releases `first`
    np.testing.assert_array_equal(first.compute({"x": x})["y"], 2 * x)  # re-allocated, not an error
    np.testing.assert_array_equal(second.compute({"x": np.ones(1 << 16, np.float32)})["y"], 2)
    first.free()
    second.free()


def test_graphs_on_one_scheduler_can_be_computed_from_several_threads():
    import threading

    sched = Scheduler([Backend("cpu", n_threads=1)], graph_size=16)
    graphs = [Graph(sched, lambda ctx, k=k: {"y": ops.scale(ctx, ctx.input("x", "f32", (64,)), float(k))},
                    max_nodes=4) for k in range(1, 4)]
    errors = []

    def work(k, g):
        try:
            for _ in range(30):
                x = np.full(64, 1.0, np.float32)
                np.testing.assert_array_equal(g.compute({"x": x})["y"], float(k))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k, g)) for k, g in enumerate(graphs, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for g in graphs:
        g.free()
