"""Loading libggml: lazy, checked (version, struct layout, enums), overridable, with clear
errors that say what to install; the cdef generated from the installed headers and cached;
ggml's log routed to Python logging; devices and backends."""
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


from ggml_bind import lib  # noqa: E402

LOADED = lib.load()  # libggml is a test dependency: a missing one fails, never skips

from ggml_bind import Backend, Graph, Scheduler, backend as backend_mod, ops  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_py(code: str, env_extra: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for k in ("GGML_LIBRARY_DIR", "GGML_INCLUDE_DIR", "GGML_BIND_CACHE_DIR"):
        env.pop(k, None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


# --------------------------------------------------------------------------- lazy loading


def test_importing_the_packages_loads_no_c_code():
    proc = run_py(
        """
        import gguflite, ggml_bind
        from ggml_bind import errors, lib, ops, tensor, graph, backend, weights, quant, _cdef
        from ggml_bind import LlavaModel  # lazy export: imports llava, clip, llama, ... (no C)
        from ggml_bind.llava import LlavaModel as direct
        assert LlavaModel is direct
        maps = open("/proc/self/maps").read()
        print("LOADED" if "libggml" in maps else "CLEAN")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "CLEAN"


def test_the_loaded_library_is_the_pinned_version_with_the_expected_layout():
    ffi, C = LOADED.ffi, LOADED.C
    assert LOADED.version == lib.GGML_VERSION == "0.25.3"
    assert ffi.string(C.ggml_version()).decode() == "0.25.3"
    assert ffi.sizeof("struct ggml_tensor") == 336
    for field, off in {"type": 0, "ne": 16, "nb": 48, "op": 80, "src": 152, "data": 248, "name": 256}.items():
        assert ffi.offsetof("struct ggml_tensor", field) == off
    assert ffi.sizeof("struct ggml_init_params") == 24
    assert ffi.sizeof("struct ggml_backend_dev_props") == 56


def test_enum_values_come_from_the_headers_and_match_the_library_names():
    ffi, C = LOADED.ffi, LOADED.C
    for name in ("MUL_MAT", "SET_ROWS", "CONV_2D", "FLASH_ATTN_EXT", "ROPE", "SOFT_MAX"):
        assert ffi.string(C.ggml_op_name(getattr(C, f"GGML_OP_{name}"))).decode() == name
    assert C.GGML_MAX_DIMS == 4 and C.GGML_ROPE_TYPE_NEOX == 2 and C.GGML_DEFAULT_GRAPH_SIZE == 2048


def test_ggml_abort_is_told_not_to_fork_a_debugger():
    assert os.environ.get("GGML_NO_BACKTRACE")


# --------------------------------------------------------------------------- overrides and errors


def copy_libs(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in LOADED.path.parent.iterdir():
        if p.name.startswith("libggml"):
            shutil.copy2(p, dst / p.name)
    return dst


def test_ggml_library_dir_overrides_the_provider(tmp_path):
    libdir = copy_libs(tmp_path / "mylib")
    proc = run_py(
        "from ggml_bind import lib; print(lib.load().path)",
        {"GGML_LIBRARY_DIR": str(libdir), "GGML_INCLUDE_DIR": str(LOADED.include_dir),
         "GGML_BIND_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(libdir / "libggml.so")


@pytest.mark.parametrize(
    "setup, expect",
    [
        ("missing", "is not a folder"),
        ("empty", "no libggml.so"),
        ("no_headers", "headers"),
    ],
)
def test_a_broken_provider_gives_an_error_that_says_what_to_install(tmp_path, setup, expect):
    env = {"GGML_BIND_CACHE_DIR": str(tmp_path / "cache")}
    if setup == "missing":
        env["GGML_LIBRARY_DIR"] = str(tmp_path / "nowhere")
    elif setup == "empty":
        (tmp_path / "empty").mkdir()
        env["GGML_LIBRARY_DIR"] = str(tmp_path / "empty")
    else:
        env["GGML_LIBRARY_DIR"] = str(copy_libs(tmp_path / "a" / "b" / "lib"))
    proc = run_py(
        """
        from ggml_bind import lib, GGMLLoadError
        try:
            lib.load()
        except GGMLLoadError as e:
            print("ERROR:", e)
        """,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERROR:") and expect in proc.stdout
    assert "llama-cpp-python==0.3.36" in proc.stdout or "GGML_INCLUDE_DIR" in proc.stdout


def test_a_library_of_another_ggml_version_is_refused(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a fake libggml")
    src = tmp_path / "fake.c"
    src.write_text('const char * ggml_version(void) { return "0.9.0"; }\n')
    (tmp_path / "lib").mkdir()
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp_path / "lib" / "libggml.so"), str(src)], check=True)
    proc = run_py(
        """
        from ggml_bind import lib, GGMLLoadError
        try:
            lib.load()
        except GGMLLoadError as e:
            print("ERROR:", e)
        """,
        {"GGML_LIBRARY_DIR": str(tmp_path / "lib")},
    )
    assert "is ggml 0.9.0, ggml_bind needs exactly 0.25.3" in proc.stdout, proc.stderr


# --------------------------------------------------------------------------- the generated cdef


def test_the_cdef_is_generated_once_into_the_cache_and_reused(tmp_path):
    cache = tmp_path / "cache"
    code = "from ggml_bind import lib; lib.load(); print('ok')"
    assert run_py(code, {"GGML_BIND_CACHE_DIR": str(cache)}).stdout.strip() == "ok"
    files = sorted(cache.iterdir())
    # the declarations (text) and cffi's pre-parsed out-of-line ABI module (pure Python)
    assert [f.suffix for f in files] == [".py", ".h"] and files[1].name.startswith("ggml-0.25.3-")
    text = files[1].read_text()
    assert "struct ggml_tensor {" in text and "ggml_flash_attn_ext" in text and "#define GGML_MAX_DIMS 4" in text
    assert "ggml_flash_attn_ext" in files[0].read_text()
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert run_py(code, {"GGML_BIND_CACHE_DIR": str(cache)}).stdout.strip() == "ok"
    assert [f.stat().st_mtime_ns for f in files] == mtimes and sorted(cache.iterdir()) == files


def test_the_repository_holds_no_copied_header_or_generated_cdef():
    proc = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = proc.stdout.split()
    assert not [f for f in tracked if f.endswith((".h", ".hpp")) or "cdef" in f and not f.endswith(".py")]


# --------------------------------------------------------------------------- logging


def test_ggml_log_messages_reach_python_logging(caplog):
    C, ffi = LOADED.C, LOADED.ffi
    lib.route_logs()
    with caplog.at_level(logging.DEBUG, logger="ggml_bind.ggml"):
        ctx = C.gguf_init_from_file(b"/nonexistent/x.gguf", {"no_alloc": True, "ctx": ffi.NULL})
    assert ctx == ffi.NULL
    rec = [r for r in caplog.records if r.name == "ggml_bind.ggml" and "failed to open" in r.getMessage()]
    assert rec and rec[0].levelno == logging.ERROR


def test_llama_cpp_shares_the_library_and_route_logs_takes_the_log_back():
    proc = run_py(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="PY %(name)s %(message)s")
        from ggml_bind import lib
        L = lib.load()
        import llama_cpp  # installs its own ggml log callback
        lib.route_logs()
        L.C.gguf_init_from_file(b"/nonexistent/y.gguf", {"no_alloc": True, "ctx": L.ffi.NULL})
        maps = open("/proc/self/maps").read()
        paths = {line.split()[-1] for line in maps.splitlines() if "libggml-base.so" in line}
        print("N_LIBGGML_BASE", len(paths))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "N_LIBGGML_BASE 1" in proc.stdout
    assert "PY ggml_bind.ggml gguf_init_from_file: failed to open" in proc.stderr


# --------------------------------------------------------------------------- devices


def test_the_cpu_device_is_listed_and_takes_a_thread_count():
    devs = backend_mod.devices()
    assert any(d.kind == "cpu" for d in devs)
    be = Backend("cpu", n_threads=1)
    assert be.is_cpu and be.n_threads == 1
    be.set_n_threads(2)
    assert be.n_threads == 2
    feats = lib.cpu_features()
    assert feats and all(isinstance(v, bool) for v in feats.values())


def test_a_scheduler_always_ends_with_the_cpu():
    s = Scheduler([], graph_size=16, n_threads=1)
    assert len(s.backends) == 1 and s.backends[0].is_cpu


def _gpu_matmul(device):
    sched = Scheduler([Backend(device)], graph_size=64)
    w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((8, 128)).astype(np.float32)

    def build(ctx):
        return {"y": ops.mul_mat(ctx, ctx.input("w", "f32", w.shape), ctx.input("x", "f32", x.shape))}

    return Graph(sched, build, max_nodes=8).compute({"w": w, "x": x})["y"], x @ w.T


@pytest.mark.cuda
def test_cuda_backend_computes_like_numpy():
    if not backend_mod.has_cuda():
        pytest.skip("this ggml build has no CUDA backend (rebuild with `make cuda` on a GPU machine)")
    got, want = _gpu_matmul("cuda:0")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=1e-3)
