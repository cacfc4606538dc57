"""Hostile PyTorch ``.bin`` files for the restricted reader (``gguflite.convert.torchbin``).

tests/test_torchbin.py (the converter's own tests) covers os.system/eval via __reduce__,
GLOBAL+REDUCE, INST, STACK_GLOBAL from the memo, a GLOBAL nested in _rebuild_tensor_v2's
arguments, EXT2, short storages and truncations.  This file adds:

- more ways to reach a callable: OBJ, NEWOBJ, NEWOBJ_EX, EXT1/EXT4, dotted names
  (``_rebuild_tensor_v2.__globals__``), STACK_GLOBAL with non-string operands, a
  disallowed class as the persistent id's storage type, memo overwrites and dangling
  memo references; each payload tries to create a marker file, is checked to really do
  so under plain ``pickle``, and must be refused by the reader without doing so;
- BUILD on the allow-listed objects (it must not change the reader's global state);
- persistent ids and zip member names that point outside the archive (nothing outside
  is read or written);
- zip bombs, opcode amplification, absurd storage and logical sizes (allocation bounded
  by the file's size);
- an interpreter crash (a deeply nested tuple as a dict key overflows the C stack while
  hashing) run in a child process;
- a mutation fuzzer over data.pkl opcodes and the zip bytes of real ``torch.save`` files.

Findings in gguflite/convert/torchbin.py were strict xfails; all are fixed now and their tests plain.
"""
from __future__ import annotations

import copyreg
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from gguflite.convert import torchbin
from gguflite.convert.torchbin import TorchBinFile
from gguflite.errors import CheckpointError, GGUFError
from tests.fuzz_bounds import ALLOC_SLACK, run_bounded
from tests.fuzz_gguf import FUZZ_SCALE, byte_mutation

import torch

pytestmark = pytest.mark.timeout(900)


# --------------------------------------------------------------------------- a tiny pickle assembler


