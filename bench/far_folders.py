"""Folders far from ImageNet, made by script (never committed), and frozen against ``--unfreeze_last_stages``.

    python -m bench.far_folders --backbone local-dir:../shared/weights/tf_efficientnet_lite0.in1k

- ``glyphs``: ten look-alike letters rendered small and grey with the fonts Debian ships (DejaVu,
  Liberation; Pillow's own font if none), jittered (angle, scale, place, stroke), blurred and noisy.
- ``cells``: microscopy-like grey fields of blobs: round, elongated, budding, ring-shaped cells.

Each folder is ``<root>/<name>/{train,validation}/<class>/*.png``; every run is ``training.train`` as a
user runs it, one after another in this process's machine, and the table gives each setting's figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

GLYPHS = "bdpqoceagu"
CELLS = ("round", "elongated", "budding", "ring")
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))


def fonts() -> list[Path]:
    return sorted(p for d in FONT_DIRS if d.is_dir() for p in d.glob("*.ttf"))


def glyph_image(char: str, rng: np.random.Generator, font_files: list[Path], size: int = 32) -> Image.Image:
    big = 4 * size
    canvas = Image.new("L", (big, big), int(rng.integers(0, 90)))
    points = int(big * rng.uniform(0.45, 0.75))
    font = (ImageFont.truetype(str(font_files[rng.integers(len(font_files))]), points) if font_files
            else ImageFont.load_default(size=points))
    draw = ImageDraw.Draw(canvas)
    x, y = big / 2 + rng.uniform(-0.15, 0.15) * big, big / 2 + rng.uniform(-0.15, 0.15) * big
    draw.text((x, y), char, fill=int(rng.integers(150, 256)), font=font, anchor="mm",
              stroke_width=int(rng.integers(0, 3)))
    canvas = canvas.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR)
    canvas = canvas.resize((size, size), Image.BILINEAR).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))
    pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0, rng.uniform(5, 25), (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def cell_image(kind: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    field = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy, r = rng.uniform(6, size - 6), rng.uniform(6, size - 6), rng.uniform(2.5, 5)
        angle = rng.uniform(0, np.pi)
        dx, dy = xx - cx, yy - cy
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        if kind == 1:  # elongated
            u = u / 2.2
        distance = np.sqrt(u ** 2 + v ** 2) / r
        blob = np.exp(-distance ** 2 * 2)
        if kind == 2:  # budding: a smaller daughter on one side
            bud = np.sqrt((u - 1.4 * r) ** 2 + v ** 2) / (0.55 * r)
            blob = np.maximum(blob, np.exp(-bud ** 2 * 2))
        if kind == 3:  # ring: bright membrane, dark inside
            blob = np.exp(-((distance - 1) ** 2) * 12)
        field = np.maximum(field, blob * rng.uniform(0.6, 1.0))
    field = field * 180 + 30 + rng.normal(0, rng.uniform(8, 20), field.shape)
    image = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def make_folder(root: Path, kind: str, train_per_class: int, validation_per_class: int, seed: int = 0) -> Path:
    rng, font_files = np.random.default_rng(seed), fonts()
    classes = list(GLYPHS) if kind == "glyphs" else list(CELLS)
    for split, count in (("train", train_per_class), ("validation", validation_per_class)):
        for index, name in enumerate(classes):
            folder = root / split / (f"glyph_{name}" if kind == "glyphs" else name)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = glyph_image(name, rng, font_files) if kind == "glyphs" else cell_image(index, rng)
                image.save(folder / f"{i}.png")
    return root


def run(folder: Path, backbone: str, stages: str, seed: int, output: Path) -> dict:
    started = time.time()
    command = [sys.executable, "-m", "training.train", "--dataset_id", str(folder), "--backbone", backbone,
               "--unfreeze_last_stages", stages, "--seed", str(seed), "--output_dir", str(output)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    results = json.loads((output / "results.json").read_text())
    return {"stages": stages, "chosen": results["stages"]["chosen"], "seed": seed,
            "accuracy": results["validation"]["accuracy"], "holdout": results["holdout_accuracy"],
            "ece": round(results["calibration"]["validation_after"]["ece"], 4),
            "neither": results["ood"]["validation"]["neither"],
            "ood_test_neither": results["ood"]["methods"][results["ood"]["method"]]["ood_test"]["neither"],
            "seconds": round(time.time() - started, 1), "peak_rss_mib": results["peak_rss_mib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="hf-hub:timm/tf_efficientnet_lite0.in1k")
    parser.add_argument("--folders", nargs="+", default=["glyphs", "cells"])
    parser.add_argument("--settings", nargs="+", default=["0", "auto"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--train_per_class", type=int, default=40)
    parser.add_argument("--validation_per_class", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="far-folders-") as tmp:
        for kind in args.folders:
            folder = make_folder(Path(tmp) / kind, kind, args.train_per_class, args.validation_per_class)
            for seed in args.seeds:
                for stages in args.settings:
                    row = run(folder, args.backbone, stages, seed, Path(tmp) / f"{kind}_{stages}_{seed}")
                    print(json.dumps({"folder": kind, **row}), flush=True)


if __name__ == "__main__":
    main()
