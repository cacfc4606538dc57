"""Devices, backends, buffers and the scheduler: where tensors live and graphs run.

    devices()                      -> [DeviceInfo(name, description, kind, memory_free, memory_total)]
    be = Backend("cpu", n_threads=2)   # or "cuda", "cuda:0", "gpu" (first GPU)
    sched = Scheduler([be])            # GPU backends first, CPU last (added if missing)
    sched.reserve(graph)               # size the compute buffers for the worst case, once
    sched.alloc(graph); sched.compute(graph); sched.reset()

Ownership (every C object has one owner and is freed exactly once, by ``ffi.gc``): a
:class:`Backend` owns its ``ggml_backend_t``; a :class:`Buffer` owns its buffer and keeps
its backend alive; a :class:`Scheduler` owns the sched and keeps its backends alive, so the
C objects go in the order ggml needs: sched, then buffers, then backends.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

from . import lib as _lib
from .errors import GGMLBackendError, GGMLComputeError, GGMLMemoryError

_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
USAGE = {"any": 0, "weights": 1, "compute": 2}


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str  # ggml's device name: "CPU", "CUDA0", ...
    description: str
    kind: str  # "cpu", "gpu", "igpu", "accel"
    memory_free: int
    memory_total: int


def default_threads() -> int:
    """Threads for the CPU backend: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def devices() -> list[DeviceInfo]:
    """The devices the loaded ggml was built with, in registry order."""
    C, ffi = _lib.C(), _lib.ffi()
    out = []
    free, total = ffi.new("size_t *"), ffi.new("size_t *")
    for i in range(C.ggml_backend_dev_count()):
        dev = C.ggml_backend_dev_get(i)
        C.ggml_backend_dev_memory(dev, free, total)
        out.append(
            DeviceInfo(
                i,
                ffi.string(C.ggml_backend_dev_name(dev)).decode(),
                ffi.string(C.ggml_backend_dev_description(dev)).decode(),
                _KINDS.get(C.ggml_backend_dev_type(dev), "unknown"),
                int(free[0]),
                int(total[0]),
            )
        )
    return out


def has_cuda() -> bool:
    return any(d.name.upper().startswith("CUDA") for d in devices())


def _find_device(name: str):
    """Device handle for "cpu", "cuda", "cuda:N", "gpu" or a ggml device name ("CUDA0")."""
    C = _lib.C()
    infos = devices()
    key = name.strip().lower()
    m = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", key)
    if key == "cpu":
        match = [d for d in infos if d.kind == "cpu"]
    elif m:
        want = [d for d in infos if (d.name.lower().startswith("cuda") if m[1] == "cuda" else d.kind in ("gpu", "igpu"))]
        idx = int(m[2] or 0)
        match = want[idx : idx + 1]
        if not match:
            have = ", ".join(d.name for d in infos) or "none"
            if not want:
                hint = (
                    "this ggml build has no CUDA backend; rebuild the provider with `make cuda` "
                    "(CMAKE_ARGS=-DGGML_CUDA=on pip install llama-cpp-python==0.3.36) on a machine "
                    "with the CUDA toolkit and a driver"
                    if m[1] == "cuda"
                    else "this ggml build has no GPU backend"
                )
            else:
                hint = f"only {len(want)} such device(s)"
            raise GGMLBackendError(f"device {name!r} is not available: {hint} (devices: {have})")
    else:
        match = [d for d in infos if d.name.lower() == key]
    if not match:
        have = ", ".join(d.name for d in infos)
        raise GGMLBackendError(f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N', 'gpu' or one of: {have}")
    return C.ggml_backend_dev_get(match[0].index), match[0]


class Backend:
    """One ggml backend (a device ready to compute).

    Args:
        device: "cpu", "cuda", "cuda:N", "gpu" or a ggml device name.
        n_threads: CPU threads (CPU backend and backends that take a thread count);
            default :func:`default_threads`.
    """

    def __init__(self, device: str = "cpu", n_threads: int | None = None):
        C, ffi = _lib.C(), _lib.ffi()
        dev, info = _find_device(device)
        ptr = C.ggml_backend_dev_init(dev, ffi.NULL)
        if ptr == ffi.NULL:
            raise GGMLBackendError(f"could not initialise device {info.name} ({info.description})")
        self.ptr = ffi.gc(ptr, C.ggml_backend_free)
        self.device = info
        self.name = ffi.string(C.ggml_backend_name(self.ptr)).decode()
        self.is_cpu = bool(C.ggml_backend_is_cpu(self.ptr))
        self.n_threads = None
        self.set_n_threads(default_threads() if n_threads is None else n_threads)

    def set_n_threads(self, n: int) -> None:
        """Set the thread count where the backend takes one (CPU; ignored on GPUs)."""
        C, ffi = _lib.C(), _lib.ffi()
        n = int(n)
        if not 1 <= n <= C.GGML_MAX_N_THREADS:
            raise GGMLBackendError(f"n_threads must be in 1..{C.GGML_MAX_N_THREADS}, got {n}")
        if self.is_cpu:
            C.ggml_backend_cpu_set_n_threads(self.ptr, n)
            self.n_threads = n
            return
        reg = C.ggml_backend_dev_backend_reg(C.ggml_backend_get_device(self.ptr))
        fn = C.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_set_n_threads")
        if fn != ffi.NULL:
            ffi.cast("ggml_backend_set_n_threads_t", fn)(self.ptr, n)
            self.n_threads = n

    @property
    def buffer_type(self):
        return _lib.C().ggml_backend_get_default_buffer_type(self.ptr)

    def supports(self, tensor) -> bool:
        """Whether this backend can compute ``tensor``'s op (``ggml_backend_supports_op``)."""
        return bool(_lib.C().ggml_backend_supports_op(self.ptr, tensor.ptr))

    def alloc_buffer(self, size: int, usage: str = "any") -> "Buffer":
        C, ffi = _lib.C(), _lib.ffi()
        ptr = C.ggml_backend_alloc_buffer(self.ptr, int(size))
        if ptr == ffi.NULL:
            raise GGMLMemoryError(f"could not allocate {size} bytes on {self.name}")
        return Buffer(ptr, self, usage)

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device.name!r}, n_threads={self.n_threads})"