def G(module: str, name: str) -> bytes:
    """GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def S(s: str) -> bytes:
    """BINUNICODE."""
    b = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(b)) + b


def I(n: int) -> bytes:  # noqa: E743  (an opcode, like the others)
    """BININT for 32-bit values, LONG1 otherwise."""
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def T(*parts: bytes) -> bytes:
    """MARK ... TUPLE."""
    return b"(" + b"".join(parts) + b"t"


def tensor_ops(key="0", stype="FloatStorage", numel=4, size=(4,), stride=(1,), offset=0) -> bytes:
    pid = T(S("storage"), G("torch", stype), S(key), S("cpu"), I(numel))
    args = T(pid + b"Q", I(offset), T(*map(I, size)), T(*map(I, stride)), b"\x89",
             G("collections", "OrderedDict") + b")R")
    return G("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict(items: dict[str, bytes]) -> bytes:
    return b"\x80\x02}" + b"".join(S(k) + v + b"s" for k, v in items.items()) + b"."


def torch_zip(path, pkl: bytes, records: dict | None = None, *, root="archive", compress=zipfile.ZIP_STORED,
              pkl_compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo(f"{root}/data.pkl"), pkl, compress_type=pkl_compress)
        z.writestr(zipfile.ZipInfo(f"{root}/byteorder"), b"little")
        z.writestr(zipfile.ZipInfo(f"{root}/version"), b"3\n")
        for k, v in (records or {}).items():
            z.writestr(zipfile.ZipInfo(f"{root}/data/{k}"), v, compress_type=compress)
    return Path(path)


def test_the_assembler_writes_what_torch_load_reads(tmp_path):
    """Guards every hand-built file below: torch itself (weights_only) reads the baseline."""
    data = np.arange(6, dtype=np.float32)
    p = torch_zip(tmp_path / "ok.bin", state_dict({"w": tensor_ops(numel=6, size=(2, 3), stride=(3, 1))}),
                  {"0": data.tobytes()})
    ref = torch.load(p, weights_only=True)
    with TorchBinFile(p) as f:
        np.testing.assert_array_equal(f.tensors["w"].load(), ref["w"].numpy())
    np.testing.assert_array_equal(ref["w"].numpy().ravel(), data)


# --------------------------------------------------------------------------- malicious pickles


def _payloads(marker: Path):
    """(label, data.pkl bytes, runs under plain pickle?)."""
    touch = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    yield "OBJ os.system", b"(" + G("os", "system") + S(touch) + b"o.", True
    yield "OBJ builtins.exec", b"(" + G("builtins", "exec") + S(code) + b"o.", True
    yield "NEWOBJ subprocess.Popen", b"\x80\x02" + G("subprocess", "Popen") + T(T(S("touch"), S(str(marker))) + b"l") + b"\x81.", False
    yield "NEWOBJ_EX subprocess.Popen", (b"\x80\x04" + G("subprocess", "Popen") + T(T(S("touch"), S(str(marker))) + b"l")
                                         + b"}\x92."), False
    yield "REDUCE builtins.exec in OrderedDict's args", (b"\x80\x02" + G("collections", "OrderedDict")
                                                         + T(G("builtins", "exec") + T(S(code)) + b"R") + b"R."), True
    yield "dotted name _rebuild_tensor_v2.__globals__", (b"\x80\x04" + S("torch._utils") + S("_rebuild_tensor_v2.__globals__")
                                                         + b"\x93" + S("os") + b"\x86."), False
    yield "dotted name via builtins.getattr", (b"\x80\x02" + G("builtins", "getattr") + T(G("os", "system") + S("__call__"))
                                               + b"R" + T(S(touch)) + b"R."), True
    yield "STACK_GLOBAL with an int module", b"\x80\x04J\x01\x00\x00\x00" + S("system") + b"\x93.", False
    yield "disallowed class as the storage type", (b"\x80\x02" + G("torch._utils", "_rebuild_tensor_v2")
                                                   + T(T(S("storage"), G("os", "system"), S("0"), S("cpu"), I(1)) + b"Q")
                                                   + b"R."), False
    yield "persistent id built by REDUCE of os.system", (b"\x80\x02" + G("os", "system") + T(S(touch)) + b"RQ."), True
    yield "memo overwrite: allowed global at memo 0, then os.system into memo 0", (
        b"\x80\x02" + G("collections", "OrderedDict") + b"q\x00" + G("os", "system") + b"q\x00" + b"0h\x00"
        + T(S(touch)) + b"R."), True
    yield "dangling memo reference", b"\x80\x02r\xff\xff\xff\x7f" + T(S(touch)) + b"R.", False
    yield "GLOBAL torch.load (allowed module, other name)", (b"\x80\x02" + G("torch", "load") + T(S(str(marker))) + b"R."), False
    yield "GLOBAL numpy _reconstruct", (b"\x80\x02" + G("numpy.core.multiarray", "_reconstruct")
                                        + T(G("numpy", "ndarray") + T(I(0)) + S("b")) + b"R."), False


PAYLOAD_LABELS = [label for label, _, _ in _payloads(Path("x"))]


@pytest.mark.parametrize("label", PAYLOAD_LABELS)
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, label):
    marker = tmp_path / "pwned"
    pkl = {lb: p for lb, p, _ in _payloads(marker)}[label]
    path = torch_zip(tmp_path / "evil.bin", pkl, {"0": b"\0" * 4})
    with pytest.raises(CheckpointError) as e:
        with TorchBinFile(path) as f:
            for t in f.tensors.values():
                t.load()
    assert not marker.exists(), label
    assert str(path) in str(e.value)


@pytest.mark.parametrize("label", [lb for lb, _, runs in _payloads(Path("x")) if runs])
def test_the_payload_really_runs_under_plain_pickle(tmp_path, label):
    """Guards the test above: these payloads do create the marker when unpickled."""
    marker = tmp_path / "pwned"
    pkl = {lb: p for lb, p, _ in _payloads(marker)}[label]
    try:
        obj = pickle.loads(pkl)
        if hasattr(obj, "wait"):
            obj.wait()
    except Exception:
        pass
    deadline = time.time() + 5
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), label


@pytest.mark.parametrize("size", [1, 4])
def test_extension_codes_of_every_width_go_through_the_allow_list(tmp_path, size):
    marker = tmp_path / "pwned"
    code = {1: 0xE1, 4: 0x7ACE0001}[size]
    copyreg.add_extension("posix", "system", code)
    try:
        op = b"\x82" + bytes([code]) if size == 1 else b"\x84" + struct.pack("<i", code)
        pkl = b"\x80\x02" + op + T(S(f"touch {marker}")) + b"R."
        with pytest.raises(CheckpointError, match="system"):
            TorchBinFile(torch_zip(tmp_path / "ext.bin", pkl))
    finally:
        copyreg.remove_extension("posix", "system", code)
    assert not marker.exists()


# --------------------------------------------------------------------------- BUILD on allowed objects


@pytest.fixture
def restore_allow_list():
    """BUILD may change the reader's module-level objects; put them back afterwards so
    that one test's poisoning cannot leak into the next."""
    saved = {k: (dict(v.__dict__) if hasattr(v, "__dict__") else None,
                 getattr(v, "__defaults__", None), getattr(v, "__kwdefaults__", None))
             for k, v in torchbin._ALLOWED.items()}
    yield saved
    for k, v in torchbin._ALLOWED.items():
        d, defaults, kwdefaults = saved[k]
        if d is not None and not isinstance(v, type):
            v.__dict__.clear()
            v.__dict__.update(d)
        if hasattr(v, "__defaults__") and not isinstance(v, type):
            v.__defaults__ = defaults
            v.__kwdefaults__ = kwdefaults


