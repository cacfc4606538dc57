"""Split models in the gguf-split convention: split, merge, and open as one model.

Shards are named ``{stem}-{i:05d}-of-{n:05d}.gguf`` with ``i`` counted from 1.  Every
shard is a complete GGUF file with its own tensor offsets and carries ``split.no`` (UINT16,
counted from 0), ``split.count`` (UINT16) and ``split.tensors.count`` (INT32, the total over
all shards), appended after the other keys; only the first shard carries the model's
metadata.  (A non-default ``general.alignment`` is repeated in every shard, since each
shard's layout depends on it.)
"""
from __future__ import annotations

import os
import re

from .errors import BadSplit, GGUFError
from .reader import GGUFFile, _Metadata
from .types import ValueType
from .writer import GGUFWriter

__all__ = ["shard_name", "shard_paths", "split_file", "merge_files", "open_split", "SplitModel"]

V = ValueType
SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
_SHARD_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_name(stem: str, i: int, n: int) -> str:
    """``shard_name("m", 0, 3) == "m-00001-of-00003.gguf"`` (``i`` from 0)."""
    return f"{stem}-{i + 1:05d}-of-{n:05d}.gguf"


def shard_paths(first) -> list[str]:
    """All shard paths of a split model, from the path of any of its shards."""
    first = os.fspath(first)
    m = _SHARD_RE.match(first)
    if not m:
        raise BadSplit("the name does not follow the '-00001-of-0000N.gguf' convention", path=first)
    n = int(m["count"])
    return [shard_name(m["stem"], i, n) for i in range(n)]


def _plan(tensors, max_tensors: int | None, max_size: int | None) -> list[list]:
    """Group tensors into shards: a new shard starts when the current one would exceed
    ``max_tensors`` tensors or ``max_size`` bytes of data; a shard holds at least one."""
    shards: list[list] = [[]]
    size = 0
    for t in tensors:
        cur = shards[-1]
        if cur and ((max_tensors and len(cur) >= max_tensors) or (max_size and size + t.nbytes > max_size)):
            shards.append([])
            cur, size = shards[-1], 0
        cur.append(t)
        size += t.nbytes
    return shards


def split_file(src, stem: str | None = None, *, max_tensors: int | None = None,
               max_size: int | None = None) -> list[str]:
    """Split ``src`` into shards named after ``stem`` (default: ``src`` without
    ``.gguf``); returns their paths.  Each shard is written atomically; if one fails,
    the shards already written are removed."""
    if not max_tensors and not max_size:
        raise GGUFError("give max_tensors or max_size")
    src = os.fspath(src)
    stem = os.fspath(stem) if stem is not None else (src[:-5] if src.endswith(".gguf") else src)
    with GGUFFile(src) as f:
        if SPLIT_COUNT in f.fields:
            raise BadSplit("already a shard of a split model", path=src, key=SPLIT_COUNT)
        plan = _plan(list(f.tensors.values()), max_tensors, max_size)
        n = len(plan)
        if n > 0xFFFF:
            raise BadSplit(f"{n} shards exceed split.count's UINT16 range", path=src)
        paths = [shard_name(stem, i, n) for i in range(n)]
        done: list[str] = []
        try:
            for i, (path, tensors) in enumerate(zip(paths, plan)):
                w = GGUFWriter(path, endian=f.endian, version=f.version, alignment=f.alignment)
                if i == 0:
                    for fld in f.fields.values():
                        w.add_field(fld)
                elif f.alignment != 32:
                    w.add_field(f.fields["general.alignment"])
                w.add(SPLIT_NO, i, V.UINT16)
                w.add(SPLIT_COUNT, n, V.UINT16)
                w.add(SPLIT_TENSORS, len(f.tensors), V.INT32)
                for t in tensors:
                    w.add_tensor_from(t)
                w.write()
                done.append(path)
        except BaseException:
            for p in done:
                try:
                    os.unlink(p)
                except OSError:
                    pass
            raise
    return paths


class SplitModel:
    """Several shards opened as one model: ``metadata``/``fields`` of the first shard,
    ``tensors`` of all shards (each ``TensorInfo`` reads from its own shard's map;
    ``abs_offset`` is within that shard), ``shards`` (the ``GGUFFile``s)."""

    def __init__(self, shards: list[GGUFFile]):
        self.shards = shards
        first = shards[0]
        self.path = first.path
        self.version, self.endian, self.alignment = first.version, first.endian, first.alignment
        self.data_offset = first.data_offset
        self.fields = first.fields
        self.metadata: _Metadata = first.metadata
        self.tensors = {}
        for s in shards:
            for name, t in s.tensors.items():
                if name in self.tensors:
                    raise BadSplit(f"tensor also in {self.tensors[name].file.path}", path=s.path, tensor=name)
                self.tensors[name] = t

    @property
    def closed(self) -> bool:
        return all(s.closed for s in self.shards)

    def validate(self) -> None:
        for s in self.shards:
            s.validate()

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __enter__(self) -> "SplitModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SplitModel {self.path!r}, {len(self.shards)} shards, {len(self.tensors)} tensors>"


def _check_shard(f: GGUFFile, i: int, n: int, total: int | None) -> int:
    def get(key, vtype):
        fld = f.fields.get(key)
        if fld is None or fld.type != vtype:
            raise BadSplit(f"missing or mistyped {key} (must be {vtype.name})", path=f.path, key=key)
        return fld.value

    if get(SPLIT_NO, V.UINT16) != i:
        raise BadSplit(f"split.no is {f.fields[SPLIT_NO].value}, expected {i}", path=f.path, key=SPLIT_NO)
    if get(SPLIT_COUNT, V.UINT16) != n:
        raise BadSplit(f"split.count is {f.fields[SPLIT_COUNT].value}, expected {n}", path=f.path, key=SPLIT_COUNT)
    t = get(SPLIT_TENSORS, V.INT32)
    if total is not None and t != total:
        raise BadSplit(f"split.tensors.count is {t}, the first shard says {total}", path=f.path, key=SPLIT_TENSORS)
    return t


def open_split(first: GGUFFile):
    """Open the other shards of the split model whose shard ``first`` is already open.
    A shard other than the first is returned as it is (one shard)."""
    no = first.fields.get(SPLIT_NO)
    if no is not None and no.value != 0:
        return first
    paths = shard_paths(first.path)
    n = len(paths)
    shards = [first]
    try:
        total = _check_shard(first, 0, n, None)
        for i, p in enumerate(paths[1:], start=1):
            f = GGUFFile(p)
            shards.append(f)
            _check_shard(f, i, n, total)
            if (f.endian, f.version) != (first.endian, first.version):
                raise BadSplit("shards differ in byte order or version", path=p)
        model = SplitModel(shards)
        if len(model.tensors) != total:
            raise BadSplit(f"{len(model.tensors)} tensors in the shards, split.tensors.count says {total}",
                           path=first.path, key=SPLIT_TENSORS)
        return model
    except BaseException:
        for s in shards[1:]:
            s.close()
        raise


def merge_files(first, out) -> str:
    """Merge a split model (given by any shard path) into one file ``out`` (atomic); the
    split.* keys are dropped."""
    first = os.fspath(first)
    f0 = GGUFFile(shard_paths(first)[0])
    try:
        model = open_split(f0)
    except BaseException:
        f0.close()
        raise
    with model:
        w = GGUFWriter(out, endian=model.endian, version=model.version, alignment=model.alignment)
        for key, fld in model.fields.items():
            if not key.startswith("split."):
                w.add_field(fld)
        for t in model.tensors.values():
            w.add_tensor_from(t)
        return w.write()
