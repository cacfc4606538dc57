"""Cross-compatibility with the incumbent, gguf (gguf-py) 0.19.0, both ways:
files we write read identically with its GGUFReader; files its GGUFWriter writes read
identically with ours; for the same content our bytes equal its bytes (gguf-py drops
empty strings and arrays, so byte equality is checked on non-empty content)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gguflite
from gguflite import GGUFWriter, ValueType as V
from gguflite.types import TYPE_TRAITS, VALUE_DTYPES
from tests.gguf_builders import keys, tensors, typed_values

import gguf

# the types gguf-py knows with the right sizes (it says Q8_1 is 40 bytes; libggml: 36)
GGPY_TYPES = [t for t, tr in TYPE_TRAITS.items()
              if gguf.GGML_QUANT_SIZES.get(t) == (tr.block_size, tr.type_size)]


def ggpy_write(path, md, ts, endian="<", alignment=None):
    """Write with gguf-py: metadata in dict order after general.architecture."""
    w = gguf.GGUFWriter(str(path), arch="llama",
                        endianess=gguf.GGUFEndian.BIG if endian == ">" else gguf.GGUFEndian.LITTLE)
    if alignment:
        w.add_custom_alignment(alignment)
    for k, (vt, et, v) in md.items():
        w.add_key_value(k, list(v) if vt == V.ARRAY else v, gguf.GGUFValueType(vt),
                        sub_type=gguf.GGUFValueType(et) if et is not None else None)
    for name, shape, t, arr in ts:
        traits = TYPE_TRAITS[t]
        if traits.dtype is not None and t != 30:
            w.add_tensor(name, arr.copy())
        else:  # raw bytes, shape in bytes per row; raw bytes are written as given, so a
            # big-endian BF16 tensor must be handed over already swapped
            if traits.dtype is not None:
                arr = arr.astype(traits.dtype.newbyteorder(endian))
            row = shape[-1] // traits.block_size * traits.type_size
            w.add_tensor(name, arr.reshape(-1).view(np.uint8).reshape(*shape[:-1], row).copy(), raw_dtype=gguf.GGMLQuantizationType(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def our_write(path, md, ts, endian="<", alignment=None):
    w = GGUFWriter(path, endian=endian, alignment=alignment)
    w.add("general.architecture", "llama")
    if alignment:
        w.add("general.alignment", alignment)
    for k, (vt, et, v) in md.items():
        w.add(k, v, (V.ARRAY, et) if vt == V.ARRAY else vt)
    for name, shape, t, arr in ts:
        w.add_tensor(name, shape, t, arr)
    w.write()


def ggpy_read(path):
    r = gguf.GGUFReader(str(path))
    md = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        vt = V(f.types[0])
        et = V(f.types[-1]) if vt == V.ARRAY else None
        md[k] = (vt, et, f.contents())
    ts = [(t.name, tuple(int(d) for d in reversed(t.shape.tolist())), int(t.tensor_type), t.data.tobytes())
          for t in r.tensors]
    return md, ts


def our_read(path):
    with gguflite.open(path) as f:
        md = {}
        for k in f.metadata:
            v = f.metadata[k]
            v = v.tolist() if isinstance(v, (np.ndarray, gguflite.StringArray)) else v
            md[k] = (f.fields[k].type, f.fields[k].elem_type, v)
        ts = [(t.name, t.shape, t.type, t.data.tobytes()) for t in f.tensors.values()]
    return md, ts


def same_content(a, b):
    (ma, ta), (mb, tb) = a, b
    assert list(ma) == list(mb)
    for k in ma:
        assert ma[k][:2] == mb[k][:2], k
        va, vb = ma[k][2], mb[k][2]
        assert np.array_equal(np.array(va, dtype=object), np.array(vb, dtype=object)) or va == vb, k
    assert ta == tb


content = st.tuples(
    st.dictionaries(keys.filter(lambda k: not k.startswith("general.")), typed_values(allow_empty=False), max_size=6),
    tensors(types=GGPY_TYPES, max_tensors=3),
)


@settings(max_examples=25)
@given(c=content, endian=st.sampled_from("<>"))
def test_our_bytes_equal_gguf_py_bytes_for_the_same_content(tmp_path_factory, c, endian):
    md, ts = c
    d = tmp_path_factory.mktemp("c")
    our_write(d / "ours.gguf", md, ts, endian)
    ggpy_write(d / "theirs.gguf", md, ts, endian)
    assert (d / "ours.gguf").read_bytes() == (d / "theirs.gguf").read_bytes()


@settings(max_examples=25)
@given(c=content, endian=st.sampled_from("<>"))
def test_gguf_py_reads_our_files_as_we_do_and_we_read_its_files_as_it_does(tmp_path_factory, c, endian):
    md, ts = c
    d = tmp_path_factory.mktemp("c")
    our_write(d / "ours.gguf", md, ts, endian)
    ggpy_write(d / "theirs.gguf", md, ts, endian)
    same_content(our_read(d / "ours.gguf"), ggpy_read(d / "ours.gguf"))
    same_content(our_read(d / "theirs.gguf"), ggpy_read(d / "theirs.gguf"))


def test_a_custom_alignment_gives_the_same_bytes_as_gguf_py(tmp_path):
    ts = [("a", (5,), 0, np.arange(5, dtype=np.float32)), ("b", (2, 3), 1, np.ones((2, 3), np.float16))]
    our_write(tmp_path / "ours.gguf", {}, ts, alignment=64)
    ggpy_write(tmp_path / "theirs.gguf", {}, ts, alignment=64)
    assert (tmp_path / "ours.gguf").read_bytes() == (tmp_path / "theirs.gguf").read_bytes()
    with gguflite.open(tmp_path / "theirs.gguf") as f:
        assert f.alignment == 64 and f.tensors["b"].data.dtype == np.float16


def test_gguf_py_drops_empty_values_that_we_keep(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "theirs.gguf"), arch="llama")
    w.add_string("s", "")
    w.add_array("a", [])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert list(ggpy_read(tmp_path / "theirs.gguf")[0]) == ["general.architecture"]  # the incumbent's data loss
    md = {"s": (V.STRING, None, ""), "a": (V.ARRAY, V.INT32, [])}
    our_write(tmp_path / "ours.gguf", md, [])
    ours = our_read(tmp_path / "ours.gguf")[0]
    assert ours["s"] == (V.STRING, None, "") and ours["a"] == (V.ARRAY, V.INT32, [])
    theirs_view = ggpy_read(tmp_path / "ours.gguf")[0]  # and gguf-py can read what we keep
    assert theirs_view["s"][2] == "" and theirs_view["a"][2] == []


def test_an_unknown_tensor_type_that_breaks_gguf_py_is_readable_here(tmp_path):
    w = GGUFWriter(tmp_path / "u.gguf")
    w.add_tensor("future", (8,), 99, b"\x05" * 32)
    w.write()
    with pytest.raises(Exception):
        gguf.GGUFReader(str(tmp_path / "u.gguf"))
    with gguflite.open(tmp_path / "u.gguf") as f:
        assert bytes(f.tensors["future"].data) == b"\x05" * 32


# --------------------------------------------------------------------------- ggml's C reader


@pytest.fixture(scope="module")
def cgguf():
    """libggml's own gguf_init_from_file (through ggml_bind's cffi), the reader llama.cpp uses."""
    try:
        from ggml_bind import lib

        return lib.C(), lib.ffi()
    except Exception as e:  # noqa: BLE001  (GGMLLoadError or a missing ggml_bind: say why)
        pytest.skip(f"libggml is not available: {e}")


def c_read(cgguf, path):
    """Everything ggml's C reader sees in ``path`` (None if it refuses the file)."""
    C, ffi = cgguf
    pctx = ffi.new("struct ggml_context **")
    params = ffi.new("struct gguf_init_params *")
    params.no_alloc = True
    params.ctx = pctx
    ctx = C.gguf_init_from_file(str(path).encode(), params[0])
    if ctx == ffi.NULL:
        return None
    try:
        getters = {V.UINT8: C.gguf_get_val_u8, V.INT8: C.gguf_get_val_i8, V.UINT16: C.gguf_get_val_u16,
                   V.INT16: C.gguf_get_val_i16, V.UINT32: C.gguf_get_val_u32, V.INT32: C.gguf_get_val_i32,
                   V.FLOAT32: C.gguf_get_val_f32, V.UINT64: C.gguf_get_val_u64, V.INT64: C.gguf_get_val_i64,
                   V.FLOAT64: C.gguf_get_val_f64, V.BOOL: C.gguf_get_val_bool}
        md = {}
        for i in range(C.gguf_get_n_kv(ctx)):
            key = ffi.string(C.gguf_get_key(ctx, i)).decode("utf-8", "surrogateescape")
            vt = V(C.gguf_get_kv_type(ctx, i))
            if vt == V.ARRAY:
                et = V(C.gguf_get_arr_type(ctx, i))
                n = C.gguf_get_arr_n(ctx, i)
                if et == V.STRING:
                    val = [ffi.string(C.gguf_get_arr_str(ctx, i, j)).decode("utf-8", "surrogateescape") for j in range(n)]
                else:
                    dt = VALUE_DTYPES[et]
                    raw = bytes(ffi.buffer(C.gguf_get_arr_data(ctx, i), n * dt.itemsize)) if n else b""
                    val = np.frombuffer(raw, dt).astype(bool if et == V.BOOL else dt).tolist()
                md[key] = (vt, et, val)
            elif vt == V.STRING:
                md[key] = (vt, None, ffi.string(C.gguf_get_val_str(ctx, i)).decode("utf-8", "surrogateescape"))
            else:
                v = getters[vt](ctx, i)
                md[key] = (vt, None, bool(v) if vt == V.BOOL else v)
        ts = []
        for i in range(C.gguf_get_n_tensors(ctx)):
            name = ffi.string(C.gguf_get_tensor_name(ctx, i)).decode()
            t = C.ggml_get_tensor(pctx[0], name.encode())
            ts.append((name, tuple(t.ne), C.gguf_get_tensor_type(ctx, i), C.gguf_get_tensor_offset(ctx, i),
                       C.gguf_get_tensor_size(ctx, i)))
        return {"md": md, "tensors": ts, "alignment": C.gguf_get_alignment(ctx),
                "data_offset": C.gguf_get_data_offset(ctx), "version": C.gguf_get_version(ctx)}
    finally:
        C.gguf_free(ctx)
        if pctx[0] != ffi.NULL:
            C.ggml_free(pctx[0])


