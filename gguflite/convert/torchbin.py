"""A restricted, lazy reader for PyTorch ``.bin`` checkpoints (the zip format of
``torch.save`` since 1.6) that needs no torch and can run nothing outside an allow-list.

A ``.bin`` is a zip archive ``<root>/data.pkl`` + ``<root>/data/<key>`` (one uncompressed
record per storage) + ``<root>/byteorder``.  ``data.pkl`` is a pickle, and unpickling an
arbitrary pickle runs arbitrary code: every ``GLOBAL``/``STACK_GLOBAL``/``INST``/``EXT*``
opcode goes through ``find_class``, which here returns only stand-ins from ``_ALLOWED``
(the tensor-rebuild functions, the typed storage classes, ``OrderedDict``) and raises
``CheckpointError`` naming anything else.  Nothing from torch is imported or called.

Hostile files are bounded before anything is built or read:

- zip: every member's local header + compressed size must lie inside the file; a stored
  member's two sizes must agree; data.pkl (and byteorder) may inflate to at most the
  file's size; storage records must be stored (torch never compresses them; they are
  mapped in place, never inflated).
- pickle: ``_prescan_pickle`` walks data.pkl's opcodes first and refuses nesting deeper
  than ``MAX_PICKLE_DEPTH`` (a deep tuple key crashes CPython while hashing), more than
  ``MAX_PICKLE_STACK`` stack items, out-of-order memo indices, and pickles that would
  build more than ``PICKLE_COST_FACTOR`` x their size in Python objects.
- BUILD: every stand-in (storage types, storage refs, rebuild functions, their results)
  refuses ``__setstate__``, so a pickle cannot change the reader's module state; BUILD
  still works on the fresh ``OrderedDict`` a state dict is (its ``_metadata``).
- tensors: at most 64 dims; a dim larger than 1 needs a non-zero stride; the view's
  extent (offset + sum((size-1)*stride) + 1 elements) must fit its storage; and it may
  show no more elements than its storage holds (overlapping and broadcast views are
  refused), so ``nbytes`` never exceeds the storage record's size.  A zero-size tensor's
  dims must fit numpy (product of the non-zero dims x item size < 2**63).

Tensors are lazy: ``load()`` maps the one storage record it needs (zero-copy over the
memory-mapped archive) and returns a read-only strided numpy view; ``release()`` drops the
archive's mapped pages from the process's resident set again (``safetensors.release_pages``:
the page cache keeps them, a view still reads).  The legacy pre-1.6 tar/pickle format is
refused with a clear error.
"""
from __future__ import annotations

import collections
import io
import mmap
import os
import pickle
import pickletools
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError, short_repr
from .safetensors import release_pages

# torch storage class name -> (safetensors-style dtype name, little-endian numpy dtype)
STORAGE_DTYPES: dict[str, tuple[str, np.dtype]] = {
    "DoubleStorage": ("F64", np.dtype("<f8")),
    "FloatStorage": ("F32", np.dtype("<f4")),
    "HalfStorage": ("F16", np.dtype("<f2")),
    "BFloat16Storage": ("BF16", np.dtype("<u2")),
    "LongStorage": ("I64", np.dtype("<i8")),
    "IntStorage": ("I32", np.dtype("<i4")),
    "ShortStorage": ("I16", np.dtype("<i2")),
    "CharStorage": ("I8", np.dtype("i1")),
    "ByteStorage": ("U8", np.dtype("u1")),
    "BoolStorage": ("BOOL", np.dtype("?")),
}


MAX_DIMS = 64  # numpy's NPY_MAXDIMS


def _no_build(self, state):
    """``__setstate__`` of every stand-in: pickle's BUILD calls it instead of writing the
    object's attributes, so a file cannot rewrite a shared stand-in (frozen dataclasses
    only block ``__setattr__``; BUILD would write ``__dict__``)."""
    raise CheckpointError(f"refusing BUILD on {type(self).__name__} (only a state dict's OrderedDict "
                          "takes a state)")


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only its name is used."""

    name: str

    __setstate__ = _no_build


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """What a persistent id ``('storage', type, key, location, numel)`` becomes."""

    key: str
    dtype: str
    np_dtype: np.dtype
    numel: int

    __setstate__ = _no_build


@dataclass(frozen=True)
class TorchTensor:
    """A tensor of a ``.bin`` file, not yet read: ``shape``, ``dtype``, ``load()``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    storage: _StorageRef
    offset: int  # in elements
    stride: tuple[int, ...]
    _file: "TorchBinFile"

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * self.storage.np_dtype.itemsize

    def load(self) -> np.ndarray:
        return self._file._view(self)

    def release(self) -> None:
        """Done with this tensor for now: drop its file's mapped pages from the resident
        set (``safetensors.release_pages``; views still read)."""
        self._file.release()


