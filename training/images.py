"""Decode one image file safely: by content, fully verified, upright, RGB."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Far above any photo in this task, far below what exhausts memory (Pillow's own cap is ~179 MP).
MAX_PIXELS = 40_000_000
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
NEAR_DUPLICATE_BITS = 8  # pHash Hamming distance (of 64 bits) at or below which two images are near duplicates


class BadImageError(ValueError):
    """A file that is not a usable image; the message names the file and the problem."""


def is_hidden(path: Path) -> bool:
    return path.name in IGNORED_NAMES or path.name.startswith(".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a viewer shows it (transparency over white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
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


def fingerprint(image: Image.Image) -> tuple[str, np.ndarray]:
    """(sha256 of the decoded pixels: exact duplicates, 64-bit pHash: near duplicates) of an RGB image."""
    return hashlib.sha256(image.tobytes()).hexdigest(), imagehash.phash(image).hash.flatten()


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str]:
    """Return (upright RGB image, detected format) or raise BadImageError naming ``name``."""
    if not data:
        raise BadImageError(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format
                width, height = probe.size
                if width * height > max_pixels:
                    raise BadImageError(f"{name}: {width}x{height} pixels is above the cap of {max_pixels:,}")
                probe.verify()  # checks structure and CRCs without decoding pixels
            image = Image.open(io.BytesIO(data))
            image.load()  # a truncated file fails here
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image (its content is no known image format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"{name}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{name}: corrupt or truncated image ({e})") from None
    image = ImageOps.exif_transpose(image)
    return to_rgb(image), fmt


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str, bytes]:
    """Read and decode a file; returns (RGB image, format, the raw bytes)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadImageError(f"{path}: cannot read the file ({e.strerror})") from None
    image, fmt = decode_image(data, str(path), max_pixels)
    return image, fmt, data
