"""The exceptions of ggml_bind.  Every refusal and every C failure is a ``GGMLError``.

ggml reports misuse with ``GGML_ASSERT`` → ``abort()``, which no Python code can catch.
So each wrapper checks its arguments first (mirroring the C asserts) and raises one of:

    GGMLError
    ├── GGMLLoadError     libggml, its headers, a symbol or the right version is missing
    ├── GGMLShapeError    shapes that do not fit the op (also a ValueError)
    ├── GGMLTypeError     a tensor type the op does not take (also a TypeError)
    ├── GGMLLayoutError   a non-contiguous / transposed tensor where ggml needs contiguity
    ├── GGMLFreedError    a tensor, graph or buffer used after its owner was freed
    ├── GGMLBackendError  device/backend problems: unknown device, CUDA asked for but absent
    ├── GGMLMemoryError   a context, buffer or allocation is too small or failed
    └── GGMLComputeError  a graph computation returned a failure status

``op`` names the ggml function involved (``"ggml_mul_mat"``) and ``tensor`` the tensor
name when known; both appear in the message.
"""
from __future__ import annotations


class GGMLError(Exception):
    """Base class.  ``op`` and ``tensor`` are None when not known."""

    def __init__(self, message: str, *, op: str | None = None, tensor: str | None = None):
        self.message = message
        self.op = op
        self.tensor = tensor
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.op:
            where.append(self.op)
        if self.tensor:
            where.append(f"tensor {self.tensor!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class GGMLLoadError(GGMLError, ImportError):
    pass


class GGMLShapeError(GGMLError, ValueError):
    pass


class GGMLTypeError(GGMLError, TypeError):
    pass


class GGMLLayoutError(GGMLError, ValueError):
    pass


class GGMLFreedError(GGMLError):
    pass


class GGMLBackendError(GGMLError):
    pass


class GGMLMemoryError(GGMLError, MemoryError):
    pass


class GGMLComputeError(GGMLError):
    pass


__all__ = [
    "GGMLError",
    "GGMLLoadError",
    "GGMLShapeError",
    "GGMLTypeError",
    "GGMLLayoutError",
    "GGMLFreedError",
    "GGMLBackendError",
    "GGMLMemoryError",
    "GGMLComputeError",
]
