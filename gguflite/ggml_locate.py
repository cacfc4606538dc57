"""Where the installed libggml lives: shared by ggml_bind (which drives libggml) and
gguflite.quant.grids (which reads the grid IQ codebooks out of libggml-base).

    d = library_dir()                          # $GGML_LIBRARY_DIR, else llama-cpp-python's lib/
    p = library_path(d, {"linux": ("libggml.so", ...), ...})   # first name present, per platform
    v = library_version(p)                     # ggml_version() through a one-line cdef

Nothing is imported or loaded until called.  Each function raises ``LibraryNotFound`` (an
OSError) saying what is wrong; callers add their own install hint and exception type.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["LibraryNotFound", "library_dir", "library_path", "library_version"]


class LibraryNotFound(OSError):
    """No usable libggml where we looked."""


def library_dir() -> Path:
    """The folder holding libggml: ``$GGML_LIBRARY_DIR`` or the installed llama_cpp's ``lib``."""
    env = os.environ.get("GGML_LIBRARY_DIR")
    if env:
        if not Path(env).is_dir():
            raise LibraryNotFound(f"GGML_LIBRARY_DIR={env!r} is not a folder")
        return Path(env)
    try:
        spec = importlib.util.find_spec("llama_cpp")  # located, not imported
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LibraryNotFound("libggml not found: llama_cpp is not installed")
    d = Path(list(spec.submodule_search_locations)[0]) / "lib"
    if not d.is_dir():
        raise LibraryNotFound(f"libggml not found: {d} does not exist (broken llama-cpp-python?)")
    return d


def library_path(lib_dir: Path, names_by_platform: dict[str, tuple[str, ...]]) -> Path:
    """The first of this platform's file names (Linux's when the platform is not listed)
    present in ``lib_dir``."""
    names = names_by_platform.get(sys.platform, names_by_platform["linux"])
    for name in names:
        if (lib_dir / name).is_file():
            return lib_dir / name
    raise LibraryNotFound(f"no {' or '.join(names)} in {lib_dir}")


def library_version(path: Path) -> str:
    """``ggml_version()`` of the library at ``path``, asked through a one-line cdef."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef("const char * ggml_version(void);")
    try:
        lib = ffi.dlopen(str(path))
    except OSError as e:
        raise LibraryNotFound(f"cannot load {path}: {e}") from e
    try:  # left open: every caller loads the library next
        return ffi.string(lib.ggml_version()).decode()
    except AttributeError as e:
        raise LibraryNotFound(f"{path} has no ggml_version()") from e
