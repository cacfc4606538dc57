"""ggml_bind.preprocess against the original pipelines: transformers' CLIP and LLaVA-NeXT image
processors (Pillow backends), and LLaVA's own expand2square written here as mm_utils has it."""
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from ggml_bind import preprocess as pp

from transformers.models.clip import image_processing_pil_clip as clip_pil
from transformers.models.llava_next import image_processing_pil_llava_next as next_pil
from transformers.image_processing_utils import select_best_resolution as hf_select  # noqa: E402
from transformers.models.llava_next.modeling_llava_next import unpad_image as hf_unpad  # noqa: E402

SIZE = 336
TOL = 1 / 255 / min(pp.CLIP_STD)  # one grey level, after normalisation


def clip_processor():
    return clip_pil.CLIPImageProcessorPil(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )


def next_processor():
    return next_pil.LlavaNextImageProcessorPil(
        size={"shortest_edge": SIZE},
        crop_size={"height": SIZE, "width": SIZE},
        # transformers reads pinpoints as (height, width), LLaVA and GGUF files as (width, height)
        image_grid_pinpoints=[[h, w] for w, h in pp.LLAVA_NEXT_PINPOINTS],
    )


def llava_expand2square(pil_img, background_color):
    # LLaVA: llava/mm_utils.py, verbatim logic
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def noise_image(w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    # smooth-ish content so that resampling differences would show
    base = rng.integers(0, 256, (max(h // 8, 1), max(w // 8, 1), 3), dtype=np.uint8)
    im = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(im).copy()
    arr[::7] = rng.integers(0, 256, arr[::7].shape, dtype=np.uint8)
    return Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)


SIZES = [(500, 200), (200, 500), (336, 336), (337, 1), (1, 900), (1000, 999), (640, 480)]


@pytest.mark.parametrize("w,h", SIZES)
def test_crop_mode_equals_clip_image_processor(w, h):
    im = noise_image(w, h)
    ref = clip_processor()(im, return_tensors="np")["pixel_values"]
    got = pp.preprocess(im, pp.ImageConfig(mode="crop"))
    assert got.pixels.shape == ref.shape == (1, 3, SIZE, SIZE)
    assert got.pixels.dtype == np.float32
    np.testing.assert_allclose(got.pixels, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("w,h", SIZES)
def test_pad_mode_equals_llava_expand2square_then_clip_processor(w, h):
    im = noise_image(w, h, seed=1)
    fill = tuple(int(x * 255) for x in pp.CLIP_MEAN)
    assert fill == (122, 116, 104)
    ref = clip_processor()(llava_expand2square(im, fill), return_tensors="np")["pixel_values"]
    got = pp.preprocess(im, pp.ImageConfig(mode="pad"))
    np.testing.assert_allclose(got.pixels, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("w,h", [(500, 200), (200, 500), (336, 336), (100, 80), (1500, 300), (300, 1500), (1, 1)])
def test_anyres_tiles_equal_llava_next_image_processor(w, h):
    im = noise_image(w, h, seed=2)
    ref = next_processor()(im, return_tensors="np")
    got = pp.preprocess(im, pp.ImageConfig(mode="anyres", grid_pinpoints=pp.LLAVA_NEXT_PINPOINTS))
    n = got.pixels.shape[0]
    cols, rows = got.grid
    assert n == 1 + cols * rows
    # transformers pads the tile axis to the batch maximum; one image -> no padding
    assert ref["pixel_values"].shape[1] == n
    np.testing.assert_allclose(got.pixels, ref["pixel_values"][0], atol=TOL, rtol=0)
    assert tuple(ref["image_sizes"][0]) == (h, w)
    assert got.size == (w, h)


@given(
    w=st.integers(1, 4000),
    h=st.integers(1, 4000),
    pins=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=6, unique=True),
)
def test_best_resolution_matches_transformers_for_any_size(w, h, pins):
    pinpoints = [(a * SIZE, b * SIZE) for a, b in pins]
    got = pp.select_best_resolution((w, h), pinpoints)
    # transformers takes (height, width) everywhere
    ref_h, ref_w = hf_select((h, w), [(ph, pw) for pw, ph in pinpoints])
    assert got == (ref_w, ref_h)


@given(w=st.integers(1, 5000), h=st.integers(1, 5000), cols=st.integers(1, 3), rows=st.integers(1, 3))
@settings(max_examples=200)
def test_unpadded_feature_grid_matches_transformers_unpad_image(w, h, cols, rows):
    import torch

    P = 24
    feats = torch.zeros(1, rows * P, cols * P)
    ref = hf_unpad(feats, (h, w))
    kept_rows, kept_cols, top, left = pp.anyres_layout((w, h), (cols, rows), P)
    assert (kept_rows, kept_cols) == tuple(ref.shape[1:])
    assert top + kept_rows <= rows * P and left + kept_cols <= cols * P


def test_token_count_of_a_square_image_on_672_is_2928():
    # the LLaVA-1.6 number: 576 base + 48 rows of (48 + newline)
    im = noise_image(672, 672)
    cfg = pp.ImageConfig(mode="anyres", grid_pinpoints=pp.LLAVA_NEXT_PINPOINTS)
    assert pp.n_image_tokens(pp.preprocess(im, cfg), cfg) == 576 + 48 * 49


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "PA"])
def test_other_image_modes_give_what_transformers_gives(mode):
    base = noise_image(300, 200, seed=3)
    if mode == "RGBA" or mode == "LA" or mode == "PA":
        alpha = Image.fromarray(np.tile(np.linspace(0, 255, 300).astype(np.uint8), (200, 1)))
        rgba = base.convert("RGBA")
        rgba.putalpha(alpha)
        im = rgba.convert(mode)
    else:
        im = base.convert(mode)
    ref = clip_processor()(im, return_tensors="np")["pixel_values"]
    got = pp.preprocess(im, pp.ImageConfig(mode="crop"))
    np.testing.assert_allclose(got.pixels, ref, atol=TOL, rtol=0)


def test_palette_image_with_transparency_is_composited_on_white():
    im = Image.new("P", (40, 30), 0)
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.paste(1, (0, 0, 20, 30))
    im.info["transparency"] = 0
    rgb = pp.load_image(im)
    arr = np.asarray(rgb)
    assert (arr[:, :20] == (200, 100, 50)).all()
    assert (arr[:, 20:] == 255).all()
    ref = clip_processor()(im, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(pp.preprocess(im, pp.ImageConfig(mode="crop")).pixels, ref, atol=TOL, rtol=0)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    arr = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    im = Image.fromarray(arr)
    assert im.mode.startswith("I;16")
    out = np.asarray(pp.load_image(im))
    assert out.shape == (64, 64, 3)
    assert out.min() == 0 and out.max() == 255  # clipping would saturate almost everything
    assert 100 < out.mean() < 155


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_like_pillow_exif_transpose(tmp_path, orientation):
    im = noise_image(120, 80, seed=4)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    got = pp.load_image(path)
    with Image.open(path) as ref:
        ref = ImageOps.exif_transpose(ref).convert("RGB")
    assert got.size == ref.size
    assert got.size == ((80, 120) if orientation in (6, 8) else (120, 80))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


def test_paths_bytes_and_arrays_load_the_same_pixels(tmp_path):
    im = noise_image(50, 40)
    path = tmp_path / "a.png"
    im.save(path)
    a = np.asarray(pp.load_image(path))
    b = np.asarray(pp.load_image(path.read_bytes()))
    c = np.asarray(pp.load_image(str(path)))
    d = np.asarray(pp.load_image(np.asarray(im)))
    for x in (b, c, d):
        np.testing.assert_array_equal(a, x)


@pytest.mark.parametrize("content", [b"", b"hello, I am not an image\n", None])
def test_unreadable_files_raise_image_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(pp.ImageError) as e:
        pp.preprocess(path, pp.ImageConfig())
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_truncated_png_raises_image_error(tmp_path):
    buf = io.BytesIO()
    noise_image(200, 200).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(pp.ImageError, match="cut.png"):
        pp.load_image(path)


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(pp.ImageError, match="directory"):
        pp.load_image(tmp_path)


def png_header_only(width, height):
    """A PNG claiming width x height whose pixel data is a few bytes (decoding would fail)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from /proc (Linux)")
def test_a_20000_by_20000_image_is_refused_with_bounded_memory(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(20000, 20000))
    # in a fresh interpreter so that its peak RSS measures only this load
    code = textwrap.dedent(f"""
        import sys
        from ggml_bind import preprocess as pp
        try:
            pp.preprocess({str(path)!r}, pp.ImageConfig())
        except pp.ImageError as e:
            print("ERR", e)
        # VmHWM: this process's peak resident memory (ru_maxrss would include the parent's)
        with open("/proc/self/status") as f:
            print("RSS", next(l.split()[1] for l in f if l.startswith("VmHWM")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert "huge.png" in lines["ERR"] and "too large" in lines["ERR"] and "400000000 pixels" in lines["ERR"]
    assert int(lines["RSS"]) < 400_000  # KiB; decoding would need 1.2 GB


def test_a_large_jpeg_is_decoded_at_reduced_scale_within_the_pixel_limit(tmp_path):
    path = tmp_path / "big.jpg"
    noise_image(2400, 1600, seed=5).save(path, quality=80)
    im = pp.load_image(path, max_pixels=400_000)
    assert im.size[0] * im.size[1] <= 400_000
    assert im.size == (600, 400)  # 1/4 scale keeps the aspect ratio
    # and the pixels are a downscaled version of the same picture
    with Image.open(path) as full:
        ref = np.asarray(full.convert("RGB").resize(im.size, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(np.asarray(im, dtype=np.float32) - ref).mean() < 12


def test_a_large_png_over_the_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(3000, 3000))
    with pytest.raises(pp.ImageError, match="over the limit"):
        pp.load_image(path, max_pixels=1_000_000)


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError):
        pp.ImageConfig(mode="stretch")
    with pytest.raises(ValueError):
        pp.ImageConfig(image_size=300, patch_size=14)
    with pytest.raises(ValueError):
        pp.ImageConfig(mode="anyres")
    with pytest.raises(ValueError):
        pp.ImageConfig(mode="anyres", grid_pinpoints=((336, 500),))