def _allow_list_state():
    return {k: (repr(v), dict(getattr(v, "__dict__", {})) if not isinstance(v, type) else None,
                getattr(v, "__defaults__", None)) for k, v in torchbin._ALLOWED.items()}


def test_build_on_an_allowed_storage_type_cannot_change_how_later_files_read(tmp_path, restore_allow_list):
    evil = b"\x80\x02" + G("torch", "FloatStorage") + b"}" + S("name") + S("DoubleStorage") + b"sb0}."
    try:
        TorchBinFile(torch_zip(tmp_path / "evil.bin", evil)).close()
    except CheckpointError:
        pass
    ok = torch_zip(tmp_path / "ok.bin", state_dict({"w": tensor_ops()}), {"0": np.ones(4, np.float32).tobytes()})
    with TorchBinFile(ok) as f:
        assert f.tensors["w"].dtype == "F32"
        np.testing.assert_array_equal(f.tensors["w"].load(), np.ones(4, np.float32))


def test_build_on_an_allowed_function_leaves_it_unchanged(tmp_path, restore_allow_list):
    before = _allow_list_state()
    evil = (b"\x80\x02" + G("torch._utils", "_rebuild_tensor_v2") + b"N}" + S("__defaults__")
            + T(b"\x88" + I(1) + I(2)) + b"s\x86b0}.")
    try:
        TorchBinFile(torch_zip(tmp_path / "evil.bin", evil)).close()
    except CheckpointError:
        pass
    assert _allow_list_state() == before


def test_build_on_an_allowed_class_is_refused_or_harmless(tmp_path, restore_allow_list):
    """OrderedDict is a C type: BUILD's setattr fails, as a CheckpointError."""
    before = _allow_list_state()
    evil = b"\x80\x02" + G("collections", "OrderedDict") + b"N}" + S("x") + I(1) + b"s\x86b0}."
    with pytest.raises(CheckpointError):
        TorchBinFile(torch_zip(tmp_path / "evil.bin", evil))
    assert _allow_list_state() == before


# --------------------------------------------------------------------------- outside the archive


@pytest.mark.parametrize("key", ["../../../../etc/passwd", "/etc/passwd", "..", "../data.pkl", "0/../../byteorder",
                                 "0\x00", "C:\\Windows\\win.ini"])
def test_persistent_ids_pointing_outside_the_archive_are_missing_records(tmp_path, key):
    p = torch_zip(tmp_path / "k.bin", state_dict({"w": tensor_ops(key=key)}), {"0": b"\0" * 16})
    with pytest.raises(CheckpointError, match="missing"):
        TorchBinFile(p)


