"""The codebooks of the grid IQ types, read back from the installed libggml.

IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M store indices into fixed tables of
8- or 4-value vectors (``iq2xxs_grid[256]``, ``iq2xs_grid[512]``, ``iq2s_grid[1024]``,
``iq3xxs_grid[256]``, ``iq3s_grid[512]``, ``iq1s_grid[2048]`` in ggml-common.h).  We do not
ship copies of those tables: the first grid-type dequantize asks ggml itself.  ggml exports
its row dequantizers (``void dequantize_row_iq2_xxs(const void * x, float * y, int64_t k)``
and so on, in libggml-base); we feed them probe blocks whose scale makes every output value
the grid value itself (+0.125 for IQ1_S), with no sign flips and grid index i in slot i, and
read the tables back:

    grids = load()          # Grids: uint8 (256, 8) iq2xxs ... int8 (2048, 8) iq1s
    load.cache_clear()      # forget the in-memory copy (tests)

The library is found as ggml_bind finds it: ``$GGML_LIBRARY_DIR``, else ``llama_cpp/lib`` of
the installed llama-cpp-python (located without importing it).  Before probing, the
library's block sizes must be ours (``ggml_type_size``); after, the tables are checked
(shape, the documented value alphabet of each grid, no repeated entry), so that a changed
libggml gives a clear error rather than wrong numbers.  They are cached, one file per ggml
version, at ``$XDG_CACHE_HOME/gguflite/iq-grids-<version>.npz`` (default ``~/.cache``); the
version comes from the library, so the library is needed even when the cache exists.
Nothing happens at import.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import ggml_locate
from ..types import TYPE_TRAITS, GGMLType

log = logging.getLogger(__name__)

_LIB_NAMES = {
    "linux": ("libggml-base.so", "libggml-base.so.0"),
    "darwin": ("libggml-base.dylib", "libggml-base.0.dylib"),
    "win32": ("ggml-base.dll",),
}
_HINT = (
    "the grid IQ types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) are decoded with "
    "codebooks read from an installed libggml: install llama-cpp-python, or set GGML_LIBRARY_DIR "
    "to the folder holding libggml-base of your ggml build"
)

# The documented alphabet of each grid (ggml-common.h), as (table name, count, width, dtype,
# allowed values).  IQ2 grids hold the magnitudes 8, 25, 43 (0x08, 0x19, 0x2b); iq3xxs_grid
# 4, 12, ..., 52, 62; iq3s_grid the odd numbers 1..15; iq1s_grid the values -1, 0, 1.
GRID_SPECS = (
    ("iq2xxs", 256, 8, np.uint8, (0x08, 0x19, 0x2B)),
    ("iq2xs", 512, 8, np.uint8, (0x08, 0x19, 0x2B)),
    ("iq2s", 1024, 8, np.uint8, (0x08, 0x19, 0x2B)),
    ("iq3xxs", 256, 4, np.uint8, (0x04, 0x0C, 0x14, 0x1C, 0x24, 0x2C, 0x34, 0x3E)),
    ("iq3s", 512, 4, np.uint8, (0x01, 0x03, 0x05, 0x07, 0x09, 0x0B, 0x0D, 0x0F)),
    ("iq1s", 2048, 8, np.int8, (-1, 0, 1)),
)
# The type whose dequantize_row_* reads each grid back (IQ1_M shares iq1s_grid).
_PROBE_TYPES = {"iq2xxs": GGMLType.IQ2_XXS, "iq2xs": GGMLType.IQ2_XS, "iq2s": GGMLType.IQ2_S,
                "iq3xxs": GGMLType.IQ3_XXS, "iq3s": GGMLType.IQ3_S, "iq1s": GGMLType.IQ1_S}

_CDEF = """
const char * ggml_version(void);
int64_t ggml_blck_size(int type);
size_t ggml_type_size(int type);
void dequantize_row_iq2_xxs(const void * x, float * y, int64_t k);
void dequantize_row_iq2_xs(const void * x, float * y, int64_t k);
void dequantize_row_iq2_s(const void * x, float * y, int64_t k);
void dequantize_row_iq3_xxs(const void * x, float * y, int64_t k);
void dequantize_row_iq3_s(const void * x, float * y, int64_t k);
void dequantize_row_iq1_s(const void * x, float * y, int64_t k);
"""


class GridTablesError(ImportError):
    """The grid IQ codebooks cannot be had: no libggml, or one whose tables fail the checks."""


@dataclass(frozen=True, eq=False)
class Grids:
    """ggml's codebooks, one row per grid entry: row i of ``iq2xxs`` is the 8 bytes of
    ``iq2xxs_grid[i]`` (a uint64 in C, byte j = value j), and so on."""

    version: str
    iq2xxs: np.ndarray  # uint8 (256, 8)
    iq2xs: np.ndarray  # uint8 (512, 8)
    iq2s: np.ndarray  # uint8 (1024, 8)
    iq3xxs: np.ndarray  # uint8 (256, 4)
    iq3s: np.ndarray  # uint8 (512, 4)
    iq1s: np.ndarray  # int8 (2048, 8)


# --------------------------------------------------------------------------- locating libggml


def library_dir() -> Path:
    """The folder holding libggml-base: ``$GGML_LIBRARY_DIR`` or llama-cpp-python's ``lib``."""
    try:
        return ggml_locate.library_dir()
    except ggml_locate.LibraryNotFound as e:
        raise GridTablesError(f"{e}; {_HINT}") from e


