"""Generated image folders of any size: 2 to 1,000 classes, a few images each (the small-folder checks).

    python -m bench.folders OUT --classes 50 --per_class 6 [--validation_per_class 4] [--seed 0]

Class ``k`` is a shape (``k % 10``) in a colour (``k // 10 % 10``) over a background texture
(``k // 100``): every class differs from every other in at least one of the three, and each image
varies in place, size, background and noise. With ``--validation_per_class`` the folder has
train/ and validation/; without, one folder per class (the pipeline makes the split).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(230, 40, 40), (40, 200, 60), (40, 80, 230), (240, 200, 30), (160, 50, 200), (30, 200, 200),
           (250, 130, 20), (250, 250, 250), (250, 100, 180), (90, 60, 20)]
SHAPES = ("disc", "square", "triangle", "ring", "bar", "cross", "diamond", "dot", "star", "frame")
TEXTURES = ("plain", "stripes", "checks", "dots", "grid", "waves", "diagonal", "rings", "noise", "halves")
MAX_CLASSES = len(SHAPES) * len(COLOURS) * len(TEXTURES)


def class_name(kind: int) -> str:
    shape, colour, texture = kind % 10, kind // 10 % 10, kind // 100
    return f"{SHAPES[shape]}_{colour}_{TEXTURES[texture]}"


def texture(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) in 0..1: the class's background pattern at a random phase."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase, period = rng.uniform(0, 1), 6 + rng.uniform(-1, 1)
    pattern = {
        "plain": np.zeros((size, size), np.float32),
        "stripes": (np.sin(2 * np.pi * (xx * period + phase)) > 0),
        "checks": ((np.floor(xx * period + phase) + np.floor(yy * period + phase)) % 2),
        "dots": (np.hypot((xx * period + phase) % 1 - 0.5, (yy * period + phase) % 1 - 0.5) < 0.2),
        "grid": ((((xx * period + phase) % 1) < 0.15) | (((yy * period + phase) % 1) < 0.15)),
        "waves": (np.sin(2 * np.pi * (xx * period + 0.5 * np.sin(2 * np.pi * yy * 2) + phase)) > 0),
        "diagonal": (np.sin(2 * np.pi * ((xx + yy) * period / 1.4 + phase)) > 0),
        "rings": (np.sin(2 * np.pi * (np.hypot(xx - 0.5, yy - 0.5) * period * 1.5 + phase)) > 0),
        "noise": rng.uniform(0, 1, (size, size)) > 0.5,
        "halves": (xx + 0.2 * (phase - 0.5) > 0.5),
    }[TEXTURES[kind // 100]]
    return np.asarray(pattern, np.float32)


def tile_image(kind: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One picture of class ``kind`` (0 <= kind < 1,000)."""
    base = rng.integers(40, 140, 3)
    pixels = base[None, None, :] + 70 * texture(kind, rng, size)[..., None] + rng.normal(0, 10, (size, size, 3))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 6, size // 3))
    x, y = (int(v) for v in rng.integers(r, size - r, 2))
    colour, shape = COLOURS[kind // 10 % 10], SHAPES[kind % 10]
    if shape in ("disc", "dot"):
        rr = r if shape == "disc" else r // 2
        draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=colour)
    elif shape == "ring":
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=max(2, r // 3))
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(x, y - r), (x - r, y), (x, y + r), (x + r, y)], fill=colour)
    elif shape == "cross":
        w = max(2, r // 4)
        draw.rectangle([x - r, y - w, x + r, y + w], fill=colour)
        draw.rectangle([x - w, y - r, x + w, y + r], fill=colour)
    elif shape == "bar":
        draw.rectangle([x - r, y - max(2, r // 3), x + r, y + max(2, r // 3)], fill=colour)
    elif shape == "star":
        points = [(x + (r if i % 2 == 0 else r // 2) * np.cos(np.pi * i / 5 - np.pi / 2),
                   y + (r if i % 2 == 0 else r // 2) * np.sin(np.pi * i / 5 - np.pi / 2)) for i in range(10)]
        draw.polygon(points, fill=colour)
    elif shape == "frame":
        draw.rectangle([x - r, y - r, x + r, y + r], outline=colour, width=max(2, r // 3))
    else:
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
    return image


def make_folder(root: Path, classes: int, per_class: int, validation_per_class: int = 0, seed: int = 0,
                size: int = 64) -> Path:
    """``root/<class>/<i>.png`` (``per_class`` each), or train/ and validation/ with ``validation_per_class``."""
    if not 2 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 2 and {MAX_CLASSES}, got {classes}")
    rng = np.random.default_rng(seed)
    parts = (("train", per_class), ("validation", validation_per_class)) if validation_per_class else (("", per_class),)
    for split, count in parts:
        for kind in range(classes):
            folder = root / split / class_name(kind)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                tile_image(kind, rng, size).save(folder / f"{i}.png")
    return root


def digits_folder(root: Path, per_class: int, validation_per_class: int, size: int = 32) -> Path:
    """sklearn's 8x8 grey handwritten digits, enlarged to ``size``: train from the first images of each digit,
    validation from the last (the set runs writer by writer, so mostly other hands)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        rows = np.flatnonzero(digits.target == label)
        for split, chosen in (("train", rows[:per_class]), ("validation", rows[len(rows) - validation_per_class:])):
            folder = root / split / f"digit_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, row in enumerate(chosen):
                pixels = (digits.images[row] * 255 / 16).astype(np.uint8)
                Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--per_class", type=int, required=True)
    parser.add_argument("--validation_per_class", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_folder(args.out, args.classes, args.per_class, args.validation_per_class, args.seed))


if __name__ == "__main__":
    main()
