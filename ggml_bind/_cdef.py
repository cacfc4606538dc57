"""Generate the cffi cdef from the installed ggml headers, and cache it.

No header and no generated declaration is kept in the repository: the declarations come
from the headers installed next to the library we load (ggml 0.25.3 from
llama-cpp-python, or a user's own build via ``GGML_LIBRARY_DIR``), so they cannot drift
from the binary the way hand-copied ctypes files do.

Recipe (docs: shared/reference/ggml-binding.md section 3):

1. run the C preprocessor over ``ggml.h ggml-alloc.h ggml-backend.h ggml-cpu.h ggml-cuda.h
   gguf.h`` with empty stub system headers, ``__attribute__`` erased and ``__GNUC__``
   undefined (so ``GGML_DEPRECATED(f, hint)`` becomes plain ``f``);
2. clean up what cffi's parser does not take: ``_Noreturn``, ``restrict``, the
   ``static const size_t GGML_TENSOR_SIZE`` line, the ``64 / sizeof(int32_t)`` array size,
   typedefs declared twice (ggml-alloc.h repeats ggml-backend.h's);
3. re-add the integer ``#define``s we use (``GGML_MAX_DIMS``, ``GGML_ROPE_TYPE_*``, ...),
   parsed from the headers themselves; enums come through the preprocessor unchanged.

The result is cached under the user cache directory, keyed by the ggml version, a hash of
the headers and ``CDEF_FORMAT`` (bump it when the recipe changes).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import GGMLLoadError

CDEF_FORMAT = 1  # bump when the post-processing below changes

# Headers, in include order.  ggml-cuda.h only declares functions; a CPU-only library
# lacks those symbols, which cffi's ABI mode tolerates until they are used.
HEADERS = ("ggml.h", "ggml-alloc.h", "ggml-backend.h", "ggml-cpu.h", "ggml-cuda.h", "gguf.h")

# Integer macros the binding uses; their values are read from the headers.
_DEFINE_NAMES = re.compile(
    r"^\s*#\s*define\s+(GGML_MAX_\w+|GGML_ROPE_TYPE_\w+|GGML_MROPE_SECTIONS|GGML_DEFAULT_GRAPH_SIZE"
    r"|GGML_DEFAULT_N_THREADS|GGML_QNT_VERSION|GGML_KQ_MASK_PAD|GGUF_DEFAULT_ALIGNMENT|GGUF_VERSION)"
    r"\s+\(?(-?\d+)\)?\s*(?://.*)?$",
    re.M,
)


def include_candidates(lib_dir: Path) -> list[Path]:
    """Where the headers of the library in ``lib_dir`` may live, most specific first.

    ``GGML_INCLUDE_DIR`` wins; then a CMake install prefix (``<prefix>/lib`` next to
    ``<prefix>/include``); then llama-cpp-python's layout (``site-packages/llama_cpp/lib``
    with the headers in ``site-packages/include``).
    """
    out = []
    env = os.environ.get("GGML_INCLUDE_DIR")
    if env:
        out.append(Path(env))
    out += [lib_dir / "include", lib_dir.parent / "include", lib_dir.parent.parent / "include"]
    return out


def find_include_dir(lib_dir: Path) -> Path:
    for cand in include_candidates(lib_dir):
        if all((cand / h).is_file() for h in HEADERS):
            return cand
    tried = ", ".join(str(c) for c in include_candidates(lib_dir))
    raise GGMLLoadError(
        f"the ggml headers ({', '.join(HEADERS)}) for the library in {lib_dir} were not found "
        f"(looked in: {tried}); reinstall llama-cpp-python==0.3.36, or set GGML_INCLUDE_DIR "
        "to the include/ folder of your ggml build"
    )


def headers_hash(include_dir: Path) -> str:
    h = hashlib.sha256()
    for name in HEADERS:
        h.update(name.encode() + b"\0")
        h.update((include_dir / name).read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """``$GGML_BIND_CACHE_DIR``, else ``$XDG_CACHE_HOME/ggml_bind``, else ``~/.cache/ggml_bind``."""
    env = os.environ.get("GGML_BIND_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ggml_bind"


def _preprocessor() -> list[str]:
    env = os.environ.get("CPP")
    if env:
        return env.split()
    for name, args in (("cpp", []), ("gcc", ["-E"]), ("cc", ["-E"]), ("clang", ["-E"])):
        exe = shutil.which(name)
        if exe:
            return [exe, *args]
    raise GGMLLoadError(
        "no C preprocessor found (tried $CPP, cpp, gcc -E, cc -E, clang -E); it is needed once "
        "to read the ggml headers: install gcc or clang (e.g. `apt-get install cpp`)"
    )


def preprocess(include_dir: Path) -> str:
    """Run the preprocessor over HEADERS with empty system-header stubs."""
    with tempfile.TemporaryDirectory(prefix="ggml_bind_cdef_") as tmp:
        stubs = Path(tmp)
        for stub in ("stdbool.h", "stddef.h", "stdint.h", "stdio.h", "stdlib.h", "string.h"):
            (stubs / stub).write_text("")
        main = stubs / "all.h"
        main.write_text("".join(f'#include "{h}"\n' for h in HEADERS))
        cmd = [
            *_preprocessor(), "-P", "-nostdinc", f"-I{stubs}", f"-I{include_dir}",
            "-D__attribute__(x)=", "-U__GNUC__", "-U__clang__", "-D__STDC_VERSION__=201112L",
            str(main),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise GGMLLoadError(
                f"preprocessing the ggml headers in {include_dir} failed ({' '.join(cmd)}):\n"
                + proc.stderr[-2000:]
            )
        return proc.stdout


def clean(text: str) -> str:
    """Turn preprocessed header text into something cffi's parser accepts."""
    text = re.sub(r"\b_Noreturn\b", "", text)
    text = re.sub(r"\brestrict\b", "", text)
    text = re.sub(r"^.*static const size_t GGML_TENSOR_SIZE\b.*$", "", text, flags=re.M)
    # op_params[GGML_MAX_OP_PARAMS / sizeof(int32_t)]: cffi wants a constant.
    text = re.sub(r"\[\s*(\d+)\s*/\s*sizeof\s*\(\s*int32_t\s*\)\s*\]", lambda m: f"[{int(m[1]) // 4}]", text)
    # Typedefs declared twice (ggml-alloc.h repeats ggml-backend.h's): keep the first.
    seen: set[str] = set()
    lines = []
    for line in text.splitlines():
        s = " ".join(line.split())
        if s.startswith("typedef ") and s.endswith(";") and "(" not in s and "{" not in s:
            if s in seen:
                continue
            seen.add(s)
        lines.append(line)
    return "typedef struct _IO_FILE FILE;\n" + "\n".join(lines) + "\n"


