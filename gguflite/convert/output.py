"""Writing the converter's two outputs: streamed one tensor at a time, verified by reading
them back, and renamed into place together (both files or neither).

``write_both([(final_path, metadata, plan), ...], progress)``:

1. each file goes to a hidden temp file in its final folder (``gguflite.writer.AtomicFile``
   with ``defer_rename``: the writer's own temp naming and stale-file cleanup) through
   ``GGUFWriter``, whose tensor sources are callables: each tensor is loaded, permuted,
   cast or quantized only when the writer reaches it, and its CRC32 recorded; once it is
   written, its source pages are released from the process's resident set (``release()``
   of the checkpoint tensor), so the peak RSS is about one tensor, not the whole checkpoint;
2. every temp file is re-opened with ``gguflite.open`` and its keys, tensor names, shapes
   and types compared with what was meant, and its tensor data read back with plain
   ``readinto`` in ``VERIFY_CHUNK`` pieces (not through the mapping, whose touched pages
   would all count as resident) and checked against the recorded CRC32s;
3. only then are the temp files renamed over the final paths.  Any exception or Ctrl-C
   before that removes every temp file; a failure between the renames removes the file
   already renamed.  After a SIGKILL the next conversion into the same folder removes the
   dead run's temp files.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import names
from ..errors import GGUFError
from ..progress import ProgressBar
from ..types import GGMLType, TYPE_TRAITS, tensor_nbytes
from .checkpoint import as_float32


@dataclass
class PlannedTensor:
    """One output tensor: where it comes from and what it becomes."""

    name: str  # GGUF name
    source: object  # lazy checkpoint tensor (name, shape, dtype, load())
    shape: tuple[int, ...]  # numpy order, after squeezing
    type: GGMLType
    permute_heads: int | None = None  # Q/K: n_head / n_head_kv
    crc: int | None = None


SLAB_ELEMENTS = 1 << 22  # rows are cast/quantized this many elements at a time (16 MB as f32)
VERIFY_CHUNK = 1 << 23  # bytes of written tensor data read back at a time


def _tensor_bytes(p: PlannedTensor) -> np.ndarray:
    """The bytes of one output tensor, computed from its source now (streaming).  Casts
    and quantization run over slabs of rows into the preallocated output, so the float32
    temporaries stay ~16 MB whatever the tensor: peak = source view + output + a slab."""
    from .. import quant

    src = p.source
    arr = src.load()
    if p.permute_heads:
        arr = names.permute_qk(arr, p.permute_heads)  # a copy in the source dtype
    arr = arr.reshape(p.shape)
    if p.type == GGMLType.F16 and src.dtype == "F16":
        return np.ascontiguousarray(arr, dtype="<f2")
    if p.type == GGMLType.BF16 and src.dtype == "BF16":
        return np.ascontiguousarray(arr, dtype="<u2")
    traits = TYPE_TRAITS[p.type]
    n = p.shape[-1] if p.shape else 1
    rows = arr.reshape(-1, n)  # (n_rows, n)
    out = np.empty((rows.shape[0], n // traits.block_size * traits.type_size), np.uint8)
    if p.type == GGMLType.F32:
        cast = lambda x: x.astype("<f4", copy=False)  # noqa: E731
    elif p.type == GGMLType.F16:
        cast = lambda x: x.astype("<f2")  # noqa: E731
    else:  # BF16 from another dtype, and the quantized types: bit-exact with ggml
        cast = lambda x: quant.quantize(x, p.type)  # noqa: E731
    step = max(1, SLAB_ELEMENTS // max(n, 1))
    for i in range(0, rows.shape[0], step):
        out[i:i + step] = np.ascontiguousarray(cast(as_float32(rows[i:i + step], src.dtype))).view(np.uint8).reshape(
            -1, out.shape[1])
    return out.reshape(*p.shape[:-1], out.shape[1]) if p.shape else out.reshape(-1)


class _Progress:
    """Bytes and tensors done over both outputs, drawn with gguflite's progress bar."""

    def __init__(self, plans, enabled: bool):
        self.total = sum(_out_nbytes(p) for _, _, plan in plans for p in plan)
        self.n = sum(len(plan) for _, _, plan in plans)
        self.done = self.i = 0
        self.bar = ProgressBar("convert") if enabled and self.n > 0 else None

    def step(self, p: PlannedTensor):
        self.i += 1
        self.done += _out_nbytes(p)
        if self.bar:
            self.bar(self.done, self.total, f"{self.i}/{self.n} tensors  {p.name[:40]:<40}")


