"""The project's out-of-distribution evaluation set: pictures that show neither class, made on the fly.

Nothing is downloaded or committed: the photos are the ones scikit-image ships inside its wheel
(``skimage.data``: people, a cat, a rocket, coffee, a horse silhouette, coins, text pages, ...), the
rest is generated from a seed: textures (gratings, checkerboards, smooth noise), pixel noise,
rendered text, flat colours and simple line drawings (a house, shapes, a stick figure).

Every kind is split in two halves (``part``): ``selection`` picks the OOD method, ``test`` reports
it, so the figures in the card are not measured on the images that chose the method. Thresholds
never look at this set (they come from the training holdout).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# skimage.data loaders whose images ship in the wheel (no pooch download); grey ones become RGB.
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "horse",
                  "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "rocket", "text",
                  "checkerboard", "clock", "colorwheel", "retina", "microaneurysms", "cell")
GENERATED_PER_KIND = 12
SIZE = 256
WORDS = ("hello", "invoice", "total", "meeting", "notes", "chapter", "weather", "recipe", "garden", "python",
         "station", "window", "coffee", "report", "summer", "museum")


@dataclass
class OODImage:
    name: str
    kind: str  # photo | texture | noise | text | flat | drawing
    part: str  # selection | test
    image: Image.Image


def skimage_photos() -> list[tuple[str, Image.Image]]:
    from skimage import data

    photos = []
    for name in SKIMAGE_PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            array = np.asarray(loader())
        except Exception:  # a loader that would need a download (pooch): not part of this offline set
            continue
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        elif array.dtype != np.uint8:
            array = (255 * (array - array.min()) / max(float(array.max() - array.min()), 1e-9)).astype(np.uint8)
        image = Image.fromarray(array[..., :3] if array.ndim == 3 else array).convert("RGB")
        photos.append((name, image))
    return photos


def _texture(rng: random.Random) -> Image.Image:
    style = rng.choice(("grating", "checker", "smooth"))
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    colours = np.array([[rng.randrange(256) for _ in range(3)] for _ in range(2)], dtype=np.float64)
    if style == "grating":
        angle, frequency = rng.uniform(0, np.pi), rng.uniform(4, 30)
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)))
    elif style == "checker":
        cells = rng.randint(3, 16)
        mix = ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(np.float64)
    else:
        coarse = np.random.default_rng(rng.randrange(2**31)).random((8, 8))
        mix = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)) / 255
    pixels = colours[0] * (1 - mix[..., None]) + colours[1] * mix[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _noise(rng: random.Random) -> Image.Image:
    generator = np.random.default_rng(rng.randrange(2**31))
    if rng.random() < 0.5:
        pixels = generator.integers(0, 256, (SIZE, SIZE, 3))
    else:
        pixels = generator.normal(rng.uniform(60, 200), rng.uniform(10, 60), (SIZE, SIZE, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _text(rng: random.Random) -> Image.Image:
    paper = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=rng.randint(14, 36))
    y = rng.randint(5, 30)
    while y < SIZE - 20:
        draw.text((rng.randint(5, 30), y), " ".join(rng.choices(WORDS, k=3)), fill=(20, 20, 20), font=font)
        y += int(font.size * 1.5)
    return image


def _flat(rng: random.Random) -> Image.Image:
    return Image.new("RGB", (SIZE, SIZE), tuple(rng.randrange(256) for _ in range(3)))


def _drawing(rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(image)
    ink, width = (0, 0, 0), rng.randint(2, 5)
    shape = rng.choice(("house", "shapes", "stick figure"))
    if shape == "house":
        left, top = rng.randint(40, 80), rng.randint(110, 140)
        right, bottom = SIZE - rng.randint(40, 80), SIZE - 30
        draw.rectangle((left, top, right, bottom), outline=ink, width=width)
        draw.line((left, top, (left + right) // 2, top - 70, right, top), fill=ink, width=width)
        draw.rectangle(((left + right) // 2 - 15, bottom - 50, (left + right) // 2 + 15, bottom), outline=ink,
                       width=width)
        draw.rectangle((left + 15, top + 20, left + 45, top + 50), outline=ink, width=width)
    elif shape == "shapes":
        for _ in range(rng.randint(2, 5)):
            x0, y0 = rng.randint(10, 150), rng.randint(10, 150)
            box = (x0, y0, x0 + rng.randint(30, 100), y0 + rng.randint(30, 100))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, outline=ink, width=width)
    else:
        cx = SIZE // 2
        draw.ellipse((cx - 25, 30, cx + 25, 80), outline=ink, width=width)
        draw.line((cx, 80, cx, 170), fill=ink, width=width)
        draw.line((cx - 50, 110, cx + 50, 110), fill=ink, width=width)
        draw.line((cx, 170, cx - 40, 230), fill=ink, width=width)
        draw.line((cx, 170, cx + 40, 230), fill=ink, width=width)
    return image.filter(ImageFilter.SMOOTH) if rng.random() < 0.5 else image


GENERATORS = {"texture": _texture, "noise": _noise, "text": _text, "flat": _flat, "drawing": _drawing}


def ood_images(seed: int = 0) -> list[OODImage]:
    """The whole set, in a fixed order for a given seed; alternate images of each kind go to each part."""
    rng = random.Random(seed)
    items = [OODImage(f"skimage.data.{name}", "photo", "", image) for name, image in skimage_photos()]
    for kind, make in GENERATORS.items():
        items += [OODImage(f"{kind}_{i:02d}", kind, "", make(rng)) for i in range(GENERATED_PER_KIND)]
    seen: dict[str, int] = {}
    for item in items:
        seen[item.kind] = seen.get(item.kind, 0) + 1
        item.part = "selection" if seen[item.kind] % 2 else "test"
    return items


def describe(items: list[OODImage]) -> str:
    """One line for the card: how many of each kind."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())
