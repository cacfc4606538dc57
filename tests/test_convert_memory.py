"""What keeps the converter's resident set at about one tensor: the checkpoint readers'
``release()`` takes a tensor's pages out of this process's mappings (the page cache keeps
them, and views still read the same values), ``output.write_both`` releases every source
once its tensor is written, and the read-back check still compares the written bytes.

Residency is read from ``/proc/self/pagemap`` (the "present" bit of each page under a
view): which of this process's pages are mapped, not a timing or a memory budget."""
import collections
import os
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gguflite.convert import output
from gguflite.convert.output import PlannedTensor, write_both
from gguflite.convert.safetensors import SafetensorsFile, SafetensorsTensor
from gguflite.convert.torchbin import TorchBinFile
from gguflite.errors import GGUFError
from gguflite.types import GGMLType, ValueType
from tests.checkpoints import big_endian_bin

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"),
                                reason="page residency is read from Linux's /proc/self/pagemap")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _resident_pages(view: np.ndarray) -> int:
    """How many pages under ``view``'s bytes are mapped in this process (bit 63 of each
    pagemap entry; readable without privileges)."""
    if view.size == 0:
        return 0
    low, high = np.lib.array_utils.byte_bounds(view)
    first, last = low // PAGE, (high - 1) // PAGE
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = struct.unpack(f"<{last - first + 1}Q", f.read((last - first + 1) * 8))
    return sum(e >> 63 for e in entries)


def _check_release(f, ref: dict) -> None:
    """Every tensor of ``f`` read (pages mapped in), released (none left), and read again."""
    views = {name: t.load() for name, t in f.tensors.items()}
    for name, v in views.items():
        np.testing.assert_array_equal(v, ref[name], err_msg=name)  # reads every page
    assert all(_resident_pages(v) > 0 for v in views.values() if v.size)  # else the next check proves nothing
    for t in f.tensors.values():
        t.release()
    assert {name: _resident_pages(v) for name, v in views.items()} == dict.fromkeys(views, 0)
    for name, v in views.items():  # views taken before the release read the file again
        np.testing.assert_array_equal(v, ref[name], err_msg=name)


def test_released_safetensors_tensors_leave_the_resident_set_and_still_read(tmp_path):
    ref = {"a": torch.randn(300, 1000).half(), "b": torch.randn(77), "c": torch.randn(5, 4000),
           "d": torch.zeros(0, 4)}
    save_file(ref, tmp_path / "m.safetensors")
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        _check_release(f, {k: v.numpy() for k, v in ref.items()})


def test_released_torch_tensors_leave_the_resident_set_strided_views_included(tmp_path):
    base = torch.randn(500, 600)
    sd = collections.OrderedDict(w=torch.randn(400, 700).half(), transposed=base.t(), view=base[100:400, 7:90],
                                 empty=torch.zeros(0, 3), scalar=torch.tensor(2.5))
    torch.save(sd, tmp_path / "m.bin")
    ref = torch.load(tmp_path / "m.bin", weights_only=True)
    with TorchBinFile(tmp_path / "m.bin") as f:
        assert not f.tensors["transposed"].load().flags.c_contiguous
        _check_release(f, {k: v.numpy() for k, v in ref.items()})


def test_a_released_big_endian_tensor_reads_back_in_native_order(tmp_path):
    w = np.arange(300 * 500, dtype=np.float32).reshape(300, 500)
    torch.save({"w": torch.from_numpy(w)}, tmp_path / "le.bin")
    big_endian_bin(tmp_path / "le.bin", tmp_path / "be.bin")
    with TorchBinFile(tmp_path / "be.bin") as f:
        assert f.tensors["w"].load().dtype == np.dtype(">f4")
        _check_release(f, {"w": w})


def _plan(f, names) -> list[PlannedTensor]:
    return [PlannedTensor(n, f.tensors[n], f.tensors[n].shape, GGMLType.F16) for n in names]


META = [("general.architecture", "llama", ValueType.STRING)]


def test_writing_both_outputs_releases_every_source_once_it_is_written(tmp_path, monkeypatch):
    # a and c are written straight from the mapping (F16 -> F16), b is cast from F32
    ref = {"a": torch.randn(300, 1000).half(), "b": torch.randn(64, 2000), "c": torch.randn(5000).half()}
    save_file(ref, tmp_path / "m.safetensors")
    events, real_release, real_bytes = [], SafetensorsTensor.release, output._tensor_bytes

    def released(t):
        events.append(f"release {t.name}")
        real_release(t)

    def computed(p):
        events.append(f"compute {p.name}")
        return real_bytes(p)

    monkeypatch.setattr(SafetensorsTensor, "release", released)
    monkeypatch.setattr(output, "_tensor_bytes", computed)
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        views = [t.load() for t in f.tensors.values()]
        (tmp_path / "out").mkdir()
        write_both([(str(tmp_path / "out" / "x.gguf"), META, _plan(f, ["a", "b"])),
                    (str(tmp_path / "out" / "y.gguf"), META, _plan(f, ["c"]))], progress=False)
        # each source released once its tensor is written, before the next one is computed
        assert events == ["compute a", "release a", "compute b", "release b", "compute c", "release c"]
        assert [_resident_pages(v) for v in views] == [0, 0, 0]
    import gguflite

    with gguflite.open(tmp_path / "out" / "x.gguf") as g:
        np.testing.assert_array_equal(g.tensors["b"].data, ref["b"].half().numpy())
    with gguflite.open(tmp_path / "out" / "y.gguf") as g:
        np.testing.assert_array_equal(g.tensors["c"].data, ref["c"].numpy())


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_written_bytes_that_differ_from_the_computed_ones_fail_the_read_back(tmp_path, monkeypatch, damage):
    save_file({"a": torch.randn(3000).half(), "b": torch.randn(20000).half()}, tmp_path / "m.safetensors")
    real = output._verify

    def damaged(path, meta, plan):
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
            if damage == "flip":  # one bit of the last tensor's data
                fh.seek(size - 7)
                byte = fh.read(1)[0]
                fh.seek(size - 7)
                fh.write(bytes([byte ^ 0x10]))
            else:
                fh.truncate(size - 1000)
        return real(path, meta, plan)

    monkeypatch.setattr(output, "_verify", damaged)
    (tmp_path / "out").mkdir()
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        with pytest.raises(GGUFError, match="does not read back|past the end|truncated|bytes") as e:
            write_both([(str(tmp_path / "out" / "x.gguf"), META, _plan(f, ["a", "b"]))], progress=False)
    if damage == "flip":
        assert "tensor data differs" in str(e.value) and e.value.tensor == "b"
    assert os.listdir(tmp_path / "out") == []