def _out_nbytes(p: PlannedTensor) -> int:
    return tensor_nbytes(p.type, tuple(p.shape))


def write_both(jobs, progress: bool) -> None:
    from ..writer import AtomicFile, GGUFWriter

    bar = _Progress(jobs, progress)
    temps: list[AtomicFile] = []
    try:
        for final, meta, plan in jobs:
            w = GGUFWriter(final)
            for key, value, vtype in meta:
                w.add(key, value, type=vtype)
            for p in plan:
                w.add_tensor(p.name, p.shape, p.type, _source(p, bar))
            af = AtomicFile(final, fsync=w.fsync, defer_rename=True)
            temps.append(af)
            with af as fh:
                w.write_to(fh, _releaser(plan))
        for (final, meta, plan), af in zip(jobs, temps):
            _verify(af.tmp, meta, plan)
        done = []
        try:
            for (final, _, _), af in zip(jobs, temps):
                af.commit()
                done.append(final)
        except BaseException:
            for f in done:
                os.unlink(f)
            raise
    finally:
        for af in temps:
            af.discard()  # a no-op for the committed ones


def _source(p: PlannedTensor, bar: _Progress) -> Callable[[], np.ndarray]:
    def make():
        out = _tensor_bytes(p)
        p.crc = zlib.crc32(memoryview(np.ascontiguousarray(out)).cast("B"))
        bar.step(p)
        return out
    return make


def _releaser(plan) -> Callable[[int, int], None]:
    """The writer's ``progress`` callback, called once after each tensor is written (in
    plan order): releases that tensor's source pages.  A source without ``release()``
    holds nothing mapped."""
    written = iter(plan)

    def after_write(done: int, total: int) -> None:
        release = getattr(next(written).source, "release", None)
        if release is not None:
            release()
    return after_write


def _verify(path: str, meta, plan):
    """Re-open a written file and compare it with what was meant to be written."""
    import gguflite

    with gguflite.open(path) as f:
        for key, value, _ in meta:
            got = f.metadata.get(key)
            if isinstance(value, (list, np.ndarray)):
                ok = got is not None and len(got) == len(value) and all(
                    (a == b) or (isinstance(a, float) and np.float32(a) == np.float32(b)) for a, b in zip(got, value))
            elif isinstance(value, float):
                ok = got is not None and np.float32(got) == np.float32(value)
            else:
                ok = got == value
            if not ok:
                raise GGUFError("written file does not read back: metadata differs", path=path, key=key)
        if set(f.tensors) != {p.name for p in plan}:
            raise GGUFError("written file does not read back: tensor set differs", path=path)
        for p in plan:
            info = f.tensors[p.name]
            if tuple(info.shape) != p.shape or int(info.type) != int(p.type):
                raise GGUFError(f"written file does not read back: {info.shape}/{info.type}", path=path, tensor=p.name)
        ranges = [(p, f.tensors[p.name].abs_offset, f.tensors[p.name].nbytes) for p in plan]
    buf = bytearray(min(VERIFY_CHUNK, max((n for _, _, n in ranges), default=0)))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        for p, start, nbytes in sorted(ranges, key=lambda r: r[1]):
            fh.seek(start)
            crc, left = 0, nbytes
            while left:
                got = fh.readinto(view[:min(left, len(buf))])
                if not got:
                    raise GGUFError(f"written file does not read back: ends {left} bytes into tensor data",
                                    path=path, offset=start + nbytes - left, tensor=p.name)
                crc = zlib.crc32(view[:got], crc)
                left -= got
            if crc != p.crc:
                raise GGUFError("written file does not read back: tensor data differs", path=path, offset=start,
                                tensor=p.name)
