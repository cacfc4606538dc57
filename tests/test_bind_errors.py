"""The wrong-call battery: each misuse that would make ggml abort() the process is refused in
Python with a GGMLError, in this very process, and the interpreter keeps working afterwards
(the last test computes a graph after all of them)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ggml_bind.errors import (
    GGMLBackendError,
    GGMLError,
    GGMLFreedError,
    GGMLLayoutError,
    GGMLMemoryError,
    GGMLShapeError,
    GGMLTypeError,
)

from ggml_bind import lib  # noqa: E402

lib.load()  # libggml is a test dependency (llama-cpp-python): a missing one fails, never skips

from ggml_bind import Backend, Context, Graph, Scheduler, backend as backend_mod, ops  # noqa: E402


@pytest.fixture(scope="module")
def be():
    return Backend("cpu", n_threads=1)


@pytest.fixture(scope="module")
def sched(be):
    return Scheduler([be], graph_size=256)


@pytest.fixture
def ctx():
    c = Context(n_tensors=64)
    yield c
    c.free()


def t(ctx, shape, type_="f32", name=None):
    return ctx.new_tensor(type_, shape, name)


# --------------------------------------------------------------------------- shapes

SHAPE_CASES = {
    "add with mismatched shapes": lambda c: ops.add(c, t(c, (4, 8)), t(c, (3, 8))),
    "mul with a larger second operand": lambda c: ops.mul(c, t(c, (2, 8)), t(c, (4, 8))),
    "mul_mat with different inner dims": lambda c: ops.mul_mat(c, t(c, (4, 8)), t(c, (3, 9))),
    "mul_mat with non-dividing batches": lambda c: ops.mul_mat(c, t(c, (3, 4, 8)), t(c, (4, 2, 8))),
    "concat with other dims differing": lambda c: ops.concat(c, t(c, (2, 3)), t(c, (2, 4)), 0),
    "concat on an axis out of range": lambda c: ops.concat(c, t(c, (2, 3)), t(c, (2, 3)), 2),
    "reshape to a different element count": lambda c: ops.reshape(c, t(c, (2, 3)), (7,)),
    "cont to a different element count": lambda c: ops.cont(c, t(c, (2, 3)), (5,)),
    "view past the end": lambda c: ops.view(c, t(c, (4, 8)), (2, 8), offset=3 * 32),
    "view at a negative offset": lambda c: ops.view(c, t(c, (4, 8)), (2, 8), offset=-4),
    "permute with repeated axes": lambda c: ops.permute(c, t(c, (2, 3, 4)), (0, 0, 1)),
    "permute with too few axes": lambda c: ops.permute(c, t(c, (2, 3, 4)), (1, 0)),
    "get_rows with a 2-D index for a 2-D table": lambda c: ops.get_rows(c, t(c, (10, 8)), t(c, (2, 3), "i32")),
    "set_rows with rows of another width": lambda c: ops.set_rows(c, t(c, (8, 16), "f16"), t(c, (2, 8)), t(c, (2,), "i64")),
    "set_rows with fewer indices than rows": lambda c: ops.set_rows(c, t(c, (8, 16), "f16"), t(c, (3, 16)), t(c, (2,), "i64")),
    "soft_max mask narrower than the input": lambda c: ops.soft_max_ext(c, t(c, (4, 6)), t(c, (4, 5))),
    "soft_max mask with fewer rows": lambda c: ops.soft_max_ext(c, t(c, (4, 6)), t(c, (3, 6))),
    "rope with too few positions": lambda c: ops.rope_ext(c, t(c, (5, 2, 16)), t(c, (4,), "i32"), 16),
    "rope with odd n_dims": lambda c: ops.rope_ext(c, t(c, (5, 2, 16)), t(c, (5,), "i32"), 15),
    "rope with n_dims past the head": lambda c: ops.rope_ext(c, t(c, (5, 2, 16)), t(c, (5,), "i32"), 32),
    "flash_attn with different head dims": lambda c: ops.flash_attn_ext(
        c, t(c, (1, 2, 3, 16)), t(c, (1, 2, 5, 8), "f16"), t(c, (1, 2, 5, 8), "f16")
    ),
    "flash_attn with q heads not a multiple of kv heads": lambda c: ops.flash_attn_ext(
        c, t(c, (1, 3, 3, 16)), t(c, (1, 2, 5, 16), "f16"), t(c, (1, 2, 5, 16), "f16")
    ),
    "flash_attn with a mask of the wrong length": lambda c: ops.flash_attn_ext(
        c, t(c, (1, 2, 3, 16)), t(c, (1, 2, 5, 16), "f16"), t(c, (1, 2, 5, 16), "f16"), t(c, (3, 4), "f16")
    ),
    "conv_2d with mismatched channels": lambda c: ops.conv_2d(c, t(c, (4, 3, 2, 2), "f16"), t(c, (1, 2, 8, 8))),
    "conv_2d with a kernel larger than the image": lambda c: ops.conv_2d(c, t(c, (4, 3, 9, 9), "f16"), t(c, (1, 3, 8, 8))),
    "swiglu with different shapes": lambda c: ops.swiglu_split(c, t(c, (2, 8)), t(c, (2, 4))),
    "a tensor with too many dims": lambda c: t(c, (1, 2, 3, 4, 5)),
    "a tensor with no dims": lambda c: t(c, ()),
    "a tensor with a zero dim": lambda c: t(c, (0, 4)),
    "a quantized tensor with a partial block": lambda c: t(c, (2, 40), "q8_0"),
    "cast to a block type with a partial block": lambda c: ops.cast(c, t(c, (2, 40)), "q8_0"),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES), ids=list(SHAPE_CASES))
def test_shape_misuse_raises_a_shape_error(ctx, case):
    with pytest.raises(GGMLShapeError) as info:
        SHAPE_CASES[case](ctx)
    assert isinstance(info.value, GGMLError) and str(info.value)


TYPE_CASES = {
    "get_rows with float indices": lambda c: ops.get_rows(c, t(c, (10, 8)), t(c, (3,))),
    "set_rows with float indices": lambda c: ops.set_rows(c, t(c, (8, 16), "f16"), t(c, (2, 16)), t(c, (2,))),
    "set_rows from an integer source": lambda c: ops.set_rows(c, t(c, (8, 16), "f16"), t(c, (2, 16), "i32"), t(c, (2,), "i64")),
    "rope with float positions": lambda c: ops.rope_ext(c, t(c, (5, 2, 16)), t(c, (5,)), 16),
    "flash_attn with an F32 mask": lambda c: ops.flash_attn_ext(
        c, t(c, (1, 2, 3, 16)), t(c, (1, 2, 5, 16), "f16"), t(c, (1, 2, 5, 16), "f16"), t(c, (3, 5))
    ),
    "soft_max with an integer mask": lambda c: ops.soft_max_ext(c, t(c, (4, 6)), t(c, (4, 6), "i32")),
    "concat of different types": lambda c: ops.concat(c, t(c, (2, 3)), t(c, (2, 3), "f16"), 0),
    "add of integer tensors": lambda c: ops.add(c, t(c, (2, 3), "i32"), t(c, (2, 3), "i32")),
    "norm of an F16 tensor": lambda c: ops.norm(c, t(c, (2, 8), "f16")),
    "mul_mat with quantized activations": lambda c: ops.mul_mat(c, t(c, (4, 32)), t(c, (2, 32), "q8_0")),
    "an unknown type name": lambda c: t(c, (2, 3), "f8"),
    "a removed type id": lambda c: t(c, (2, 32), 4),
    "a non-tensor operand": lambda c: ops.add(c, t(c, (2, 3)), np.ones((2, 3), np.float32)),
    "a non-numeric scale": lambda c: ops.scale(c, t(c, (2, 3)), "big"),
}


@pytest.mark.parametrize("case", list(TYPE_CASES), ids=list(TYPE_CASES))
def test_type_misuse_raises_a_type_error(ctx, case):
    with pytest.raises(GGMLTypeError):
        TYPE_CASES[case](ctx)


def test_layout_misuse_raises_a_layout_error(ctx):
    a = t(ctx, (4, 6))
    p = ops.permute(ctx, a, (1, 0))
    with pytest.raises(GGMLLayoutError):
        ops.reshape(ctx, p, (24,))
    with pytest.raises(GGMLLayoutError):
        ops.mul_mat(ctx, ops.transpose(ctx, a), t(ctx, (3, 4)))
    with pytest.raises(GGMLLayoutError):
        ops.soft_max_ext(ctx, p)
    with pytest.raises(GGMLLayoutError):
        ops.view(ctx, a, (2, 3), strides=(24, 8))  # last stride must be the element size


def test_a_full_context_refuses_new_tensors_instead_of_crashing():
    with Context(n_tensors=2) as c:
        a = t(c, (4,))
        ops.scale(c, a, 2.0)
        with pytest.raises(GGMLMemoryError):
            t(c, (4,))
        with pytest.raises(GGMLMemoryError):
            ops.conv_2d(c, a, a)


def test_a_tensor_name_longer_than_ggml_allows_is_refused(ctx):
    with pytest.raises(GGMLError):
        t(ctx, (2,), name="x" * 64)


# --------------------------------------------------------------------------- ownership


def test_tensors_of_a_freed_context_raise_instead_of_touching_freed_memory():
    c = Context(n_tensors=4)
    a = t(c, (2, 3), name="a")
    c.free()
    c.free()  # idempotent: ggml_free ran exactly once
    for use in (lambda: a.shape, lambda: a.name, lambda: a.get(), lambda: a.set(np.zeros((2, 3), np.float32))):
        with pytest.raises(GGMLFreedError):
            use()
    with Context(n_tensors=4) as other:
        with pytest.raises(GGMLFreedError):
            ops.add(other, a, a)
    with pytest.raises(GGMLFreedError):
        ops.scale(c, a, 1.0)
    assert "freed" in repr(a)


def test_weights_stay_valid_while_their_context_lives_even_without_other_references(be):
    c = Context(n_tensors=2)
    w = t(c, (3,), name="w")
    c.allocate(be)
    w.set(np.arange(3, dtype=np.float32))
    del c  # the Tensor keeps its context (and buffer) alive
    np.testing.assert_array_equal(w.get(), [0, 1, 2])


def test_graph_tensors_are_invalid_once_another_graph_takes_the_scheduler(sched):
    def build(ctx):
        return {"y": ops.scale(ctx, ctx.input("x", "f32", (4,)), 2.0)}

    g1 = Graph(sched, build, max_nodes=8)
    g2 = Graph(sched, build, max_nodes=8)
    g1.compute({"x": np.ones(4, np.float32)})
    g2.compute({"x": np.ones(4, np.float32)})
    with pytest.raises(GGMLFreedError):
        g1.outputs["y"].get()
    np.testing.assert_array_equal(g1.compute({"x": np.ones(4, np.float32)})["y"], 2)  # re-allocates
    g1.free()
    with pytest.raises(GGMLFreedError):
        g1.compute({"x": np.ones(4, np.float32)})
    g2.free()


# --------------------------------------------------------------------------- data and inputs


def test_copies_in_and_out_are_checked(be):
    with Context(n_tensors=4) as c:
        a = t(c, (2, 3), name="a")
        q = t(c, (2, 32), "q8_0", name="q")
        i = t(c, (2,), "i32", name="i")
        with pytest.raises(GGMLError, match="no data"):
            a.get()
        c.allocate(be)
        with pytest.raises(GGMLShapeError):
            a.set(np.zeros((3, 2), np.float32))
        with pytest.raises(GGMLShapeError):
            a.set(np.zeros(7, np.float32))
        with pytest.raises(GGMLTypeError):
            i.set(np.zeros(2, np.float32))  # float -> int is not a same-kind cast
        with pytest.raises(GGMLShapeError):
            q.set(np.zeros((2, 33), np.uint8))  # Q8_0 rows of 32 take 34 bytes
        with pytest.raises(GGMLShapeError, match="do not fit"):
            i.set(np.array([1, 2**40], np.int64))  # would wrap in I32
        i.set(np.array([1, -2], np.int64))  # fits: a checked narrowing
        q.set(np.zeros((2, 34), np.uint8))
        a.set(np.ones((2, 3)))  # float64 -> F32 is a same-kind cast
        np.testing.assert_array_equal(a.get(), 1)


def test_graph_inputs_are_checked_by_name_shape_and_index_range(sched):
    table = np.arange(20, dtype=np.float32).reshape(5, 4)

    def build(ctx):
        tab = ctx.input("table", "f32", table.shape)
        idx = ctx.input("idx", "i32", (3,))
        return {"rows": ops.get_rows(ctx, tab, idx)}

    g = Graph(sched, build, max_nodes=8)
    with pytest.raises(GGMLError, match="missing"):
        g.compute({"table": table})
    with pytest.raises(GGMLError, match="unknown"):
        g.compute({"table": table, "idx": np.zeros(3, np.int32), "extra": table})
    with pytest.raises(GGMLShapeError):
        g.compute({"table": table, "idx": np.zeros(4, np.int32)})
    for bad in ([0, 5, 1], [-1, 0, 0]):  # out-of-range rows would trip a GGML_ASSERT in the kernel
        with pytest.raises(GGMLShapeError, match="index input"):
            g.compute({"table": table, "idx": np.array(bad, np.int32)})
    got = g.compute({"table": table, "idx": np.array([4, 0, 2], np.int32)})["rows"]
    np.testing.assert_array_equal(got, table[[4, 0, 2]])
    g.free()


def test_indices_reached_through_a_view_of_an_input_are_range_checked(sched):
    def build(ctx):
        tab = ctx.input("table", "f32", (5, 4))
        idx = ctx.input("idx", "i32", (2, 3))
        return {"rows": ops.get_rows(ctx, tab, ops.reshape(ctx, idx, (6,)))}

    g = Graph(sched, build, max_nodes=8)
    with pytest.raises(GGMLShapeError, match="index input"):
        g.compute({"table": np.zeros((5, 4), np.float32), "idx": np.array([[0, 1, 2], [3, 4, 5]], np.int32)})
    g.free()


def test_set_rows_indices_are_range_checked_against_the_cache(be, sched):
    kv = Context(n_tensors=2)
    cache = kv.new_tensor("f16", (4, 8), "cache")
    kv.allocate(be)

    def build(ctx):
        src = ctx.input("src", "f32", (2, 8))
        idx = ctx.input("idx", "i64", (2,))
        return {"w": ops.set_rows(ctx, cache, src, idx)}

    g = Graph(sched, build, max_nodes=8)
    with pytest.raises(GGMLShapeError):
        g.compute({"src": np.ones((2, 8), np.float32), "idx": np.array([1, 4], np.int64)})
    g.free()


def test_a_graph_with_an_op_no_backend_supports_is_refused_at_build(sched):
    def build(ctx):
        w = ctx.input("w", "f32", (4, 8))
        x = ctx.input("x", "f16", (2, 8))  # F32 weights take F32 activations on the CPU
        return ops.mul_mat(ctx, w, x)

    with pytest.raises(GGMLError, match="no backend"):
        Graph(sched, build, max_nodes=8)


def test_a_graph_larger_than_max_nodes_is_refused(sched):
    def build(ctx):
        x = ctx.input("x", "f32", (4,))
        for _ in range(6):
            x = ops.scale(ctx, x, 1.0)
        return x

    with pytest.raises(GGMLError, match="max_nodes"):
        Graph(sched, build, max_nodes=4)  # 6 nodes
    with pytest.raises(GGMLError):
        Graph(sched, lambda ctx: None, max_nodes=8)


def test_a_graph_over_unallocated_weights_is_refused_at_build(sched):
    w_ctx = Context(n_tensors=1)
    w = t(w_ctx, (4,), name="w")  # never allocated: would silently read garbage

    with pytest.raises(GGMLError, match="no data"):
        Graph(sched, lambda ctx: ops.mul(ctx, ctx.input("x", "f32", (4,)), w), max_nodes=4)
    with pytest.raises(GGMLError, match="no data"):
        Graph(sched, lambda ctx: ops.scale(ctx, ctx.new_tensor("f32", (4,), "plain"), 1.0), max_nodes=4)
    w_ctx.free()


def test_intermediate_results_of_another_graph_are_refused(sched):
    g1 = Graph(sched, lambda ctx: ops.scale(ctx, ctx.input("x", "f32", (4,)), 2.0), max_nodes=4)
    with pytest.raises(GGMLError, match="another graph"):
        Graph(sched, lambda ctx: ops.scale(ctx, next(iter(g1.outputs.values())), 2.0), max_nodes=4)
    g1.free()


def test_two_inputs_with_one_name_are_refused_at_build(sched):
    def build(ctx):
        return ops.add(ctx, ctx.input("x", "f32", (2,)), ctx.input("x", "f32", (2,)))

    with pytest.raises(GGMLError, match="distinct"):
        Graph(sched, build, max_nodes=8)


def test_an_input_no_output_uses_is_refused_at_build(sched):
    def build(ctx):
        ctx.input("unused", "f32", (2,))
        return ops.scale(ctx, ctx.input("x", "f32", (2,)), 2.0)

    with pytest.raises(GGMLError, match="unused"):
        Graph(sched, build, max_nodes=8)


# --------------------------------------------------------------------------- devices


def test_asking_for_cuda_without_it_says_how_to_get_it():
    if backend_mod.has_cuda():
        pytest.skip("this ggml build has CUDA")
    with pytest.raises(GGMLBackendError, match="make cuda"):
        Backend("cuda")
    with pytest.raises(GGMLBackendError):
        Backend("cuda:1")


def test_unknown_devices_and_bad_thread_counts_are_refused(be):
    with pytest.raises(GGMLBackendError, match="unknown device"):
        Backend("tpu")
    with pytest.raises(GGMLBackendError):
        be.set_n_threads(0)


# --------------------------------------------------------------------------- the interpreter lives


def test_after_all_the_misuse_the_interpreter_still_computes(sched):
    g = Graph(sched, lambda ctx: ops.silu(ctx, ctx.input("x", "f32", (3,))), max_nodes=4)
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    (y,) = g.compute({"x": x}).values()
    np.testing.assert_allclose(y, x / (1 + np.exp(-x)), rtol=1e-6)
    g.free()


def test_without_the_checks_ggml_really_aborts_and_the_abort_is_logged():
    """What the checks prevent: the raw C call kills the process (in a child here)."""
    code = textwrap.dedent(
        """
        import logging
        logging.basicConfig(level=logging.INFO)
        from ggml_bind import lib
        C, ffi = lib.C(), lib.ffi()
        ctx = C.ggml_init({"mem_size": 1 << 16, "mem_buffer": ffi.NULL, "no_alloc": True})
        a = C.ggml_new_tensor_2d(ctx, C.GGML_TYPE_F32, 8, 4)
        b = C.ggml_new_tensor_2d(ctx, C.GGML_TYPE_F32, 8, 3)
        C.ggml_add(ctx, a, b)
        print("survived")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "survived" not in proc.stdout
    assert "ggml_can_repeat" in proc.stderr and "ggml is aborting" in proc.stderr