@pytest.mark.parametrize("root", ["..", "/abs", "a/../..", "C:"])
def test_zip_member_names_with_traversal_are_never_extracted(tmp_path, root):
    """The reader reads members in place; a member name with ``..`` or an absolute path
    can at most name a record inside the archive, never a file outside it."""
    work = tmp_path / "w"
    work.mkdir()
    before = sorted(os.listdir(tmp_path))
    p = torch_zip(work / "t.bin", state_dict({"w": tensor_ops()}), {"0": np.arange(4, dtype=np.float32).tobytes()},
                  root=root)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        try:
            with TorchBinFile(p) as f:
                np.testing.assert_array_equal(f.tensors["w"].load(), np.arange(4, dtype=np.float32))
        except CheckpointError:
            pass
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path)) == before
    assert sorted(os.listdir(work)) == ["t.bin"]


# --------------------------------------------------------------------------- sizes and bombs


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _open_and_load(p):
    try:
        with TorchBinFile(p) as f:
            for t in f.tensors.values():
                t.load().sum()
    except CheckpointError:
        pass


def test_an_absurd_storage_size_is_refused(tmp_path):
    p = torch_zip(tmp_path / "n.bin", state_dict({"w": tensor_ops(numel=2**62, size=(4,))}), {"0": b"\0" * 16})
    with pytest.raises(CheckpointError, match="bytes, expected"):
        TorchBinFile(p)


def test_a_logical_size_far_beyond_the_storage_is_refused(tmp_path):
    p = torch_zip(tmp_path / "s.bin", state_dict({"w": tensor_ops(numel=1, size=(2**30, 2**30), stride=(0, 0))}),
                  {"0": b"\0" * 4})
    with pytest.raises(CheckpointError):
        with TorchBinFile(p) as f:
            assert f.tensors["w"].nbytes <= p.stat().st_size


def test_a_deflated_data_pkl_bomb_allocates_about_the_file_size(tmp_path):
    pkl = b"\x80\x02}" + b"N0" * (8 << 20) + b"."  # 16 MB of push-None/pop, then an empty dict
    p = torch_zip(tmp_path / "bomb.bin", pkl, pkl_compress=zipfile.ZIP_DEFLATED)
    size = p.stat().st_size
    assert size < 1 << 20
    peak = _peak(lambda: _open_and_load(p))
    assert peak <= 2 * size + ALLOC_SLACK, f"peak {peak} bytes for a {size}-byte file"


def test_a_deflated_storage_record_bomb_allocates_about_the_file_size(tmp_path):
    n = 4 << 20
    p = torch_zip(tmp_path / "rec.bin", state_dict({"w": tensor_ops(numel=n, size=(n,))}),
                  {"0": b"\0" * (4 * n)}, compress=zipfile.ZIP_DEFLATED)
    size = p.stat().st_size
    peak = _peak(lambda: _open_and_load(p))
    assert peak <= 2 * size + ALLOC_SLACK, f"peak {peak} bytes for a {size}-byte file"


def test_unpickling_allocates_about_the_file_size(tmp_path):
    p = torch_zip(tmp_path / "amp.bin", b"\x80\x02" + b"]" * 300_000 + b"}.")
    size = p.stat().st_size
    peak = _peak(lambda: _open_and_load(p))
    assert peak <= 2 * size + ALLOC_SLACK, f"peak {peak} bytes for a {size}-byte file"


# --------------------------------------------------------------------------- the zip layer


def _zip_case(tmp_path, case: str) -> Path:
    comp = {"bad deflate": zipfile.ZIP_DEFLATED, "bad bzip2": zipfile.ZIP_BZIP2}.get(case, zipfile.ZIP_STORED)
    p = torch_zip(tmp_path / "z.bin", state_dict({"w": tensor_ops()}), {"0": np.ones(4, np.float32).tobytes()},
                  pkl_compress=comp)
    raw = bytearray(p.read_bytes())
    cd = raw.find(b"PK\x01\x02")  # the central directory entry of data.pkl (the first member)
    body = raw.find(b"archive/data.pkl") + len("archive/data.pkl")  # its local data (no extra field)
    if case == "central directory offset past its real place":
        e = raw.rfind(b"PK\x05\x06")
        struct.pack_into("<I", raw, e + 16, struct.unpack_from("<I", raw, e + 16)[0] + 4096)
    elif case == "unknown compression method 99":
        struct.pack_into("<H", raw, cd + 10, 99)
        struct.pack_into("<H", raw, 8, 99)
    elif case == "encrypted flag":
        struct.pack_into("<H", raw, cd + 8, 1)
        struct.pack_into("<H", raw, 6, 1)
    elif case == "bad deflate":
        raw[body + 2] ^= 0xFF
        raw[body + 3] ^= 0x55
    elif case == "bad bzip2":
        raw[body + 5] ^= 0xFF
    p.write_bytes(bytes(raw))
    return p