def library_path(lib_dir: Path) -> Path:
    try:
        return ggml_locate.library_path(lib_dir, _LIB_NAMES)
    except ggml_locate.LibraryNotFound as e:
        raise GridTablesError(f"{e}; {_HINT}") from e


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gguflite``, else ``~/.cache/gguflite``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gguflite"


# --------------------------------------------------------------------------- probing


def _f16(x: float) -> bytes:
    return np.array([x], "<f2").tobytes()


def _probe(fn, ffi, blocks: np.ndarray) -> np.ndarray:
    """Run one ``dequantize_row_*`` over ``blocks`` (n, type_size) → float32 (n * 256,)."""
    blocks = np.ascontiguousarray(blocks, np.uint8)
    out = np.empty(blocks.shape[0] * 256, np.float32)
    fn(ffi.from_buffer(blocks), ffi.cast("float *", ffi.from_buffer(out)), out.size)
    return out


def _probe_blocks() -> dict[str, np.ndarray]:
    """The probe blocks of each grid: every grid index once, in order, with the signs all
    positive and the scale chosen so that ggml's output is the grid value (+0.125 for IQ1_S).

    Each layout is the ``block_iq*`` struct of ggml-common.h; the scale formulas are those of
    ``dequantize_row_iq*`` in ggml-quants.c (quoted per type below)."""
    p = {}
    # IQ2_XXS (66 B): f16 d, then per 32 values a u32 of 4 grid indices (one byte each) and a
    # u32 of 4x7 sign bits + a 4-bit scale s; db = d * (0.5 + s) * 0.25, so d = 8, s = 0 → 1.
    idx = np.arange(256).reshape(8, 8, 4)  # (block, group of 32, grid index)
    words = np.zeros((8, 8, 8), np.uint8)  # (block, group, 8 bytes: indices, then zeros)
    words[:, :, :4] = idx
    b = np.zeros((8, 66), np.uint8)
    b[:, 0:2] = np.frombuffer(_f16(8.0), np.uint8)
    b[:, 2:] = words.reshape(8, 64)
    p["iq2xxs"] = b
    # IQ2_XS (74 B): f16 d, u16 qs[32] = 9-bit grid index | 7-bit sign index << 9, 8 scale
    # bytes (two 4-bit s); db = d * (0.5 + s) * 0.25 → d = 8, s = 0.
    b = np.zeros((16, 74), np.uint8)
    b[:, 0:2] = np.frombuffer(_f16(8.0), np.uint8)
    b[:, 2:66] = np.arange(512, dtype="<u2").reshape(16, 32).view(np.uint8)
    p["iq2xs"] = b
    # IQ2_S (82 B): f16 d, qs[32] low 8 index bits, 32 sign bytes, qh[8] (2 high index bits per
    # index), 8 scale bytes; db = d * (0.5 + s) * 0.25 → d = 8, s = 0, signs 0.
    idx = np.arange(1024).reshape(32, 8, 4)
    b = np.zeros((32, 82), np.uint8)
    b[:, 0:2] = np.frombuffer(_f16(8.0), np.uint8)
    b[:, 2:34] = (idx & 0xFF).reshape(32, 32)
    b[:, 66:74] = ((idx >> 8) << np.array([0, 2, 4, 6])).sum(axis=2)
    p["iq2s"] = b
    # IQ3_XXS (98 B): f16 d, 64 grid-index bytes (4 values each), 8 u32 of 4x7 sign bits + a
    # 4-bit s; db = d * (0.5 + s) * 0.5 → d = 4, s = 0.
    b = np.zeros((4, 98), np.uint8)
    b[:, 0:2] = np.frombuffer(_f16(4.0), np.uint8)
    b[:, 2:66] = np.arange(256).reshape(4, 64)
    p["iq3xxs"] = b
    # IQ3_S (110 B): f16 d, qs[64] low 8 index bits, qh[8] (bit k = 9th bit of index k of the
    # group of 32), 32 sign bytes, 4 scale bytes; db = d * (1 + 2*s) → d = 1, s = 0.
    idx = np.arange(512).reshape(8, 8, 8)
    b = np.zeros((8, 110), np.uint8)
    b[:, 0:2] = np.frombuffer(_f16(1.0), np.uint8)
    b[:, 2:66] = (idx & 0xFF).reshape(8, 64)
    b[:, 66:74] = ((idx >> 8) << np.arange(8)).sum(axis=2)
    p["iq3s"] = b
    # IQ1_S (50 B): f16 d, qs[32] low 8 index bits, u16 qh[8] = 4x3 high index bits | 3-bit s
    # << 12 | delta sign << 15; y = d * (2*s + 1) * (grid + delta) → d = 1, s = 0, delta
    # = +IQ1S_DELTA = +0.125.
    idx = np.arange(2048).reshape(64, 8, 4)
    b = np.zeros((64, 50), np.uint8)
    b[:, 0:2] = np.frombuffer(_f16(1.0), np.uint8)
    b[:, 2:34] = (idx & 0xFF).reshape(64, 32)
    qh = ((idx >> 8) << np.array([0, 3, 6, 9])).sum(axis=2).astype("<u2")
    b[:, 34:50] = qh.view(np.uint8)
    p["iq1s"] = b
    return p


