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
MAX_DECODED_BYTES = 40 * 2**20  # what a full decode (every format but JPEG, which is drafted) may hold: 10 MP of RGB
MAX_PIXELS = 64_000_000  # Pillow refuses more at open, before decoding (and JPEGs are drafted below this)
# Pillow's WebP decoder holds libwebp's RGBA frame and a bytes copy of it beside its own pixels (a 16 MP WebP
# peaked at 245 MiB where a 16 MP PNG took 97).
DECODER_COPIES = {"WEBP": 4}
MAX_PROGRESSIVE_PIXELS = 24_000_000  # a progressive JPEG is drafted too, but libjpeg holds all its coefficients
MIN_SIDE = 16
MAX_ASPECT = 20
WORK_SIDE = 1024  # images are shrunk to at most this before the model and the heatmap
FORMATS = {"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"}


def limit_pillow() -> None:
    """Pillow refuses anything above this at open, before decoding: its bomb warning (between 1x and 2x) is an
    error too (set once by the server's start-up)."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def max_pixels(image_format: str, mode: str) -> int:
    """The most pixels a full decode of this format and mode may have: its pixels' bytes in Pillow (1 for
    "L", "P" and "1"; 2 for 16-bit; 4 for the rest, RGB included), times the decoder's own copies, within
    ``MAX_DECODED_BYTES``."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return min(MAX_PIXELS, MAX_DECODED_BYTES // (per_pixel * DECODER_COPIES.get(image_format, 1)))


def draft_box(width: int, height: int) -> tuple[int, int]:
    """The size to ask ``Image.draft`` for: the working size in the picture's own shape (Pillow keeps both sides
    at least as large as asked, so a square box kept a 6000x4000 JPEG at 1/2 scale instead of 1/4)."""
    longest = max(width, height)
    return -(-WORK_SIDE * width // longest), -(-WORK_SIDE * height // longest)


class BadImage(ValueError):
    """The upload can't be classified; the message says why, for the user."""


DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
BAND_ROWS = 64  # rows converted at a time when an upload is brought to RGB at the working size


def to_rgb(image: Image.Image, extrema: tuple[float, float] | None = None) -> Image.Image:
    """Any Pillow mode as RGB, the way a viewer shows it (transparency over white, 16-bit rescaled over
    ``extrema``, by default the image's own)."""
    if image.mode == "RGB":
        return image
    if image.mode in DEEP_MODES:
        array = np.asarray(image, dtype=np.float32)
        lo, hi = extrema or (float(array.min()), float(array.max()))
        array = (array - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(array)
        return Image.fromarray(array.clip(0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def working_rgb(image: Image.Image) -> Image.Image:
    """A decoded upload as RGB of at most ``WORK_SIDE`` a side. A large one is converted and box-averaged a band
    of rows at a time, so no full-size copy is ever made (a 16 MP RGBA picture would need two or three of 64 MB)."""
    width, height = image.size
    factor = max(1, max(width, height) // WORK_SIDE)  # box-averaged to under 2x the target, then resized (antialiased)
    if factor == 1:  # already under 2x the target (most uploads, drafted JPEGs too): RGB is not even copied
        out = to_rgb(image)
    else:
        extrema = tuple(map(float, image.getextrema())) if image.mode in DEEP_MODES else None
        rows = max(1, BAND_ROWS // factor) * factor  # whole boxes per band: the bands join without a seam
        out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
        for top in range(0, height, rows):
            band = to_rgb(image.crop((0, top, width, min(height, top + rows))), extrema)
            out.paste(band.reduce(factor), (0, top // factor))
    if max(out.size) > WORK_SIDE:
        out.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR)
    return out


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
        raise BadImage(f"The image has far too many pixels (over {MAX_PIXELS // 1_000_000} megapixels: a "
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
        image.draft("RGB", draft_box(width, height))  # DCT scaling: a 40 MP JPEG decodes at 1/8 size, cheaply
    elif width * height > max_pixels(image.format, image.mode):
        raise BadImage(f"The image has too many pixels ({width}×{height}); the limit for a {image.format} like this "
                       f"one is {max_pixels(image.format, image.mode) / 1e6:.1f} megapixels: save it smaller, or as "
                       "a JPEG.")
    try:
        if getattr(image, "is_animated", False):
            image = next(ImageSequence.Iterator(image)).copy()  # the first frame
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"The image is damaged or truncated and can't be decoded ({e}).") from None
    ImageOps.exif_transpose(image, in_place=True)  # a copy only when the picture is turned, never otherwise
    return working_rgb(image)