@pytest.mark.parametrize("case", ["central directory offset past its real place", "unknown compression method 99",
                                  "encrypted flag", "bad deflate", "bad bzip2"])
def test_zip_layer_damage_is_a_checkpointerror(tmp_path, case):
    """Each of these raised something other than CheckpointError (OSError, NotImplementedError,
    RuntimeError, zlib.error) until the reader caught everything zipfile raises."""
    p = _zip_case(tmp_path, case)
    try:
        with TorchBinFile(p) as f:
            for t in f.tensors.values():
                t.load()
    except CheckpointError:
        return
    except Exception as e:
        if isinstance(e, GGUFError):
            return
        raise
    pytest.fail("damaged zip read without an error")


def _declared_sizes_past_the_end(raw: bytes) -> bool:
    """Some member's central-directory compressed size runs past the end of the file (the
    finding pinned by the next test)."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            return any(i.header_offset + i.compress_size > len(raw) for i in z.infolist())
    except Exception:  # noqa: BLE001  (an unreadable directory cannot be this finding)
        return False


def test_a_compressed_size_past_the_end_of_the_file_allocates_about_the_file_size(tmp_path):
    p = torch_zip(tmp_path / "cs.bin", state_dict({"w": tensor_ops()}), {"0": np.ones(4, np.float32).tobytes()})
    raw = bytearray(p.read_bytes())
    cd = raw.find(b"PK\x01\x02")  # data.pkl's central-directory entry
    struct.pack_into("<I", raw, cd + 20, 64 << 20)
    p.write_bytes(bytes(raw))
    assert _declared_sizes_past_the_end(bytes(raw))
    peak = _peak(lambda: _open_and_load(p))
    assert peak <= 2 * len(raw) + ALLOC_SLACK, f"peak {peak} bytes for a {len(raw)}-byte file"


# --------------------------------------------------------------------------- crashes


_CHILD = """
import sys
from gguflite.convert.torchbin import TorchBinFile
from gguflite.errors import CheckpointError
try:
    TorchBinFile(sys.argv[1]).close()
    print("read")
except CheckpointError as e:
    print("CheckpointError")
"""


def _in_child(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])


def test_a_deeply_nested_dict_key_does_not_crash_the_interpreter(tmp_path):
    p = torch_zip(tmp_path / "deep.bin", b"\x80\x02}" + b")" + b"\x85" * 200_000 + b"K\x01s.")
    r = _in_child(p)
    assert r.returncode == 0 and r.stdout.strip() == "CheckpointError", (r.returncode, r.stderr[-500:])


def test_a_deeply_nested_persistent_id_is_refused_with_a_checkpointerror(tmp_path):
    """repr() of a 200k-deep list in persistent_load's message raised RecursionError (fixed)."""
    n = 200_000
    p = torch_zip(tmp_path / "pid.bin", b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"Q.")
    with pytest.raises(CheckpointError):
        TorchBinFile(p)


# --------------------------------------------------------------------------- mutation fuzzer


_REAL: dict[int, bytes] = {}


def real_file(seed: int) -> bytes:
    """A torch.save'd state dict with 1-3 small tensors (non-contiguous and shared ones too)."""
    if seed not in _REAL:
        g = torch.Generator().manual_seed(seed)
        base = torch.randn(4, 6, generator=g)
        sd = {"a": base, "b.weight": base.t(), "c": torch.arange(5, dtype=torch.int64),
              "d": base[1:3, ::2].to(torch.float16)}
        sd = dict(list(sd.items())[: 1 + seed % 4])
        buf = io.BytesIO()
        torch.save(sd, buf)
        _REAL[seed] = buf.getvalue()
    return _REAL[seed]


