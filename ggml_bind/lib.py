"""Lazy, checked loading of libggml (cffi ABI mode).

Nothing here runs at import: the first call to :func:`load` (or :func:`ffi` / :func:`C`)

1. finds the library: ``$GGML_LIBRARY_DIR`` if set, else ``llama_cpp/lib`` of the installed
   llama-cpp-python (located with ``importlib.util.find_spec``, without importing it);
2. asks it for ``ggml_version()`` through a one-line cdef and refuses anything but
   :data:`GGML_VERSION`;
3. builds the full cdef from the headers next to it (:mod:`ggml_bind._cdef`, cached);
4. checks that the symbols we call exist, that the struct layouts we read
   (``ggml_tensor``) match the library, and that the enum values cffi took from the
   headers have the names the library gives them (``ggml_op_name``, ``ggml_type_name``);
5. routes ggml's log to the ``logging`` logger ``"ggml_bind.ggml"`` and installs an abort
   callback that only logs (``abort()`` cannot be stopped: the wrappers in
   :mod:`ggml_bind.ops` check arguments before every call so that it is never reached).

Every failure is a :class:`~ggml_bind.errors.GGMLLoadError` that says what to install.

Log and abort callbacks are process-global in ggml: ``import llama_cpp`` installs its own
log callback (last setter wins); call :func:`route_logs` again to take it back.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from gguflite import ggml_locate

from . import _cdef
from .errors import GGMLLoadError

GGML_VERSION = "0.25.3"
PROVIDER = "llama-cpp-python==0.3.36"
_INSTALL_HINT = (
    f"install the ggml provider with `pip install {PROVIDER}` (it builds ggml {GGML_VERSION}), "
    "or point GGML_LIBRARY_DIR at the folder holding libggml.so of your own ggml "
    f"{GGML_VERSION} build"
)
_LIB_NAMES = {
    "linux": ("libggml.so", "libggml.so.0"),
    "darwin": ("libggml.dylib", "libggml.0.dylib"),
    "win32": ("ggml.dll",),
}

log = logging.getLogger("ggml_bind")
ggml_log = logging.getLogger("ggml_bind.ggml")

# Layout of struct ggml_tensor in ggml 0.25.3 (ggml.h:685-717), checked at load.
TENSOR_SIZE = 336
TENSOR_OFFSETS = {
    "type": 0, "buffer": 8, "ne": 16, "nb": 48, "op": 80, "op_params": 84, "flags": 148,
    "src": 152, "view_src": 232, "view_offs": 240, "data": 248, "name": 256, "extra": 320,
}
_OBJECT_SIZE = 32  # struct ggml_object (private, ggml.c) precedes each tensor in a context

# Functions every part of ggml_bind calls; a library lacking one is refused at load.
REQUIRED_SYMBOLS = (
    "ggml_version", "ggml_init", "ggml_free", "ggml_tensor_overhead", "ggml_graph_overhead_custom",
    "ggml_new_tensor", "ggml_nbytes", "ggml_blck_size", "ggml_type_size", "ggml_row_size",
    "ggml_set_name", "ggml_get_name", "ggml_new_graph_custom", "ggml_build_forward_expand",
    "ggml_mul_mat", "ggml_flash_attn_ext", "ggml_rope_ext", "ggml_soft_max_ext", "ggml_set_rows",
    "ggml_quantize_chunk", "ggml_get_type_traits", "ggml_log_set", "ggml_set_abort_callback",
    "ggml_backend_cpu_init", "ggml_backend_cpu_set_n_threads", "ggml_backend_sched_new",
    "ggml_backend_sched_graph_compute", "ggml_backend_alloc_ctx_tensors_from_buft",
    "ggml_backend_tensor_set", "ggml_backend_tensor_get", "ggml_backend_dev_count",
)


@dataclass(frozen=True)
class Loaded:
    """The loaded library: ``ffi`` (cffi.FFI with the generated cdef) and ``C`` (the lib)."""

    ffi: object
    C: object
    path: Path
    include_dir: Path
    version: str


_lock = threading.Lock()
_loaded: Loaded | None = None
_callbacks: dict[str, object] = {}  # cffi callbacks must stay referenced while installed


def library_dir() -> Path:
    """The folder holding libggml: ``$GGML_LIBRARY_DIR`` or llama-cpp-python's ``lib``."""
    try:
        return ggml_locate.library_dir()
    except ggml_locate.LibraryNotFound as e:
        raise GGMLLoadError(f"{e}; {_INSTALL_HINT}") from e


