"""Edit a GGUF file: set, retype and delete keys; rename and drop tensors.

    with gguflite.Editor(path) as e:
        e.set("general.name", "tiny")           # keeps an existing key's type
        e.retype("llama.context_length", ValueType.UINT64)
        e.delete("tokenizer.chat_template")
        e.rename_tensor("output.weight", "out.weight")
    # on a clean exit: commit()

``commit()`` rebuilds the header (KV pairs and tensor infos) with ``GGUFWriter``.  If the
new header has exactly the byte size of the old one (padding included) and the tensors
keep their order and sizes, only the changed bytes of the header are written, in place
(one ``pwrite`` and an fsync: fast, but not crash-atomic); otherwise, or with
``in_place=False``, or when writing to another path, the whole file is streamed into a
temp file and renamed over the target (atomic, through the writer's ``AtomicFile``).  Either
way the result is byte for byte what a rewrite would give (for files whose last tensor is
padded, as writers do), and either way temp files of the target left by a killed earlier
run are removed (``gguflite.writer.remove_stale_temps``).
"""
from __future__ import annotations

import os

import numpy as np

from .errors import DuplicateTensor, GGUFError, WriteError
from .reader import Field, GGUFFile
from .types import GGML_MAX_NAME, ValueType, align_up
from .writer import GGUFWriter, _normalize, _resolve_type, infer_type, remove_stale_temps

__all__ = ["Editor"]

V = ValueType


class Editor:
    """Collects edits to one GGUF file and applies them with ``commit()``."""

    def __init__(self, path, *, allow_nested: bool = False):
        self.path = os.fspath(path)
        self.allow_nested = allow_nested
        self._src = GGUFFile(self.path)
        # key -> Field (unchanged) or (type, elem_type, value) (new or changed)
        self._kv: dict[str, Field | tuple] = dict(self._src.fields)
        self._tensors: dict[str, str] = {n: n for n in self._src.tensors}  # new name -> old name
        self.mode: str | None = None  # "in-place" or "rewrite" after commit

    # ------------------------------------------------------------------ edits

    @property
    def metadata_keys(self) -> list[str]:
        return list(self._kv)

    def set(self, key: str, value, type=None) -> None:  # noqa: A002
        """Set ``key`` (added at the end if new).  Without ``type`` an existing key keeps
        its type; a new one gets the writer's inferred type."""
        if type is None and key in self._kv:
            old = self._kv[key]
            vtype, etype = (old.type, old.elem_type) if isinstance(old, Field) else old[:2]
            type = (V.ARRAY, etype) if vtype == V.ARRAY else vtype
        vtype, etype = _resolve_type(value, type, key)
        stored = _normalize(key, value, vtype, etype, self.allow_nested)
        if vtype == V.ARRAY and etype is None:
            etype = infer_type(value, key)[1]
        self._kv[key] = (vtype, etype, stored, value)

    def retype(self, key: str, type) -> None:  # noqa: A002
        """Store an existing value with another type (range-checked, never wrapped)."""
        if key not in self._kv:
            raise GGUFError("no such key", path=self.path, key=key)
        old = self._kv[key]
        value = self._src.metadata[key] if isinstance(old, Field) else old[3]
        old_type = old.type if isinstance(old, Field) else old[0]
        if not isinstance(type, tuple) and ValueType(type) != V.ARRAY and old_type == V.ARRAY:
            type = (V.ARRAY, ValueType(type))  # an element type for an array
        self.set(key, value, type)

    def delete(self, key: str) -> None:
        if key not in self._kv:
            raise GGUFError("no such key", path=self.path, key=key)
        del self._kv[key]

    def rename_tensor(self, old: str, new: str) -> None:
        if old not in self._tensors:
            raise GGUFError("no such tensor", path=self.path, tensor=old)
        if new in self._tensors and new != old:
            raise DuplicateTensor("a tensor with this name exists", path=self.path, tensor=new)
        if len(new.encode("utf-8")) >= GGML_MAX_NAME:
            raise WriteError(f"tensor name longer than {GGML_MAX_NAME - 1} bytes", tensor=new)
        self._tensors = {(new if k == old else k): v for k, v in self._tensors.items()}

    def drop_tensor(self, name: str) -> None:
        if name not in self._tensors:
            raise GGUFError("no such tensor", path=self.path, tensor=name)
        del self._tensors[name]

    # ------------------------------------------------------------------ commit

    def _writer(self, path: str) -> GGUFWriter:
        src = self._src
        w = GGUFWriter(path, endian=src.endian, version=src.version, allow_nested=True)
        for key, kv in self._kv.items():
            if isinstance(kv, Field):
                w.add_field(kv)
            else:
                vtype, etype, _, value = kv
                w._add(key, value, (V.ARRAY, etype) if vtype == V.ARRAY else vtype, True)
        for new, old in self._tensors.items():
            w.add_tensor_from(src.tensors[old], new)
        return w

    def commit(self, out=None, *, in_place: bool = True) -> str:
        """Apply the edits to ``path`` (or write the result to ``out``); returns
        ``"in-place"`` or ``"rewrite"``."""
        src = self._src
        target = self.path if out is None else os.fspath(out)
        w = self._writer(target)
        same_tensors = [src.tensors[o].nbytes for o in self._tensors.values()] == [t.nbytes for t in src.tensors.values()] \
            and list(self._tensors.values()) == list(src.tensors)
        header = w.header_bytes()
        old_len = align_up(src.infos_end, src.alignment)  # the old header with its padding
        if in_place and out is None and same_tensors and len(header) == old_len and src.size >= old_len:
            old = bytes(src._mm[:old_len])
            src.close()
            remove_stale_temps(self.path)  # a rewrite goes through AtomicFile, which does this
            self._write_in_place(old, header)
            self.mode = "in-place"
        else:
            w.write()
            src.close()
            self.mode = "rewrite"
        return self.mode

    def _write_in_place(self, old: bytes, new: bytes) -> None:
        diff = np.flatnonzero(np.frombuffer(old, np.uint8) != np.frombuffer(new, np.uint8))
        if diff.size == 0:
            return
        first, last = int(diff[0]), int(diff[-1])
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as e:
            raise WriteError(f"cannot open for writing: {e.strerror or e}", path=self.path) from e
        try:
            os.pwrite(fd, new[first : last + 1], first)
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> "Editor":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.mode is None:
                self.commit()
        finally:
            self.close()