def _no_nul(v):
    """C strings stop at NUL: compare only what C can return."""
    if isinstance(v, str):
        return v.split("\0")[0]
    if isinstance(v, list):
        return [_no_nul(x) for x in v]
    return v


@settings(max_examples=25)
@given(c=content, alignment=st.sampled_from([None, 1, 8, 64]))
def test_ggml_c_reader_sees_the_same_keys_values_and_tensors_in_our_files(tmp_path_factory, cgguf, c, alignment):
    md, ts = c
    path = tmp_path_factory.mktemp("c") / "ours.gguf"
    our_write(path, md, ts, alignment=alignment)
    theirs = c_read(cgguf, path)
    assert theirs is not None, "ggml refused a file we wrote"
    with gguflite.open(path) as f:
        assert (theirs["version"], theirs["alignment"], theirs["data_offset"]) == (3, f.alignment, f.data_offset)
        assert list(theirs["md"]) == list(f.fields)
        for k, (vt, et, v) in theirs["md"].items():
            fld = f.fields[k]
            assert (vt, et) == (fld.type, fld.elem_type), k
            ours = f.metadata[k]
            ours = ours.tolist() if isinstance(ours, (np.ndarray, gguflite.StringArray)) else ours
            assert _no_nul(v) == _no_nul(ours) or (vt == V.FLOAT32 and np.float32(v) == np.float32(ours)), k
        want = [(t.name, tuple(reversed(t.shape)) + (1,) * (4 - len(t.shape)), t.type, t.offset, t.nbytes)
                for t in f.tensors.values()]
        assert theirs["tensors"] == want


# files ggml's reader accepts and we refuse, on purpose (documented in gguflite/reader.py):
STRICTER_THAN_GGML = {
    "key not UTF-8": "keys must be UTF-8",
    "bool 2": "a BOOL is 0 or 1",
    "byte size past the end": "ggml checks tensor data against the file only when it loads the data",
}


def test_every_hostile_file_ggml_refuses_we_refuse_too_and_the_exceptions_are_known(tmp_path, cgguf):
    from tests.test_hostile_gguf import HOSTILE

    for name, (raw, error) in HOSTILE.items():
        p = tmp_path / "h.gguf"
        p.write_bytes(raw)
        with pytest.raises(error):
            gguflite.open(p)
        assert (c_read(cgguf, p) is None) == (name not in STRICTER_THAN_GGML), name