def test_a_graph_keeps_its_weights_alive_and_refuses_to_run_on_freed_ones(be, sched):
    import gc
    import weakref

    def make():
        w_ctx = Context(n_tensors=1)
        w = t(w_ctx, (4,), name="w")
        w_ctx.allocate(be)
        w.set(np.full(4, 3.0, np.float32))
        return weakref.ref(w_ctx), Graph(sched, lambda ctx: ops.mul(ctx, ctx.input("x", "f32", (4,)), w), max_nodes=4)

    w_ref, g = make()
    gc.collect()  # only the graph refers to the weights now: they must survive
    assert w_ref() is not None
    (y,) = g.compute({"x": np.ones(4, np.float32)}).values()
    np.testing.assert_array_equal(y, 3.0)
    w_ref().free()  # explicitly freed: the graph refuses instead of reading freed memory
    with pytest.raises(GGMLFreedError):
        g.compute({"x": np.ones(4, np.float32)})
    g.free()


# --------------------------------------------------------------------------- random calls

from hypothesis import given, settings, strategies as st  # noqa: E402

small_shapes = st.lists(st.integers(1, 3), min_size=1, max_size=4).map(tuple)


def pad4(shape):
    return (1,) * (4 - len(shape)) + tuple(shape)


def compute(sched, fn, **arrays):
    def build(ctx):
        return {"out": fn(ctx, **{n: ctx.input(n, "f32", a.shape) for n, a in arrays.items()})}

    g = Graph(sched, build, max_nodes=8)
    try:
        return g.compute(arrays)["out"]
    finally:
        g.free()


