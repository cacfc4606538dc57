"""Image preprocessing for LLaVA-style models, done with Pillow exactly as the originals do it.

Three layouts, chosen by the model (``ImageConfig.mode``):

``pad``     LLaVA-1.5 (``llava/mm_utils.py: process_images``): ``expand2square`` at the original
            size, filled with the mean colour ``int(mean*255)`` and centred at ``(W-H)//2``, then
            CLIP's processor: shortest edge -> ``image_size`` (PIL bicubic, long edge
            ``int(size*long/short)``), centre crop, ``/255``, ``(x-mean)/std``.
``crop``    llava-hf's processor: the same CLIP resize and centre crop without the padding.
``anyres``  LLaVA-1.6: ``select_best_resolution`` over the grid pinpoints, ``resize_and_pad``
            (black, centred), ``image_size`` tiles in row-major order; the base image (a plain
            stretch to ``image_size``) comes FIRST.  The feature layout that goes with it (unpad,
            ``image_newline`` after each row) is described by :func:`anyres_layout`.

Loading (:func:`load_image`) applies the EXIF orientation, turns greyscale, palette and other
modes into RGB, and composites transparency onto white (as transformers' ``convert_to_rgb``).
Images larger than ``max_pixels`` are never decoded at full size: a JPEG is decoded at a
reduced DCT scale (``Image.draft``), anything else is refused with :class:`ImageError`.

All arrays returned are numpy order: pixels ``[n_tiles, 3, H, W]`` float32.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

#: CLIP's normalisation (openai/clip-vit-*), the default when a file gives none.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: LLaVA-1.6's default pinpoints as (width, height) pairs.
LLAVA_NEXT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))

MODES = ("pad", "crop", "anyres")


class ImageError(ValueError):
    """An image that cannot be used: missing, unreadable, not an image, or too large."""

    def __init__(self, message: str, path=None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


@dataclass(frozen=True)
class ImageConfig:
    """How a model wants its images.  ``grid_pinpoints`` are (width, height) pairs."""

    image_size: int = 336
    patch_size: int = 14
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    mode: str = "pad"
    grid_pinpoints: tuple = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"image mode must be one of {MODES}, not {self.mode!r}")
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a positive multiple of patch_size {self.patch_size}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values, got {self.mean!r} and {self.std!r}")
        if self.mode == "anyres":
            if not self.grid_pinpoints:
                raise ValueError("anyres needs grid pinpoints")
            for w, h in self.grid_pinpoints:
                if w <= 0 or h <= 0 or w % self.image_size or h % self.image_size:
                    raise ValueError(
                        f"grid pinpoint {w}x{h} is not a positive multiple of image_size {self.image_size}"
                    )

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class PreparedImage:
    """What the encoder needs: ``pixels`` [n_tiles, 3, S, S] float32 (base image first for anyres),
    the size (width, height) of the image after loading, and for anyres the tile grid
    (columns, rows)."""

    pixels: np.ndarray
    size: tuple
    grid: tuple | None = None


# --- loading ---------------------------------------------------------------------------------

def load_image(source, max_pixels: int | None = None) -> Image.Image:
    """Open ``source`` (a path, bytes, a file object, a PIL image or an HxWxC uint8 array) as an
    upright RGB image.

    ``max_pixels`` (default ``Image.MAX_IMAGE_PIXELS`` at call time) bounds the memory used
    for decoding: a larger JPEG is decoded at 1/2, 1/4 or 1/8 scale until it fits, any other
    larger image raises :class:`ImageError` before its pixels are read.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    path = source if isinstance(source, (str, os.PathLike)) else None
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source))
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (
            source.ndim == 3 and source.shape[2] not in (1, 3, 4)
        ):
            raise ImageError(f"an image array must be HxW or HxWx{{1,3,4}} uint8, got {source.dtype} {source.shape}")
        arr = source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        with warnings.catch_warnings():
            # we apply our own limit below; Pillow's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large to decode safely ({e})", path) from None
    except FileNotFoundError:
        raise ImageError("no such file", path) from None
    except IsADirectoryError:
        raise ImageError("is a directory, not an image", path) from None
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise ImageError(f"not a readable image ({e})", path) from None
    with im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageError(f"image has no pixels ({w}x{h})", path)
        if w * h > limit:
            if im.format != "JPEG":
                raise ImageError(
                    f"{w}x{h} = {w * h} pixels is over the limit of {limit}; "
                    "downscale it first or raise max_pixels", path)
            # JPEG: let libjpeg decode at a reduced DCT scale so memory stays bounded
            scale = next((s for s in (2, 4, 8) if -(-w // s) * -(-h // s) <= limit), None)
            if scale is None:
                raise ImageError(f"{w}x{h} JPEG is over the limit of {limit} pixels even at 1/8 scale", path)
            im.draft("RGB", (max(1, w // scale), max(1, h // scale)))
        try:
            im.load()
            out = ImageOps.exif_transpose(im)
            return to_rgb(out)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageError(f"image data is corrupt or truncated ({e})", path) from None


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (transformers' ``convert_to_rgb``)."""
    if im.mode == "RGB":
        return im
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    return im.convert("RGB")


# --- geometry (the originals' functions, same arithmetic) -------------------------------------

def expand2square(im: Image.Image, fill: tuple) -> Image.Image:
    """LLaVA's ``expand2square``: paste the image centred on a square of colour ``fill``."""
    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    out = Image.new(im.mode, (side, side), fill)
    out.paste(im, ((side - w) // 2, 0) if w < h else (0, (side - h) // 2))
    return out


def clip_resize_crop(im: Image.Image, size: int) -> Image.Image:
    """CLIPImageProcessor's resize (shortest edge -> ``size``, bicubic) and centre crop."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    if top < 0 or left < 0:  # cannot happen after the resize; guard the arithmetic anyway
        raise ValueError(f"cannot crop {size}x{size} from {new_w}x{new_h}")
    if (new_w, new_h) == (size, size):
        return im
    return im.crop((left, top, left + size, top + size))


def select_best_resolution(size: tuple, pinpoints) -> tuple:
    """LLaVA-1.6's choice of canvas: most effective pixels, then least waste.  ``size`` and the
    pinpoints are (width, height); returns (width, height)."""
    ow, oh = size
    best = None
    max_effective = 0
    min_wasted = float("inf")
    for w, h in pinpoints:
        scale = min(w / ow, h / oh)
        dw, dh = int(ow * scale), int(oh * scale)
        effective = min(dw * dh, ow * oh)
        wasted = w * h - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best = effective, wasted, (w, h)
    return best


def resize_and_pad(im: Image.Image, target: tuple) -> Image.Image:
    """LLaVA-1.6's ``resize_and_pad_image``: fit inside ``target`` (width, height) keeping the
    aspect ratio, then centre on black."""
    ow, oh = im.size
    tw, th = target
    scale_w, scale_h = tw / ow, th / oh
    if scale_w < scale_h:
        nw, nh = tw, min(math.ceil(oh * scale_w), th)
    else:
        nw, nh = min(math.ceil(ow * scale_h), tw), th
    resized = im.resize((nw, nh), Image.Resampling.BICUBIC)
    out = Image.new("RGB", (tw, th), (0, 0, 0))
    out.paste(resized, ((tw - nw) // 2, (th - nh) // 2))
    return out


def tiles(im: Image.Image, tile: int) -> list:
    """Row-major ``tile`` x ``tile`` crops (the canvas is a multiple of ``tile``)."""
    w, h = im.size
    return [im.crop((x, y, x + tile, y + tile)) for y in range(0, h, tile) for x in range(0, w, tile)]


def normalize(im: Image.Image, mean, std) -> np.ndarray:
    """uint8 RGB -> float32 [3, H, W], ``(x/255 - mean)/std``."""
    x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) * np.float32(1 / 255)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return ((x - m) / s).astype(np.float32)


# --- the pipelines ----------------------------------------------------------------------------

def preprocess(image, config: ImageConfig, max_pixels: int | None = None) -> PreparedImage:
    """Load ``image`` (anything :func:`load_image` takes) and make the encoder's input."""
    im = load_image(image, max_pixels=max_pixels)
    size = config.image_size
    if config.mode == "pad":
        fill = tuple(int(m * 255) for m in config.mean)
        pix = normalize(clip_resize_crop(expand2square(im, fill), size), config.mean, config.std)
        return PreparedImage(pix[None], im.size)
    if config.mode == "crop":
        return PreparedImage(normalize(clip_resize_crop(im, size), config.mean, config.std)[None], im.size)
    best = select_best_resolution(im.size, config.grid_pinpoints)
    canvas = resize_and_pad(im, best)
    base = im.resize((size, size), Image.Resampling.BICUBIC)
    parts = [base] + tiles(canvas, size)
    pix = np.stack([normalize(p, config.mean, config.std) for p in parts])
    return PreparedImage(pix, im.size, (best[0] // size, best[1] // size))


def unpadded_shape(size: tuple, grid: tuple, patches_per_side: int) -> tuple:
    """Rows and columns of the feature grid that survive LLaVA-1.6's ``unpad_image``.

    ``size`` is the image's (width, height), ``grid`` the tiles' (columns, rows).  Uses
    transformers' rounding (``round(x, 7)`` before ``int``), which only differs from the
    original's plain ``int`` where float error would drop a whole row.
    """
    ow, oh = size
    cur_w, cur_h = grid[0] * patches_per_side, grid[1] * patches_per_side
    if ow / oh > cur_w / cur_h:
        new_h = int(round(oh * (cur_w / ow), 7))
        pad = (cur_h - new_h) // 2
        return cur_h - 2 * pad, cur_w
    new_w = int(round(ow * (cur_h / oh), 7))
    pad = (cur_w - new_w) // 2
    return cur_h, cur_w - 2 * pad


def anyres_layout(size: tuple, grid: tuple, patches_per_side: int):
    """Where the anyres features go: returns ``(rows, cols, top, left)`` of the kept window in
    the full (grid_rows*P) x (grid_cols*P) feature grid.  The token sequence is the base image's
    P*P features, then for each kept row its ``cols`` features and one ``image_newline``."""
    rows, cols = unpadded_shape(size, grid, patches_per_side)
    full_h, full_w = grid[1] * patches_per_side, grid[0] * patches_per_side
    return rows, cols, (full_h - rows) // 2, (full_w - cols) // 2


def n_image_tokens(prepared: PreparedImage, config: ImageConfig, n_projected: int | None = None) -> int:
    """Tokens the LLM sees for one image.  ``n_projected`` is the projector's tokens per tile
    (P*P for mlp; fewer for ldp); anyres is only defined for the mlp projector."""
    per_tile = config.patches_per_side ** 2 if n_projected is None else n_projected
    if prepared.grid is None:
        return per_tile
    rows, cols, _, _ = anyres_layout(prepared.size, prepared.grid, config.patches_per_side)
    return per_tile + rows * (cols + 1)
