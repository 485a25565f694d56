"""Decode one image file safely: by content, fully verified, upright, RGB."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from space.image_io import to_rgb  # one conversion for training and the Space (the Space is uploaded as is)

# Far above any photo in this task, far below what exhausts memory (Pillow's own cap is ~179 MP).
MAX_PIXELS = 40_000_000
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
NEAR_DUPLICATE_BITS = 8  # pHash Hamming distance (of 64 bits) at or below which two images are near duplicates


class BadImageError(ValueError):
    """A file that is not a usable image; the message names the file and the problem."""


def is_hidden(path: Path) -> bool:
    return path.name in IGNORED_NAMES or path.name.startswith(".")


def fingerprint(image: Image.Image) -> tuple[str, np.ndarray]:
    """(sha256 of the decoded pixels: exact duplicates, 64-bit pHash: near duplicates) of an RGB image."""
    return hashlib.sha256(image.tobytes()).hexdigest(), imagehash.phash(image).hash.flatten()


class SplitPrints(NamedTuple):
    """A split's fingerprints in row order: the exact ones, the (N, 64) pHashes, the file names."""

    exact: list[str]
    near: np.ndarray
    files: list[str]


# By the split's ``datasets`` fingerprint (its content and every transform applied): a release loads its splits three
# times (training, the ONNX gate, faithfulness), and a dataset without a validation split is fingerprinted whole to
# make one; each version is decoded once per process.
_PRINTS: dict[str, SplitPrints] = {}
PRINTS_KEPT = 4


def split_fingerprints(split) -> SplitPrints:
    """The fingerprints of a ``datasets`` split with an ``image`` column; rows are decoded one at a time, so
    memory does not grow with the split."""
    key = getattr(split, "_fingerprint", None)
    if key is None or key not in _PRINTS:
        prints = _decoded_fingerprints(split)
        if key is None:
            return prints
        _PRINTS[key] = prints
        while len(_PRINTS) > PRINTS_KEPT:
            del _PRINTS[next(iter(_PRINTS))]
    return _PRINTS[key]


def _decoded_fingerprints(split) -> SplitPrints:
    exact, hashes = [], []
    for row in split.select_columns(["image"]):
        pixels, near = fingerprint(to_rgb(row["image"]))
        exact.append(pixels)
        hashes.append(near)
    files = list(split["file"]) if "file" in split.column_names else [str(i) for i in range(len(split))]
    return SplitPrints(exact, np.stack(hashes) if hashes else np.zeros((0, 64), bool), files)


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


def near_pairs(a: np.ndarray, b: np.ndarray, threshold: int, same: bool = False,
               chunk: int = 1024) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) for every pHash pair within ``threshold`` bits; ``same``: a is b, i < j only.

    Hashes are packed to 64-bit words and compared a chunk of rows at a time: memory is chunk x len(b).
    """
    pack = (np.packbits(a.astype(bool), axis=1).view(">u8").ravel(),
            np.packbits(b.astype(bool), axis=1).view(">u8").ravel())
    found = []
    for start in range(0, len(a), chunk):
        distance = np.bitwise_count(pack[0][start:start + chunk, None] ^ pack[1][None, :])
        for i, j in zip(*np.nonzero(distance <= threshold), strict=True):
            if not same or start + i < j:
                found.append((int(start + i), int(j), int(distance[i, j])))
    return found


def near_duplicate_groups(hashes: np.ndarray, threshold: int = NEAR_DUPLICATE_BITS,
                          labels: list | None = None) -> np.ndarray:
    """A group id per image: images linked by chains of pHash pairs within ``threshold`` bits share one.

    ``labels``: link only images with the same label (a pair across classes is a label conflict,
    reported elsewhere). Ids are the smallest member's index, so they are stable for the same input.
    """
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in near_pairs(hashes, hashes, threshold, same=True):
        if labels is None or labels[i] == labels[j]:
            a, b = root(i), root(j)
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(len(hashes))], dtype=np.int64)


def grouped_validation(labels: list, hashes: np.ndarray, fraction: float, seed: int,
                       threshold: int = NEAR_DUPLICATE_BITS) -> np.ndarray:
    """Which rows go to validation (a boolean per row): per class, a seeded ``fraction`` of it, moving whole groups
    of near duplicates (pHash within ``threshold``, same label) so that no validation image copies a training one.
    Every class needs 2 rows (the callers say so in their own words)."""
    ids = near_duplicate_groups(hashes, threshold, labels)
    groups: dict[int, list[int]] = {}
    for i, group in enumerate(ids.tolist()):
        groups.setdefault(group, []).append(i)
    names = sorted(set(labels))
    rng = np.random.default_rng(seed)
    by_class: dict = {}
    for members in groups.values():
        by_class.setdefault(labels[members[0]], []).append(members)
    chosen = np.zeros(len(labels), dtype=bool)
    for name in names:
        members = by_class[name]
        total = sum(len(g) for g in members)
        target, taken, left = min(max(1, round(fraction * total)), total - 1), 0, []
        for k in rng.permutation(len(members)):
            if taken + len(members[k]) <= target:
                taken += len(members[k])
                chosen[members[k]] = True
            else:
                left += members[k]
        # Groups too big to fit: split some (the leak check then reports them) rather than leave the class short
        # of validation images.
        for n, i in enumerate(rng.permutation(left)):
            chosen[i] = n < target - taken
    return chosen


def leaked(validation: np.ndarray, train: np.ndarray, threshold: int = NEAR_DUPLICATE_BITS) -> np.ndarray:
    """A boolean per validation pHash: True when it is within ``threshold`` bits of a training one (identical
    pixels have identical hashes, so exact copies are among them)."""
    out = np.zeros(len(validation), dtype=bool)
    for i, _, _ in near_pairs(validation, train, threshold):
        out[i] = True
    return out