class Buffer:
    """An owned backend buffer (weights, KV cache, ...).  Keeps its backend alive."""

    def __init__(self, raw_ptr, backend: Backend, usage: str = "any"):
        C = _lib.C()
        if usage not in USAGE:
            raise GGMLBackendError(f"buffer usage must be one of {sorted(USAGE)}, got {usage!r}")
        # The destructor closure holds the backend: the buffer is freed before it.
        # (it holds the backend's owned cdata, not the Python object, so that even a cyclic
        # garbage collection cannot free the backend first)
        self.ptr = _lib.ffi().gc(raw_ptr, lambda p, _keep=backend.ptr: C.ggml_backend_buffer_free(p))
        self.backend = backend
        self.usage = usage
        C.ggml_backend_buffer_set_usage(self.ptr, USAGE[usage])

    @property
    def size(self) -> int:
        return int(_lib.C().ggml_backend_buffer_get_size(self.ptr))

    def clear(self, value: int = 0) -> None:
        _lib.C().ggml_backend_buffer_clear(self.ptr, int(value) & 0xFF)


class Scheduler:
    """``ggml_backend_sched``: splits a graph over backends and owns the compute buffers.

    Backends are tried in order; ggml requires the last one to be the CPU, which is
    appended (with ``n_threads``) when missing.  ``graph_size`` bounds the nodes of any
    graph it will see (llama.cpp: ``max(1024, 8 * n_tensors)``).
    """

    def __init__(self, backends: list[Backend] | None = None, graph_size: int = 8192, n_threads: int | None = None):
        C, ffi = _lib.C(), _lib.ffi()
        backends = list(backends or [])
        if not backends or not backends[-1].is_cpu:
            backends.append(Backend("cpu", n_threads=n_threads))
        if any(b.is_cpu for b in backends[:-1]):
            raise GGMLBackendError("only the last backend of a scheduler may be the CPU")
        if graph_size < 1:
            raise GGMLBackendError(f"graph_size must be positive, got {graph_size}")
        arr = ffi.new("ggml_backend_t[]", [b.ptr for b in backends])
        ptr = C.ggml_backend_sched_new(arr, ffi.NULL, len(backends), graph_size, False, True)
        if ptr == ffi.NULL:
            raise GGMLBackendError("ggml_backend_sched_new failed")
        self.ptr = ffi.gc(ptr, lambda p, _keep=tuple(b.ptr for b in backends): C.ggml_backend_sched_free(p))
        self.backends = tuple(backends)
        self.graph_size = graph_size
        self.current = None  # the Graph whose tensors the sched's buffers hold now
        # One graph at a time: cffi releases the GIL during C calls, and two threads
        # allocating or computing on one sched would corrupt it.
        self.lock = threading.RLock()

    def _release_current(self) -> None:
        """The sched's buffers no longer hold the current graph's tensors."""
        if self.current is not None:
            self.current._allocated = False
        self.current = None

    def reserve(self, graph) -> None:
        """Size the compute buffers for ``graph`` (the worst case), once, ahead of use.
        The graph allocated before (if any) is released and re-allocated on its next use."""
        with self.lock:
            graph._check_sched(self)
            self._release_current()
            if not _lib.C().ggml_backend_sched_reserve(self.ptr, graph.ptr):
                raise GGMLMemoryError("ggml_backend_sched_reserve failed (out of device memory?)")

    def alloc(self, graph) -> None:
        """Assign and allocate every tensor of ``graph`` in the compute buffers."""
        C = _lib.C()
        with self.lock:
            graph._check_sched(self)
            C.ggml_backend_sched_reset(self.ptr)
            self._release_current()
            if not C.ggml_backend_sched_alloc_graph(self.ptr, graph.ptr):
                raise GGMLMemoryError("ggml_backend_sched_alloc_graph failed (out of memory?)")
            self.current = graph

    def compute(self, graph) -> None:
        C, ffi = _lib.C(), _lib.ffi()
        with self.lock:
            if self.current is not graph:
                raise GGMLComputeError("graph is not allocated in this scheduler (call alloc first)")
            status = C.ggml_backend_sched_graph_compute(self.ptr, graph.ptr)
        if status != C.GGML_STATUS_SUCCESS:
            raise GGMLComputeError(f"graph compute failed: {ffi.string(C.ggml_status_to_string(status)).decode()}")

    def reset(self) -> None:
        with self.lock:
            _lib.C().ggml_backend_sched_reset(self.ptr)
            self._release_current()

    def buffer_size(self, backend: Backend) -> int:
        return int(_lib.C().ggml_backend_sched_get_buffer_size(self.ptr, backend.ptr))

    @property
    def n_splits(self) -> int:
        return int(_lib.C().ggml_backend_sched_get_n_splits(self.ptr))