@settings(max_examples=40)
@given(small_shapes, small_shapes)
def test_add_on_random_shapes_either_computes_numpy_tiling_or_raises(sched, sa, sb):
    a = np.random.default_rng(0).standard_normal(sa).astype(np.float32)
    b = np.random.default_rng(1).standard_normal(sb).astype(np.float32)
    a4, b4 = pad4(sa), pad4(sb)
    if all(x % y == 0 for x, y in zip(a4, b4)):
        want = (a.reshape(a4) + np.tile(b.reshape(b4), [x // y for x, y in zip(a4, b4)]))
        got = compute(sched, lambda ctx, a, b: ops.add(ctx, a, b), a=a, b=b)
        np.testing.assert_allclose(got.reshape(a4), want, rtol=1e-6)
    else:
        with pytest.raises(GGMLShapeError):
            compute(sched, lambda ctx, a, b: ops.add(ctx, a, b), a=a, b=b)


@settings(max_examples=40)
@given(small_shapes.filter(lambda s: len(s) >= 2), small_shapes.filter(lambda s: len(s) >= 2))
def test_mul_mat_on_random_shapes_either_computes_batched_products_or_raises(sched, sa, sb):
    a = np.random.default_rng(2).standard_normal(sa).astype(np.float32)
    b = np.random.default_rng(3).standard_normal(sb).astype(np.float32)
    (a3, a2, m, k), (b3, b2, n, k2) = pad4(sa), pad4(sb)
    if k == k2 and b2 % a2 == 0 and b3 % a3 == 0:
        A, B = a.reshape(a3, a2, m, k), b.reshape(b3, b2, n, k)
        want = np.empty((b3, b2, n, m), np.float64)
        for i3 in range(b3):
            for i2 in range(b2):
                want[i3, i2] = B[i3, i2] @ A[i3 // (b3 // a3), i2 // (b2 // a2)].T
        got = compute(sched, lambda ctx, a, b: ops.mul_mat(ctx, a, b), a=a, b=b)
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-5)
    else:
        with pytest.raises(GGMLShapeError):
            compute(sched, lambda ctx, a, b: ops.mul_mat(ctx, a, b), a=a, b=b)