IQ1S_DELTA = np.float32(0.125)  # ggml-common.h: #define IQ1S_DELTA 0.125f


def extract(path: Path) -> Grids:
    """Read every codebook out of the libggml-base at ``path`` (unchecked; see ``check``)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    try:
        lib = ffi.dlopen(str(path))
    except OSError as e:
        raise GridTablesError(f"cannot load {path}: {e}; {_HINT}") from e
    try:
        try:
            version = ffi.string(lib.ggml_version()).decode()
            fns = {name: getattr(lib, f"dequantize_row_{t.name.lower()}") for name, t in _PROBE_TYPES.items()}
        except AttributeError as e:
            raise GridTablesError(f"{path} lacks a function we need ({e}); {_HINT}") from e
        for t in _PROBE_TYPES.values():  # the probe blocks must be the library's blocks
            have = (int(lib.ggml_blck_size(int(t))), int(lib.ggml_type_size(int(t))))
            want = (TYPE_TRAITS[t].block_size, TYPE_TRAITS[t].type_size)
            if have != want:
                raise GridTablesError(f"{path}: {t.name} blocks are {have[1]} bytes per {have[0]} values, "
                                      f"expected {want[1]} per {want[0]}; {_HINT}")
        tables = {}
        probes = _probe_blocks()
        for name, count, width, dtype, _ in GRID_SPECS:
            y = _probe(fns[name], ffi, probes[name]).reshape(count, width)
            if name == "iq1s":
                y = y - IQ1S_DELTA  # exact: y is -0.875, 0.125 or 1.125
            v = np.rint(y)
            if not np.array_equal(v, y):
                raise GridTablesError(f"{path}: the {name} probe gave non-integer grid values; {_HINT}")
            info = np.iinfo(dtype)
            tables[name] = np.clip(v, info.min, info.max).astype(dtype)
    finally:
        ffi.dlclose(lib)
    return Grids(version, **tables)


def check(g: Grids, origin: str) -> None:
    """Raise GridTablesError unless every table has its documented size and alphabet and no
    repeated entry (each grid is a set of distinct vectors)."""
    for name, count, width, dtype, alphabet in GRID_SPECS:
        t = getattr(g, name, None)
        if not isinstance(t, np.ndarray) or t.dtype != dtype or t.shape != (count, width):
            got = f"{t.dtype} {t.shape}" if isinstance(t, np.ndarray) else type(t).__name__
            raise GridTablesError(
                f"{origin}: {name} grid is {got}, expected {np.dtype(dtype)} ({count}, {width}); {_HINT}")
        bad = ~np.isin(t, alphabet)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise GridTablesError(f"{origin}: {name} grid entry {i} is {t[i].tolist()}, outside {alphabet}; {_HINT}")
        if len(np.unique(t, axis=0)) != count:
            raise GridTablesError(f"{origin}: {name} grid has repeated entries; {_HINT}")


# --------------------------------------------------------------------------- cache


def _cache_file(version: str) -> Path:
    return cache_dir() / f"iq-grids-{re.sub(r'[^A-Za-z0-9._-]', '_', version)}.npz"


def _read_cache(path: Path, version: str) -> Grids | None:
    """The cached tables, or None when missing, unreadable or failing the checks."""
    try:
        with np.load(path, allow_pickle=False) as z:
            g = Grids(str(z["version"]), **{name: z[name] for name, *_ in GRID_SPECS})
        if g.version != version:
            return None
        check(g, str(path))
        return g
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, GridTablesError) as e:
        # corrupt or stale: extract again (and overwrite it)
        log.warning("ignoring the IQ grid cache %s: %s", path, e)
        return None


def _write_cache(path: Path, g: Grids) -> None:
    """Write atomically (temp file, fsync, rename); a read-only cache folder only logs."""
    from ..errors import WriteError
    from ..writer import AtomicFile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with AtomicFile(path) as fh:
            np.savez(fh, version=np.array(g.version), **{name: getattr(g, name) for name, *_ in GRID_SPECS})
    except (OSError, WriteError) as e:
        log.warning("cannot cache the IQ grids at %s: %s", path, e)


def _library_version(path: Path) -> str:
    try:
        return ggml_locate.library_version(path)
    except ggml_locate.LibraryNotFound as e:
        raise GridTablesError(f"{e}; {_HINT}") from e


@functools.lru_cache(maxsize=1)
def load() -> Grids:
    """ggml's codebooks: from the cache of this ggml version, else extracted, checked and
    cached.  Raises GridTablesError naming what to install when there is no usable libggml."""
    path = library_path(library_dir())
    version = _library_version(path)
    cached = _cache_file(version)
    g = _read_cache(cached, version)
    if g is None:
        g = extract(path)
        check(g, str(path))
        _write_cache(cached, g)
    return g
