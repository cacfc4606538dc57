"""The exceptions of gguflite.  Every failure caused by a file is a ``GGUFError`` that says
where: the path, the byte offset, and the key or tensor name involved when there is one.

    GGUFError
    ├── TruncatedFile      a read ran past the end of the file (offset, need, have)
    ├── BadMagic           the file does not start with b"GGUF"
    ├── BadVersion         version 0, > 3, or unsupported
    ├── BadValue           a metadata value is malformed (bad type id, bad UTF-8, too long, ...)
    ├── DuplicateKey       a key appears twice (reading) or is added twice (writing)
    ├── BadAlignment       general.alignment is not a non-zero power of two UINT32
    ├── BadTensorInfo      a tensor's name, dims, type or shape breaks the rules
    ├── DuplicateTensor    a tensor name appears twice
    ├── TensorOutOfBounds  a tensor's data lies outside the data section or out of order
    ├── BadSplit           split files that do not belong together
    └── WriteError         a writer was used wrongly (wrong order, wrong size, nested array)

``CheckpointError`` (in the same hierarchy) covers the source checkpoints the converters read.
"""
from __future__ import annotations


class GGUFError(Exception):
    """Base class.  ``path``, ``offset``, ``key`` and ``tensor`` are None when not known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        key: str | None = None,
        tensor: str | None = None,
    ):
        self.message = message
        self.path = None if path is None else str(path)
        self.offset = offset
        self.key = key
        self.tensor = tensor
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        if self.tensor is not None:
            where.append(f"tensor {self.tensor!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def with_path(self, path) -> "GGUFError":
        """Fill in the path if the raiser did not know it; returns self for ``raise``."""
        if self.path is None:
            self.path = str(path)
        return self


def short_repr(x, limit: int = 80) -> str:
    """repr of a value read from a file, cut short for an error message: a hostile file can
    make it huge or nested too deep to repr."""
    try:
        r = repr(x)
    except RecursionError:
        return f"<{type(x).__name__}>"
    return r if len(r) <= limit else r[:limit] + "..."


class TruncatedFile(GGUFError):
    def __init__(self, offset: int, need: int, have: int, what: str = "data", **kw):
        self.need = need
        self.have = have
        super().__init__(f"truncated {what}: need {need} bytes, {have} left", offset=offset, **kw)


class BadMagic(GGUFError):
    pass


class BadVersion(GGUFError):
    pass


class BadValue(GGUFError):
    pass


class DuplicateKey(GGUFError):
    pass


class BadAlignment(GGUFError):
    pass


class BadTensorInfo(GGUFError):
    pass


class DuplicateTensor(GGUFError):
    pass


class TensorOutOfBounds(GGUFError):
    pass


class BadSplit(GGUFError):
    pass


class WriteError(GGUFError):
    pass


class CheckpointError(GGUFError):
    """A source checkpoint (safetensors, PyTorch .bin, config.json, tokenizer) is missing,
    malformed, unsafe or inconsistent."""