class _Rebuilt:
    """Result of the ``_rebuild_tensor_v2`` stand-in: arguments only, nothing called."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    __setstate__ = _no_build


class _Function:
    """An allow-listed callable: calls ``fn``; BUILD on it is refused (a bare function
    would let BUILD set its ``__defaults__`` / ``__dict__`` for the rest of the process)."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self._fn.__name__} stand-in is read-only")

    def __repr__(self):
        return f"<allowed {self._fn.__name__}>"

    __setstate__ = _no_build


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _Rebuilt(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Rebuilt(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Function(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


MAX_PICKLE_DEPTH = 32  # nesting of containers/calls; a torch state dict needs about 8
MAX_PICKLE_STACK = 10_000  # stack items; torch's pickler batches dict items by 1000 (~2000 on the stack)
PICKLE_COST_FACTOR = 32  # estimated bytes of unpickled objects allowed per byte of data.pkl ...
# (a torch.save of a 200-layer module state dict estimates at 17x; the real peak is about 9x)
PICKLE_COST_SLACK = 256 * 1024  # ... plus this
# estimated bytes of the Python objects the unpickler makes (CPython 3.11, generous)
_COST_OBJECT, _COST_LIST_ITEM, _COST_DICT_ITEM, _COST_SET_ITEM, _COST_MEMO = 64, 16, 100, 64, 16
_MARK = -1
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
# ops that add to the container below their items and leave that container on the stack
_ITEM_COST = {"APPEND": _COST_LIST_ITEM, "APPENDS": _COST_LIST_ITEM, "SETITEM": _COST_DICT_ITEM,
              "SETITEMS": _COST_DICT_ITEM, "ADDITEMS": _COST_SET_ITEM, "BUILD": _COST_DICT_ITEM}


def _prescan_pickle(data: bytes, path: str) -> None:
    """Walk ``data``'s opcodes (``pickletools.genops``, nothing built) and refuse, before
    ``load()``, a pickle that nests deeper than ``MAX_PICKLE_DEPTH`` (a deep tuple used as
    a dict key overflows the C stack while hashing: the interpreter crashes), keeps more
    than ``MAX_PICKLE_STACK`` items on its stack, uses memo indices out of order (the C
    unpickler sizes its memo array by the largest index), or would build more than
    ``PICKLE_COST_FACTOR`` x its size + ``PICKLE_COST_SLACK`` bytes of Python objects.

    The stack is simulated as one nesting depth per item; the memo as a list of depths.
    Depths are an upper bound for objects built at once (tuples, call results); a mutable
    container grown through a memo alias can be deeper than recorded, but lists, dicts
    and sets are not hashable and their repr/compare/dealloc are recursion-guarded."""
    stack: list[int] = []
    memo: list[int] = []
    cost = 0
    budget = PICKLE_COST_FACTOR * len(data) + PICKLE_COST_SLACK

    def bad(msg, pos):
        return CheckpointError(f"data.pkl {msg}", path=path, offset=pos)

    def pop_to_mark(pos):
        i = len(stack) - 1
        while i >= 0 and stack[i] != _MARK:
            i -= 1
        if i < 0:
            raise bad("pops past a missing MARK", pos)
        items = stack[i + 1:]
        del stack[i:]
        return items

    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name == "STOP":
                break
            if name in _GET_OPS:
                if not (isinstance(arg, int) and 0 <= arg < len(memo)):
                    raise bad(f"reads memo entry {arg}, which was never written", pos)
                stack.append(memo[arg])
                cost += 8
            elif name in _PUT_OPS or name == "MEMOIZE":
                idx = len(memo) if name == "MEMOIZE" else arg
                if not stack or stack[-1] == _MARK:
                    raise bad("memoizes an empty stack", pos)
                if not (isinstance(idx, int) and 0 <= idx <= len(memo)):
                    raise bad(f"writes memo entry {idx} out of order ({len(memo)} written so far)", pos)
                if idx == len(memo):
                    memo.append(stack[-1])
                    cost += _COST_MEMO
                else:
                    memo[idx] = stack[-1]
            elif name == "DUP":
                if not stack:
                    raise bad("duplicates an empty stack", pos)
                stack.append(stack[-1])
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    popped = pop_to_mark(pos)
                    n_below = before.index(pickletools.markobject)
                else:
                    popped, n_below = [], len(before)
                if n_below:
                    if len(stack) < n_below or _MARK in stack[-n_below:]:
                        raise bad(f"{name} finds too few items on the stack", pos)
                    popped = stack[-n_below:] + popped
                    del stack[-n_below:]
                for after in op.stack_after:
                    if after is pickletools.markobject:
                        stack.append(_MARK)
                    elif name in _ITEM_COST:  # container, items -> container
                        inner = max(popped[1:], default=0)
                        stack.append(max(popped[0], inner + 1))
                        per_item = 2 if name in ("SETITEM", "SETITEMS") else 1  # key + value
                        cost += _ITEM_COST[name] * max(len(popped) - 1, 1) // per_item
                    else:  # a new object made of the popped ones
                        stack.append(1 + max(popped, default=-1))
                        cost += _COST_OBJECT + 8 * len(popped)
                        if isinstance(arg, (str, bytes, bytearray)):
                            cost += len(arg)
                        elif isinstance(arg, int) and not isinstance(arg, bool):
                            cost += arg.bit_length() // 8
            if stack and stack[-1] > MAX_PICKLE_DEPTH:
                raise bad(f"nests objects {stack[-1]} deep (at most {MAX_PICKLE_DEPTH})", pos)
            if len(stack) > MAX_PICKLE_STACK:
                raise bad(f"keeps more than {MAX_PICKLE_STACK} items on its stack", pos)
            if cost > budget:
                raise bad(f"would build more than {budget} bytes of objects from {len(data)} bytes "
                          f"(at most {PICKLE_COST_FACTOR}x its size + {PICKLE_COST_SLACK})", pos)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001  genops: truncated or unknown opcodes, bad args
        raise CheckpointError(f"data.pkl is not a valid pickle: {type(e).__name__}: {e}", path=path) from None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: str, big_endian: bool):
        super().__init__(io.BytesIO(data))
        self._path = path
        self._big = big_endian

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"refusing to load global {module}.{name}: not a tensor-rebuild function, "
                "storage type or OrderedDict (the pickle may be malicious)", path=self._path) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and _nonneg_int(pid[4])):
            raise CheckpointError(f"unsupported persistent id {pid!r}", path=self._path)
        dtype, np_dtype = STORAGE_DTYPES[pid[1].name]
        if self._big:
            np_dtype = np_dtype.newbyteorder(">")
        return _StorageRef(pid[2], dtype, np_dtype, pid[4])