def defines(include_dir: Path) -> str:
    """``#define NAME <int>`` lines for the macros in _DEFINE_NAMES, first value wins."""
    values: dict[str, str] = {}
    for name in HEADERS:
        for m in _DEFINE_NAMES.finditer((include_dir / name).read_text(errors="replace")):
            values.setdefault(m[1], m[2])
    # GGML_MEM_ALIGN depends on the platform (#if UINTPTR_MAX == ...); 16 on 64-bit.
    values.setdefault("GGML_MEM_ALIGN", "16")
    return "".join(f"#define {k} {v}\n" for k, v in sorted(values.items()))


def generate(include_dir: Path) -> str:
    return defines(include_dir) + clean(preprocess(include_dir))


def _key(include_dir: Path, version: str) -> str:
    return f"ggml-{version}-{headers_hash(include_dir)}-f{CDEF_FORMAT}"


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(include_dir: Path, version: str) -> str:
    """The cdef text for the headers in ``include_dir``, from the cache or freshly generated."""
    path = cache_dir() / (_key(include_dir, version) + ".h")
    try:
        return path.read_text()
    except OSError:
        pass
    text = generate(include_dir)
    try:  # the cache is an optimisation: a read-only home must not stop us
        _write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    except OSError:
        pass
    return text


def load_ffi(include_dir: Path, version: str):
    """A ``cffi.FFI`` holding the declarations of the headers in ``include_dir``.

    Parsing 2,000 lines of declarations with pycparser takes seconds, so the parsed form
    is cached too, as cffi's out-of-line ABI-mode module (``FFI.emit_python_code``: plain
    Python, nothing compiled), which imports in milliseconds.
    """
    import importlib.util

    import cffi

    name = "_ggml_cffi_" + re.sub(r"\W", "_", _key(include_dir, version))
    path = cache_dir() / (name + ".py")
    if not path.is_file():
        builder = cffi.FFI()
        builder.cdef(load(include_dir, version))
        builder.set_source(name, None, compiler_verbose=False)
        try:
            _write_atomic(path, builder.emit_python_code)
        except OSError:  # no writable cache: use the freshly parsed declarations
            ffi = cffi.FFI()
            ffi.cdef(load(include_dir, version))
            return ffi
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffi
