"""The restricted .bin reader against ``torch.save`` / ``torch.load``, and against
malicious pickles: each payload tries to create a marker file; the reader must refuse it
with a CheckpointError naming the global, and the marker must not exist."""
import collections
import copyreg
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from gguflite.convert.torchbin import TorchBinFile
from gguflite.errors import CheckpointError
from tests.checkpoints import big_endian_bin


def test_tensors_saved_by_torch_read_back_equal_to_torch_load(tmp_path):
    base = torch.randn(6, 4)
    sd = collections.OrderedDict(
        f32=torch.randn(3, 5), f16=torch.randn(4).half(), f64=torch.randn(2, 2, dtype=torch.float64),
        i64=torch.arange(10), i32=torch.arange(4, dtype=torch.int32), i8=torch.arange(-3, 3, dtype=torch.int8),
        u8=torch.arange(7, dtype=torch.uint8), b=torch.tensor([True, False, True]), scalar=torch.tensor(3.0),
        empty=torch.zeros(0, 3), transposed=base.t(), view=base[2:5, 1:3], param=torch.nn.Parameter(torch.ones(3)))
    torch.save(sd, tmp_path / "m.bin")
    ref = torch.load(tmp_path / "m.bin", weights_only=True)
    with TorchBinFile(tmp_path / "m.bin") as f:
        assert list(f.tensors) == list(sd)
        for name, r in ref.items():
            t = f.tensors[name]
            assert t.shape == tuple(r.shape), name
            np.testing.assert_array_equal(t.load(), r.detach().numpy(), err_msg=name)
            assert not t.load().flags.writeable


def test_bf16_comes_back_as_the_raw_bits(tmp_path):
    x = torch.randn(3, 4).bfloat16()
    torch.save({"x": x}, tmp_path / "b.bin")
    with TorchBinFile(tmp_path / "b.bin") as f:
        assert f.tensors["x"].dtype == "BF16"
        np.testing.assert_array_equal(f.tensors["x"].load(), x.view(torch.int16).numpy().view(np.uint16))


# --------------------------------------------------------------------------- hostile input


def _torch_zip(path, pkl: bytes, records: dict | None = None):
    """A zip laid out like torch.save's, holding ``pkl`` as data.pkl."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for k, v in (records or {}).items():
            z.writestr(f"archive/data/{k}", v)
        z.writestr("archive/version", "3\n")
    return path


def saved_records(path, obj) -> tuple[bytes, bytes]:
    """``torch.save(obj, path)``, then the archive's data.pkl and first storage record."""
    torch.save(obj, path)
    with zipfile.ZipFile(path) as z:
        root = z.namelist()[0].split("/")[0]
        return z.read(f"{root}/data.pkl"), z.read(f"{root}/data/0")


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        import builtins
        return (builtins.eval, (self.code,))


def _payloads(marker):
    touch = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    yield "os.system via __reduce__", pickle.dumps({"w": _System(touch)}, protocol=2)
    yield "builtins.eval via __reduce__", pickle.dumps(collections.OrderedDict(w=_Eval(code)), protocol=2)
    # protocol 0 GLOBAL + REDUCE, hand-written
    yield "GLOBAL posix.system", b"cposix\nsystem\n(V" + touch.encode() + b"\ntR."
    # INST opcode builds an instance of an arbitrary class by calling it
    yield "INST os.system", b"(V" + touch.encode() + b"\nios\nsystem\n."
    # STACK_GLOBAL with module and name strings fetched back from the memo
    yield "STACK_GLOBAL from memo", (b"\x80\x04" + b"\x8c\x02os\x94" + b"\x8c\x06system\x94" + b"h\x00h\x01\x93"
                                     + b"\x8c" + bytes([len(touch)]) + touch.encode() + b"\x85R.")
    # a nested GLOBAL hidden in the arguments of an allowed function
    yield "nested GLOBAL inside _rebuild_tensor_v2", (
        b"\x80\x02}X\x01\x00\x00\x00w" + b"ctorch._utils\n_rebuild_tensor_v2\n"
        + b"(cbuiltins\neval\nX" + len(code).to_bytes(4, "little") + code.encode() + b"\x85R"
        + b"K\x00K\x01\x85K\x01\x85\x89ctorch\nFloatStorage\n\x85Rt" + b"R" + b"s.")
    # an allowed global first (memoised), then the real payload
    yield "allowed global then os.system", (b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01"
                                            b"cos\nsystem\nq\x02X" + len(touch).to_bytes(4, "little")
                                            + touch.encode() + b"\x85R.")


@pytest.mark.parametrize("which", range(7))
def test_malicious_pickles_are_refused_and_run_nothing(tmp_path, which):
    marker = tmp_path / "pwned"
    label, pkl = list(_payloads(marker))[which]
    path = _torch_zip(tmp_path / "evil.bin", pkl)
    with pytest.raises(CheckpointError) as e:
        TorchBinFile(path)
    assert not marker.exists(), label
    msg = str(e.value)
    assert str(path) in msg
    assert any(g in msg for g in ("system", "eval")), (label, msg)


def test_pickle_extension_codes_go_through_the_allow_list(tmp_path):
    marker = tmp_path / "pwned"
    copyreg.add_extension("os", "system", 0x7ACE)
    try:
        touch = f"touch {marker}".encode()
        pkl = b"\x80\x02\x83\xce\x7aX" + len(touch).to_bytes(4, "little") + touch + b"\x85R."
        with pytest.raises(CheckpointError, match="os.system"):
            TorchBinFile(_torch_zip(tmp_path / "ext.bin", pkl))
    finally:
        copyreg.remove_extension("os", "system", 0x7ACE)
    assert not marker.exists()


def test_a_storage_too_small_for_the_view_is_refused(tmp_path):
    # size (4,4) over a storage that holds only 8 floats
    pkl = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
           b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x08tQ"
           b"K\x00K\x04K\x04\x86K\x04K\x01\x86\x89ctorch\nFloatStorage\n\x85\x85RtRs.")
    pkl = pkl.replace(b"ctorch\nFloatStorage\n\x85\x85R", b"ccollections\nOrderedDict\n)R")
    path = _torch_zip(tmp_path / "oob.bin", pkl, {"0": b"\0" * 32})
    with pytest.raises(CheckpointError, match="reach element 15 of a 8-element storage"):
        TorchBinFile(path)


def test_a_missing_or_short_storage_record_is_refused(tmp_path):
    pkl, _ = saved_records(tmp_path / "ok.bin", {"w": torch.ones(4)})
    with pytest.raises(CheckpointError, match="missing"):
        TorchBinFile(_torch_zip(tmp_path / "nodata.bin", pkl))
    with pytest.raises(CheckpointError, match="has 8 bytes"):
        TorchBinFile(_torch_zip(tmp_path / "short.bin", pkl, {"0": b"\0" * 8}))


def test_truncated_and_legacy_files_are_refused(tmp_path):
    torch.save({"w": torch.ones(64)}, tmp_path / "ok.bin")
    good = (tmp_path / "ok.bin").read_bytes()
    for cut in (3, 10, len(good) // 2, len(good) - 5):
        (tmp_path / "cut.bin").write_bytes(good[:cut])
        with pytest.raises(CheckpointError):
            TorchBinFile(tmp_path / "cut.bin")
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        TorchBinFile(tmp_path / "legacy.bin")


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a state dict"):
        TorchBinFile(_torch_zip(tmp_path / "list.bin", pickle.dumps([1, 2], protocol=2)))
    with pytest.raises(CheckpointError, match="not a tensor"):
        TorchBinFile(_torch_zip(tmp_path / "int.bin", pickle.dumps({"a": 1}, protocol=2)))


@pytest.mark.parametrize("which", range(7))
def test_each_payload_really_runs_code_under_plain_pickle(tmp_path, which):
    """Guards the test above: a payload that does nothing would be refused for nothing."""
    marker = tmp_path / "pwned"
    label, pkl = list(_payloads(marker))[which]
    try:
        pickle.loads(pkl)
    except Exception:
        pass  # what matters is the side effect before any later failure
    assert marker.exists(), label


def test_every_bit_flip_of_a_saved_file_fails_cleanly_or_reads(tmp_path):
    torch.save(collections.OrderedDict(w=torch.randn(3, 4).half(), b=torch.arange(5)), tmp_path / "ok.bin")
    good = (tmp_path / "ok.bin").read_bytes()
    rng = np.random.default_rng(1)
    path = tmp_path / "flip.bin"
    for pos in rng.integers(0, len(good), 400):
        buf = bytearray(good)
        buf[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(buf))
        try:
            with TorchBinFile(path) as f:
                for t in f.tensors.values():
                    t.load()
        except CheckpointError:
            pass


def test_a_big_endian_archive_is_read_in_native_order(tmp_path):
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, tmp_path / "le.bin")
    big_endian_bin(tmp_path / "le.bin", tmp_path / "be.bin")
    with TorchBinFile(tmp_path / "be.bin") as f:
        np.testing.assert_array_equal(f.tensors["w"].load(), np.arange(6, dtype=np.float32).reshape(2, 3))


# --------------------------------------------------------------------------- bounds on hostile files


def test_a_module_state_dict_with_its_metadata_build_reads_like_torch_load(tmp_path):
    """torch.save of ``module.state_dict()`` BUILDs ``_metadata`` onto the OrderedDict: the
    one BUILD the reader must still allow."""
    import pickletools

    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2), torch.nn.Embedding(4, 2))
    torch.save(m.state_dict(), tmp_path / "m.bin")
    with zipfile.ZipFile(tmp_path / "m.bin") as z:
        pkl = z.read([n for n in z.namelist() if n.endswith("data.pkl")][0])
    assert any(op.name == "BUILD" for op, _, _ in pickletools.genops(pkl))
    ref = torch.load(tmp_path / "m.bin", weights_only=True)
    with TorchBinFile(tmp_path / "m.bin") as f:
        assert list(f.tensors) == list(ref)
        for name, r in ref.items():
            np.testing.assert_array_equal(f.tensors[name].load(), r.numpy(), err_msg=name)


def test_build_on_a_storage_record_is_refused(tmp_path):
    pkl, _ = saved_records(tmp_path / "ok.bin", {"w": torch.ones(4)})
    # BINPERSID then BUILD {"numel": 1} on the fresh _StorageRef
    i = pkl.index(b"Q", pkl.index(b"cpu")) + 1
    evil = pkl[:i] + b"}X\x05\x00\x00\x00numelK\x01sb" + pkl[i:]
    assert evil != pkl
    with pytest.raises(CheckpointError, match="BUILD") as e:
        TorchBinFile(_torch_zip(tmp_path / "evil.bin", evil, {"0": b"\0" * 16}))
    assert str(tmp_path / "evil.bin") in str(e.value)


@pytest.mark.parametrize("make, words", [
    (lambda: torch.arange(3.0).expand(4, 3), "zero stride"),
    (lambda: torch.arange(6.0).as_strided((4, 3), (1, 1)), "overlapping"),
])
def test_broadcast_and_overlapping_views_saved_by_torch_are_refused(tmp_path, make, words):
    torch.save({"w": make()}, tmp_path / "v.bin")
    with pytest.raises(CheckpointError, match=words) as e:
        TorchBinFile(tmp_path / "v.bin")
    assert e.value.tensor == "w" and str(tmp_path / "v.bin") in str(e.value)


def test_a_size_one_dim_with_a_zero_stride_still_reads(tmp_path):
    """Like a broadcast position_ids buffer: stride 0 on a dim of 1 repeats nothing."""
    x = torch.arange(5).as_strided((1, 5), (0, 1))
    assert x.stride() == (0, 1)
    torch.save({"position_ids": x}, tmp_path / "p.bin")
    with TorchBinFile(tmp_path / "p.bin") as f:
        np.testing.assert_array_equal(f.tensors["position_ids"].load(), x.numpy())


@pytest.mark.parametrize("pkl, words", [
    (b"\x80\x02" + b")" + b"\x85" * 100 + b".", "nests objects 33 deep"),
    (b"\x80\x02X\xa0\x86\x01\x00" + b"x" * 100_000 + b"0" + b"N" * 10_001 + b".", "more than 10000 items"),
    (b"\x80\x02}N" + b"r\xff\xff\xff\x7f" + b"0.", "out of order"),
    (b"\x80\x02}h\x05.", "never written"),
    (b"\x80\x02]" + b"]a" * 50_000 + b"0}.", "bytes of objects"),
    (b"\x80\x02}", "not a valid pickle"),
])
def test_pickles_that_would_crash_or_amplify_are_refused_before_loading(tmp_path, pkl, words):
    path = _torch_zip(tmp_path / "p.bin", pkl)
    with pytest.raises(CheckpointError, match=words) as e:
        TorchBinFile(path)
    assert str(path) in str(e.value)


def test_a_compressed_storage_record_is_refused_and_a_deflated_data_pkl_still_reads(tmp_path):
    pkl, rec = saved_records(tmp_path / "ok.bin", {"w": torch.arange(4.0)})
    with zipfile.ZipFile(tmp_path / "rec.bin", "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", rec, compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="compressed"):
        TorchBinFile(tmp_path / "rec.bin")
    with zipfile.ZipFile(tmp_path / "pkl.bin", "w") as z:
        z.writestr("archive/data.pkl", pkl, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("archive/data/0", rec)
    with TorchBinFile(tmp_path / "pkl.bin") as f:
        np.testing.assert_array_equal(f.tensors["w"].load(), np.arange(4, dtype=np.float32))


def test_a_member_inflating_past_the_file_size_is_refused_before_reading(tmp_path):
    pkl = b"\x80\x02}" + b"N0" * 100_000 + b"."
    with zipfile.ZipFile(tmp_path / "bomb.bin", "w") as z:
        z.writestr("archive/data.pkl", pkl, compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="inflates to 200004 bytes") as e:
        TorchBinFile(tmp_path / "bomb.bin")
    assert e.value.offset == 0
