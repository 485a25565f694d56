"""The project's out-of-distribution evaluation set: pictures that show neither class, made on the fly.

Nothing is downloaded or committed. The photos are the ones installed packages ship: scikit-image
(people, a cat, a rocket, coffee, a motorcycle, microscopy, ...), scikit-learn (a temple, a flower),
matplotlib (a portrait) and Gradio (a lion, cheetahs, a tower, a tree creature), plus scikit-image's
small face photos. The hard part of the set is made from them: crops (parts of a photo look more like
anything than the whole) and 2 x 2 mosaics. The rest is generated from a seed: textures, pixel noise,
rendered text, flat colours, line drawings of houses, animals, faces and machines, and shaded renders.

Every kind is split in two halves (``part``): ``selection`` picks the OOD method, ``test`` reports
it, so the figures in the card are not measured on the images that chose the method. Crops and
mosaics take the half of the photos they are cut from. Thresholds never look at this set.
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
# Photos other installed packages ship: (module, file) read through the module's own location.
PACKAGE_PHOTOS = (("sklearn.datasets", "images/china.jpg"), ("sklearn.datasets", "images/flower.jpg"),
                  ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), ("gradio", "media_assets/images/lion.jpg"),
                  ("gradio", "media_assets/images/cheetah.jpg"), ("gradio", "media_assets/images/cheetah1.jpg"),
                  ("gradio", "media_assets/images/tower.jpg"), ("gradio", "media_assets/images/groot.jpeg"))
GENERATED_PER_KIND = 12
CROPS_PER_PHOTO = 3
FACES = 12
SIZE = 256
WORDS = ("hello", "invoice", "total", "meeting", "notes", "chapter", "weather", "recipe", "garden", "python",
         "station", "window", "coffee", "report", "summer", "museum")


@dataclass
class OODImage:
    name: str
    kind: str  # photo | crop | mosaic | face | texture | noise | text | flat | drawing | figure | render
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


def package_photos() -> list[tuple[str, Image.Image]]:
    """The photos of ``PACKAGE_PHOTOS`` that are installed (a missing package or file is skipped)."""
    import importlib.util
    from pathlib import Path

    photos = []
    for module, relative in PACKAGE_PHOTOS:
        spec = importlib.util.find_spec(module.split(".")[0])
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent.joinpath(*module.split(".")[1:], relative)
        if path.is_file():
            with Image.open(path) as image:
                photos.append((f"{module.split('.')[0]}/{path.name}", image.convert("RGB")))
    return photos


def faces(count: int = FACES) -> list[tuple[str, Image.Image]]:
    """Small grey face photos (scikit-image's LFW subset), upscaled as a phone would show them."""
    from skimage import data

    try:
        array = data.lfw_subset()
    except Exception:  # not in this scikit-image's wheel
        return []
    picked = np.linspace(0, len(array) // 2 - 1, count).astype(int)  # the first half are faces
    return [(f"skimage.data.lfw_subset[{i}]", Image.fromarray((255 * array[i]).astype(np.uint8))
             .resize((SIZE, SIZE), Image.BICUBIC).convert("RGB")) for i in picked]


def crop(image: Image.Image, rng: random.Random) -> Image.Image:
    """A random square-ish part of a photo, 25-60 % of its shorter side."""
    side = int(min(image.size) * rng.uniform(0.25, 0.6))
    left, top = rng.randint(0, image.width - side), rng.randint(0, image.height - side)
    return image.crop((left, top, left + side, top + int(side * rng.uniform(0.8, 1.25)))).resize((SIZE, SIZE))


def mosaic(images: list[Image.Image], rng: random.Random) -> Image.Image:
    """Four crops of the given photos in a 2 x 2 grid."""
    tile = SIZE // 2
    canvas = Image.new("RGB", (SIZE, SIZE))
    for k in range(4):
        canvas.paste(crop(rng.choice(images), rng).resize((tile, tile)), ((k % 2) * tile, (k // 2) * tile))
    return canvas


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


def _figure(rng: random.Random) -> Image.Image:
    """A coloured drawing of an animal, a face or a machine."""
    background = tuple(rng.randint(180, 255) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    fill, ink = tuple(rng.randrange(200) for _ in range(3)), (20, 20, 20)
    c, r = SIZE // 2 + rng.randint(-20, 20), rng.randint(55, 80)
    subject = rng.choice(("face", "cat", "fish", "car", "robot"))
    if subject in ("face", "cat"):
        if subject == "cat":  # ears first, the head over them
            draw.polygon([(c - r, c - r // 3), (c - r // 2, c - r - 40), (c - 5, c - r + 5)], fill=fill, outline=ink)
            draw.polygon([(c + r, c - r // 3), (c + r // 2, c - r - 40), (c + 5, c - r + 5)], fill=fill, outline=ink)
        draw.ellipse((c - r, c - r, c + r, c + r), fill=fill, outline=ink, width=3)
        for dx in (-r // 2.5, r // 2.5):
            draw.ellipse((c + dx - 8, c - r // 3 - 8, c + dx + 8, c - r // 3 + 8), fill="white", outline=ink)
            draw.ellipse((c + dx - 3, c - r // 3 - 3, c + dx + 3, c - r // 3 + 3), fill=ink)
        draw.arc((c - r // 2, c, c + r // 2, c + r // 2), 0, 180, fill=ink, width=3)
        if subject == "cat":
            for dy in (-6, 4, 14):
                draw.line((c - r - 25, c + dy, c - 15, c + 8), fill=ink, width=2)
                draw.line((c + r + 25, c + dy, c + 15, c + 8), fill=ink, width=2)
    elif subject == "fish":
        draw.ellipse((c - r - 20, c - r // 2, c + r, c + r // 2), fill=fill, outline=ink, width=3)
        draw.polygon([(c + r - 10, c), (c + r + 45, c - 35), (c + r + 45, c + 35)], fill=fill, outline=ink)
        draw.ellipse((c - r + 5, c - 12, c - r + 21, c + 4), fill="white", outline=ink)
    elif subject == "car":
        draw.rectangle((c - r - 40, c - 10, c + r + 40, c + 35), fill=fill, outline=ink, width=3)
        draw.polygon([(c - r, c - 10), (c - r // 2, c - 50), (c + r // 2, c - 50), (c + r, c - 10)], fill=fill,
                     outline=ink)
        for dx in (-r, r):
            draw.ellipse((c + dx - 22, c + 15, c + dx + 22, c + 59), fill=ink)
    else:
        draw.rectangle((c - 40, c - 20, c + 40, c + 70), fill=fill, outline=ink, width=3)
        draw.rectangle((c - 30, c - 80, c + 30, c - 25), fill=fill, outline=ink, width=3)
        draw.line((c, c - 80, c, c - 100), fill=ink, width=3)
        for dx in (-15, 15):
            draw.rectangle((c + dx - 6, c - 62, c + dx + 6, c - 50), fill=(230, 40, 40))
        draw.line((c - 40, c, c - 80, c + 40), fill=ink, width=6)
        draw.line((c + 40, c, c + 80, c + 40), fill=ink, width=6)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


def _render(rng: random.Random) -> Image.Image:
    """Shaded spheres lit from one side over a gradient floor: a simple 3-D render."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    top, bottom = (np.array([rng.randrange(256) for _ in range(3)], dtype=np.float64) for _ in range(2))
    pixels = top + (bottom - top) * (y / SIZE)[..., None]
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0), 1.0])
    light /= np.linalg.norm(light)
    for _ in range(rng.randint(1, 4)):
        cx, cy, radius = rng.uniform(50, 206), rng.uniform(50, 206), rng.uniform(20, 70)
        dx, dy = (x - cx) / radius, (y - cy) / radius
        inside = dx**2 + dy**2 < 1
        dz = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
        shade = np.clip(dx * light[0] + dy * light[1] + dz * light[2], 0.05, 1)
        colour = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float64)
        pixels[inside] = (colour * shade[..., None])[inside] + 60 * shade[inside, None] ** 20
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


GENERATORS = {"texture": _texture, "noise": _noise, "text": _text, "flat": _flat, "drawing": _drawing,
              "figure": _figure, "render": _render}


def ood_images(seed: int = 0) -> list[OODImage]:
    """The whole set, in a fixed order for a given seed; alternate images of each kind go to each part."""
    rng = random.Random(seed)
    photos = [OODImage(name if "/" in name else f"skimage.data.{name}", "photo", "", image)
              for name, image in skimage_photos() + package_photos()]
    for i, photo in enumerate(photos):
        photo.part = "selection" if i % 2 == 0 else "test"
    items = list(photos)
    colour = [p for p in photos if np.asarray(p.image).std(-1).mean() > 2]  # crops of colour photos only
    for photo in colour:
        items += [OODImage(f"{photo.name} crop {k}", "crop", photo.part, crop(photo.image, rng))
                  for k in range(CROPS_PER_PHOTO)]
    for part in ("selection", "test"):
        sources = [p.image for p in colour if p.part == part]
        items += [OODImage(f"mosaic_{part}_{k:02d}", "mosaic", part, mosaic(sources, rng))
                  for k in range(GENERATED_PER_KIND // 2) if sources]
    items += [OODImage(name, "face", "", image) for name, image in faces()]
    for kind, make in GENERATORS.items():
        items += [OODImage(f"{kind}_{i:02d}", kind, "", make(rng)) for i in range(GENERATED_PER_KIND)]
    seen: dict[str, int] = {}
    for item in items:
        if not item.part:
            seen[item.kind] = seen.get(item.kind, 0) + 1
            item.part = "selection" if seen[item.kind] % 2 else "test"
    return items


def describe(items: list[OODImage]) -> str:
    """One line for the card: how many of each kind."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())