def library_path(lib_dir: Path) -> Path:
    try:
        return ggml_locate.library_path(lib_dir, _LIB_NAMES)
    except ggml_locate.LibraryNotFound as e:
        raise GGMLLoadError(f"{e}; {_INSTALL_HINT}") from e


def _library_version(path: Path) -> str:
    try:
        return ggml_locate.library_version(path)
    except ggml_locate.LibraryNotFound as e:
        raise GGMLLoadError(f"{e} (too old for ggml_bind?); {_INSTALL_HINT}") from e


def load() -> Loaded:
    """Load and check libggml once per process; later calls return the same object."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
    return _loaded


def ffi():
    return load().ffi


def C():
    return load().C


def _load() -> Loaded:
    import cffi

    # ggml_abort forks gdb/lldb for a backtrace unless this is set (ggml.c:159).
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    lib_dir = library_dir()
    path = library_path(lib_dir)
    version = _library_version(path)
    if version != GGML_VERSION:
        raise GGMLLoadError(
            f"{path} is ggml {version}, ggml_bind needs exactly {GGML_VERSION}; {_INSTALL_HINT}"
        )
    include_dir = _cdef.find_include_dir(lib_dir)
    try:
        ffi_ = _cdef.load_ffi(include_dir, version)
    except (cffi.CDefError, cffi.FFIError) as e:
        raise GGMLLoadError(f"cffi cannot parse the declarations generated from {include_dir}: {e}") from e
    try:
        C_ = ffi_.dlopen(str(path))
    except OSError as e:
        hint = _INSTALL_HINT
        if "cuda" in str(e).lower():
            hint = (
                "this is a CUDA build of ggml and the CUDA driver/runtime is missing here; install "
                "the NVIDIA driver, or reinstall the CPU provider with `pip install --force-reinstall "
                f"--no-cache-dir {PROVIDER}`"
            )
        raise GGMLLoadError(f"cannot load {path}: {e}; {hint}") from e
    missing = [s for s in REQUIRED_SYMBOLS if not has_symbol(C_, s)]
    if missing:
        raise GGMLLoadError(f"{path} lacks {', '.join(missing)}; {_INSTALL_HINT}")
    _check_layout(ffi_, C_, path)
    _check_enums(ffi_, C_, path)
    loaded = Loaded(ffi_, C_, path, include_dir, version)
    _install_callbacks(loaded)  # before the registry is touched: CUDA init logs
    if C_.ggml_backend_dev_count() == 0:  # a GGML_BACKEND_DL build: backends are plugins
        C_.ggml_backend_load_all_from_path(str(lib_dir).encode())
    if C_.ggml_backend_dev_count() == 0:
        raise GGMLLoadError(f"{path} has no backend at all (not even the CPU); {_INSTALL_HINT}")
    C_.ggml_cpu_init()
    log.debug("loaded ggml %s from %s (headers %s)", version, path, include_dir)
    return loaded


def has_symbol(C_, name: str) -> bool:
    """True if the loaded library exports ``name`` (ABI mode fails only on access)."""
    try:
        getattr(C_, name)
    except (AttributeError, NotImplementedError):
        return False
    return True


def _check_layout(ffi_, C_, path: Path) -> None:
    """Compare the struct layout cffi computed from the headers with the library's."""
    def fail(what):
        raise GGMLLoadError(f"struct ggml_tensor layout mismatch with {path}: {what}; {_INSTALL_HINT}")

    size = ffi_.sizeof("struct ggml_tensor")
    if size != TENSOR_SIZE:
        fail(f"sizeof is {size}, expected {TENSOR_SIZE}")
    for field, off in TENSOR_OFFSETS.items():
        if ffi_.offsetof("struct ggml_tensor", field) != off:
            fail(f"offsetof({field}) is {ffi_.offsetof('struct ggml_tensor', field)}, expected {off}")
    if C_.ggml_tensor_overhead() != _OBJECT_SIZE + size:
        fail(f"ggml_tensor_overhead() is {C_.ggml_tensor_overhead()}, expected {_OBJECT_SIZE + size}")
    # Let the library fill a tensor and read it back through our view of the struct.
    params = ffi_.new("struct ggml_init_params *", {"mem_size": 4 * 1024, "mem_buffer": ffi_.NULL, "no_alloc": False})
    ctx = C_.ggml_init(params[0])
    if ctx == ffi_.NULL:
        raise GGMLLoadError("ggml_init failed while checking the library")
    try:
        t = C_.ggml_new_tensor_3d(ctx, C_.GGML_TYPE_F32, 5, 3, 2)
        C_.ggml_set_name(t, b"probe")
        u = C_.ggml_add(ctx, t, t)
        addr = lambda p: int(ffi_.cast("uintptr_t", p))  # noqa: E731
        if list(t.ne) != [5, 3, 2, 1] or list(t.nb) != [4, 20, 60, 120]:
            fail(f"ne {list(t.ne)} / nb {list(t.nb)} read back wrong")
        if t.type != C_.GGML_TYPE_F32 or C_.ggml_nbytes(t) != 120:
            fail("type or nbytes read back wrong")
        if addr(C_.ggml_get_data(t)) != addr(t.data) or addr(C_.ggml_get_name(t)) - addr(t) != TENSOR_OFFSETS["name"]:
            fail("data or name read back wrong")
        if u.op != C_.GGML_OP_ADD or addr(u.src[0]) != addr(t) or addr(u.src[1]) != addr(t):
            fail("op or src read back wrong")
    finally:
        C_.ggml_free(ctx)