class TorchBinFile:
    """``TorchBinFile(path)``: ``.tensors`` (name -> TorchTensor) of a ``torch.save``d
    state dict, read without running any code from the file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4)
            if head != b"PK\x03\x04":
                raise CheckpointError(
                    "not a zip-format PyTorch checkpoint (legacy pre-1.6 .bin files are not supported)",
                    path=self.path, offset=0)
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        try:
            self._open()
        except CheckpointError as e:
            self.close()
            raise e.with_path(self.path)  # the stand-ins' BUILD refusal does not know the path
        except Exception as e:  # noqa: BLE001  zipfile and pickle raise a dozen types on damaged input
            self.close()
            raise CheckpointError(f"corrupt PyTorch checkpoint: {type(e).__name__}: {e}", path=self.path) from None

    def _open(self):
        self._zip = zipfile.ZipFile(self.path)  # reads only the central directory
        names = self._zip.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError(f"expected exactly one <root>/data.pkl, found {pkl}", path=self.path)
        self._root = pkl[0][: -len("data.pkl")]
        self._infos = {i.filename: i for i in self._zip.infolist()}
        for info in self._infos.values():
            self._check_member(info)
        byteorder = self._root + "byteorder"
        big = byteorder in names and self._read_small(byteorder).strip() == b"big"
        data = self._read_small(pkl[0])
        _prescan_pickle(data, self.path)
        obj = _RestrictedUnpickler(data, self.path, big).load()
        del data
        if not isinstance(obj, dict):
            raise CheckpointError(f"data.pkl holds a {type(obj).__name__}, not a state dict", path=self.path)
        self.tensors: dict[str, TorchTensor] = {}
        for name, value in obj.items():
            if not isinstance(name, str) or not isinstance(value, _Rebuilt):
                raise CheckpointError(f"entry {name!r} is not a tensor", path=self.path)
            self.tensors[name] = self._tensor(name, value)

    def _check_member(self, info: zipfile.ZipInfo) -> None:
        """Sizes from the central directory, checked before anything is read: zipfile would
        otherwise ask for (and allocate) a declared size whatever the file holds."""
        def bad(msg):
            return CheckpointError(f"zip member {info.filename!r} {msg}", path=self.path, offset=info.header_offset)

        if info.header_offset + 30 + info.compress_size > self.size:
            raise bad(f"claims {info.compress_size} compressed bytes past the end of the {self.size}-byte file")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise bad(f"is stored but claims {info.file_size} bytes in {info.compress_size}")
        if info.file_size > self.size:
            raise bad(f"inflates to {info.file_size} bytes, more than the {self.size}-byte file")

    def _read_small(self, name: str) -> bytes:
        """A metadata member (data.pkl, byteorder), at most its checked declared size."""
        info = self._infos[name]
        with self._zip.open(info) as f:
            data = f.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise CheckpointError(f"zip member {name!r} holds {len(data)} bytes, declared {info.file_size}",
                                  path=self.path, offset=info.header_offset)
        return data

    def _tensor(self, name: str, r: _Rebuilt) -> TorchTensor:
        s = r.storage
        if not isinstance(s, _StorageRef):
            raise CheckpointError("tensor storage is not a storage record", path=self.path, tensor=name)
        if not (isinstance(r.size, (tuple, list)) and isinstance(r.stride, (tuple, list))):
            raise CheckpointError("tensor size and stride must be tuples", path=self.path, tensor=name)
        size, stride = tuple(r.size), tuple(r.stride)
        if (len(size) != len(stride) or not all(map(_nonneg_int, size + stride)) or not _nonneg_int(r.offset)):
            raise CheckpointError(f"bad size {short_repr(size)} / stride {short_repr(stride)} / offset {short_repr(r.offset)}",
                                  path=self.path, tensor=name)
        if len(size) > MAX_DIMS:
            raise CheckpointError(f"{len(size)} dims, more than the {MAX_DIMS} numpy can hold",
                                  path=self.path, tensor=name)
        count = nonzero = 1
        for d in size:
            count *= d
            nonzero *= d or 1
        if count:  # a non-empty tensor: its elements must be distinct elements of the storage
            for d, st in zip(size, stride):
                if d > 1 and st == 0:
                    raise CheckpointError(f"size {size} stride {stride}: a zero stride on a dim of {d} "
                                          "(broadcast views are refused)", path=self.path, tensor=name)
            last = r.offset + sum((d - 1) * st for d, st in zip(size, stride))
            if last >= s.numel:
                raise CheckpointError(
                    f"size {size} stride {stride} offset {r.offset} reach element {last} of a "
                    f"{s.numel}-element storage", path=self.path, tensor=name)
            if count > s.numel:
                raise CheckpointError(
                    f"size {size} stride {stride} shows {count} elements of a {s.numel}-element storage "
                    "(overlapping views are refused)", path=self.path, tensor=name)
        elif nonzero * s.np_dtype.itemsize >= 2**63:
            raise CheckpointError(f"empty tensor of size {size} is too big for numpy", path=self.path, tensor=name)
        info = self._infos.get(f"{self._root}data/{s.key}")
        if info is None:
            raise CheckpointError(f"storage record data/{s.key} is missing", path=self.path, tensor=name)
        if info.file_size != s.numel * s.np_dtype.itemsize:
            raise CheckpointError(
                f"storage data/{s.key} has {info.file_size} bytes, expected {s.numel} x {s.dtype}",
                path=self.path, tensor=name)
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"storage data/{s.key} is compressed (method {info.compress_type}); torch.save stores records "
                "uncompressed and this reader maps them in place", path=self.path, offset=info.header_offset,
                tensor=name)
        return TorchTensor(name, s.dtype, size, s, r.offset, stride, self)

    def _record(self, t: TorchTensor) -> np.ndarray:
        """The whole storage of ``t`` as a 1-D read-only array over the mmap."""
        info = self._infos[f"{self._root}data/{t.storage.key}"]  # stored: checked in _tensor
        h = info.header_offset
        if h + 30 > self.size or self._map[h:h + 4] != b"PK\x03\x04":
            raise CheckpointError("bad local zip header", path=self.path, offset=h, tensor=t.name)
        name_len, extra_len = struct.unpack("<HH", self._map[h + 26:h + 30])
        start = h + 30 + name_len + extra_len
        if start + info.file_size > self.size:
            raise CheckpointError("storage record runs past the end of the file", path=self.path, offset=start, tensor=t.name)
        return np.frombuffer(self._map, t.storage.np_dtype, count=t.storage.numel, offset=start)

    def release(self) -> None:
        """Drop every mapped page of the archive from the resident set (``release_pages``)."""
        release_pages(self._map)

    def _view(self, t: TorchTensor) -> np.ndarray:
        try:
            return self._strided(t)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001  a damaged compressed record (zlib, CRC, method)
            raise CheckpointError(f"corrupt storage record: {type(e).__name__}: {e}", path=self.path,
                                  tensor=t.name) from None

    def _strided(self, t: TorchTensor) -> np.ndarray:
        if self._map.closed:
            raise CheckpointError("file is closed", path=self.path, tensor=t.name)
        if not all(t.shape):
            empty = np.zeros(t.shape, t.storage.np_dtype)
            empty.flags.writeable = False
            return empty
        base = self._record(t)
        item = base.itemsize
        # extent checked in _tensor: offset + sum((d-1)*stride) < numel
        return np.lib.stride_tricks.as_strided(
            base[t.offset:], shape=t.shape, strides=tuple(st * item for st in t.stride), writeable=False)

    def close(self):
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
        try:
            self._map.close()
        except BufferError:  # views still alive; the GC closes the map with them
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



def _nonneg_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0
