"""Turn an upload into a safe, upright RGB image — or a clear message saying what is wrong.

Cheap checks first (file size, header, dimensions) so that absurd files are refused before any
pixel is decoded; big JPEGs are decoded at reduced scale with ``Image.draft``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 16_000_000  # for formats decoded in full (a baseline JPEG is drafted down instead)
MAX_PROGRESSIVE_PIXELS = 24_000_000  # a progressive JPEG is drafted too, but libjpeg holds all its coefficients
MIN_SIDE = 16
MAX_ASPECT = 20
WORK_SIDE = 1024  # images are shrunk to at most this before the model and the heatmap
FORMATS = {"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"}


def limit_pillow() -> None:
    """Pillow refuses anything above this at open, before decoding: its bomb warning (between 1x and 2x) is an
    error too (set once by the server's start-up)."""
    Image.MAX_IMAGE_PIXELS = 4 * MAX_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)


class BadImage(ValueError):
    """The upload can't be classified; the message says why, for the user."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as RGB, the way a viewer shows it (transparency over white, 16-bit rescaled)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        lo, hi = float(array.min()), float(array.max())
        array = (array - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(array)
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def load_upload(path: str | os.PathLike | None) -> Image.Image:
    """Read an uploaded file; raises BadImage with a specific message for anything unusable."""
    if path is None:
        raise BadImage("No image: upload a picture (JPEG, PNG, WebP, GIF, BMP or TIFF) first.")
    size = os.path.getsize(path)
    if size == 0:
        raise BadImage("The file is empty (0 bytes).")
    if size > MAX_FILE_BYTES:
        raise BadImage(f"The file is {size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    with open(path, "rb") as f:
        head = f.read(512).lstrip()
    if head.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        raise BadImage("SVG is a vector drawing, not a photo: export it as PNG or JPEG first.")
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise BadImage("This file is not an image (its content is no known picture format).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"The image has far too many pixels (over {4 * MAX_PIXELS // 1_000_000} megapixels: a "
                       "decompression bomb?); refused.") from None
    width, height = image.size
    if image.format not in FORMATS:
        raise BadImage(f"{image.format} images are not supported: use JPEG, PNG, WebP, GIF, BMP or TIFF.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadImage(f"The image is {width}×{height} pixels: too thin to classify (aspect ratio > {MAX_ASPECT}).")
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"The image is {width}×{height} pixels: too small (each side needs ≥ {MIN_SIDE}).")
    if image.format in ("JPEG", "MPO") and image.info.get("progressive") and width * height > MAX_PROGRESSIVE_PIXELS:
        raise BadImage(f"The image has too many pixels ({width}×{height}) for a progressive JPEG; the limit is "
                       f"{MAX_PROGRESSIVE_PIXELS // 1_000_000} megapixels: save it as a baseline JPEG or smaller.")
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (WORK_SIDE, WORK_SIDE))  # DCT scaling: a 40 MP JPEG decodes at 1/8 size, cheaply
    elif width * height > MAX_PIXELS:
        raise BadImage(f"The image has too many pixels ({width}×{height}); the limit is "
                       f"{MAX_PIXELS // 1_000_000} megapixels for this format.")
    try:
        if getattr(image, "is_animated", False):
            image = next(ImageSequence.Iterator(image)).copy()  # the first frame
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"The image is damaged or truncated and can't be decoded ({e}).") from None
    if image.mode.startswith("I;16"):  # 16-bit: made small in 32-bit integers first, then rescaled to 8 bits
        image = image.convert("I")
    if image.mode in ("I", "F") and max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR)
    image = ImageOps.exif_transpose(image)
    image = to_rgb(image)
    if max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image