INTERESTING = [0, 1, 2, 3, 4, 255, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**64, -1, -(2**31)]


@st.composite
def mutated_bins(draw, marker: Path) -> bytes:
    raw = real_file(draw(st.integers(0, 7)))
    if draw(st.integers(0, 3)) == 0:  # zip-level: the container itself
        for _ in range(draw(st.integers(1, 3))):
            raw = draw(byte_mutation(raw))
        return raw
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    pkl_name = next(n for n in members if n.endswith("/data.pkl"))
    pkl = members[pkl_name]
    ops = [(pos, op, arg) for op, arg, pos in pickletools.genops(pkl)]
    bounds = [pos for pos, _, _ in ops] + [len(pkl)]
    pieces = [pkl[bounds[i]:bounds[i + 1]] for i in range(len(ops))]
    touch = f"touch {marker}"
    snippets = [G("os", "system") + T(S(touch)) + b"R", b"(" + G("os", "system") + S(touch) + b"o",
                b"\x80\x04" + S("os") + S("system") + b"\x93" + T(S(touch)) + b"R",
                G("torch", "FloatStorage") + b"}" + S("name") + S("DoubleStorage") + b"sb",
                b"N", b"0", b"(", b"t", b"R", b"b", b"s", b"Q", b"h\x00", b"q\x00", b"\x94", b"]", b"}", b")",
                I(draw(st.sampled_from(INTERESTING))), S(draw(st.sampled_from(["storage", "0", "../x", "", "\udcff"])))]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(pieces) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "insert", "int", "swap"]))
        if kind == "delete" and pieces[i] != b".":
            del pieces[i]
        elif kind == "duplicate":
            pieces.insert(i, pieces[i])
        elif kind == "insert":
            pieces.insert(i, draw(st.sampled_from(snippets)))
        elif kind == "int" and ops[min(i, len(ops) - 1)][1].name in ("BININT1", "BININT", "BININT2", "LONG1"):
            pieces[i] = I(draw(st.sampled_from(INTERESTING)))
        elif kind == "swap":
            j = draw(st.integers(0, len(pieces) - 1))
            pieces[i], pieces[j] = pieces[j], pieces[i]
    members[pkl_name] = b"".join(pieces)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def _load_everything(path: Path) -> None:
    """Load every tensor; keep the input (FUZZ_DUMP=file) when anything but a GGUFError escapes."""
    try:
        with TorchBinFile(path) as f:
            for t in f.tensors.values():
                a = t.load()
                assert a.shape == t.shape
                if a.size and t.nbytes <= 1 << 20:
                    a.sum()
                del a
    except GGUFError:
        raise
    except Exception:
        if os.environ.get("FUZZ_DUMP"):
            Path(os.environ["FUZZ_DUMP"]).write_bytes(path.read_bytes())
        raise


def check_bin(raw: bytes, path: Path, marker: Path) -> None:
    path.write_bytes(raw)
    snapshot = _allow_list_state()
    out = run_bounded(path, _load_everything, GGUFError)
    event("read" if out.error is None else type(out.error).__name__)
    assert not marker.exists(), "a payload ran"
    assert _allow_list_state() == snapshot, "BUILD changed the allow list"


def _fuzz_once(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("bin")
    marker = d / "pwned"
    check_bin(data.draw(mutated_bins(marker)), d / "m.bin", marker)


_SHORT = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_LONG = settings(max_examples=max(settings.default.max_examples * FUZZ_SCALE, 100), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SHORT
@given(data=st.data())
def test_mutated_checkpoints_end_in_a_read_or_a_checkpointerror_and_run_nothing(data, tmp_path_factory):
    _fuzz_once(data, tmp_path_factory)


@pytest.mark.fuzz
@pytest.mark.slow
@_LONG
@given(data=st.data())
def test_fuzz_mutated_checkpoints(data, tmp_path_factory):
    _fuzz_once(data, tmp_path_factory)