def _check_enums(ffi_, C_, path: Path) -> None:
    """The enum values cffi read from the headers must carry the library's names."""
    checks = [
        ("enum ggml_op", "GGML_OP_", C_.ggml_op_name, "GGML_OP_COUNT", str.upper),
        ("enum ggml_unary_op", "GGML_UNARY_OP_", C_.ggml_unary_op_name, "GGML_UNARY_OP_COUNT", str.upper),
    ]
    bad = []
    for ctype, prefix, namer, count, norm in checks:
        for name, value in ffi_.typeof(ctype).relements.items():
            if name == count:
                continue
            got = norm(ffi_.string(namer(value)).decode())
            if got != name[len(prefix):]:
                bad.append(f"{name}={value} is {got!r} in the library")
    for name, value in ffi_.typeof("enum ggml_type").relements.items():
        if name == "GGML_TYPE_COUNT" or C_.ggml_blck_size(value) == 0:  # removed ids
            continue
        got = ffi_.string(C_.ggml_type_name(value)).decode().upper()
        if got != name[len("GGML_TYPE_"):]:
            bad.append(f"{name}={value} is {got!r} in the library")
    if bad:
        raise GGMLLoadError(f"headers and library {path} disagree: {'; '.join(bad[:5])}; {_INSTALL_HINT}")


# --------------------------------------------------------------------------- callbacks

_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_pending = threading.local()  # partial lines: ggml logs pieces and continuations (level 5)


def _on_log(level, text, _user_data):
    try:
        s = _loaded_ffi_string(text)
        if level == 5:  # GGML_LOG_LEVEL_CONT: continue the previous record
            level = getattr(_pending, "level", logging.DEBUG)
        else:
            level = _LEVELS.get(level, logging.DEBUG)
        buf = getattr(_pending, "buf", "") + s
        if buf.endswith("\n"):
            _pending.buf = ""
            ggml_log.log(level, "%s", buf.rstrip("\n"))
        else:
            _pending.buf = buf
        _pending.level = level
    except Exception:  # a callback must never raise into C
        pass


def _on_abort(message):
    try:
        msg = _loaded_ffi_string(message)
        log.critical(
            "ggml is aborting the process: %s (an argument check is missing in ggml_bind; "
            "please report this)", msg
        )
        for h in logging.getLogger().handlers + log.handlers:
            h.flush()
    except Exception:
        pass


def _loaded_ffi_string(p) -> str:
    return _callbacks["ffi"].string(p).decode("utf-8", "replace") if p else ""


def _install_callbacks(loaded: Loaded) -> None:
    _callbacks["ffi"] = loaded.ffi
    _callbacks["C"] = loaded.C
    _callbacks["log"] = loaded.ffi.callback("ggml_log_callback", _on_log)
    _callbacks["abort"] = loaded.ffi.callback("ggml_abort_callback_t", _on_abort)
    loaded.C.ggml_set_abort_callback(_callbacks["abort"])
    loaded.C.ggml_log_set(_callbacks["log"], loaded.ffi.NULL)


def route_logs() -> None:
    """(Re)install the callback that sends ggml's log to the ``"ggml_bind.ggml"`` logger,
    e.g. after ``import llama_cpp`` replaced it with its own."""
    loaded = load()
    loaded.C.ggml_log_set(_callbacks["log"], loaded.ffi.NULL)


def cpu_features() -> dict[str, bool]:
    """``ggml_cpu_has_*`` flags of the loaded CPU backend (what the build can use)."""
    C_ = C()
    out = {}
    for name in dir(C_):
        if name.startswith("ggml_cpu_has_") and has_symbol(C_, name):
            out[name[len("ggml_cpu_has_"):]] = bool(getattr(C_, name)())
    return out
