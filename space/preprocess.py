"""timm's evaluation transform in Pillow + numpy, for a runtime without torch (the Space, ONNX users).

It reproduces ``timm.data.create_transform(**resolve_data_config({}, model=model))`` bit for bit for
the "center" and "squash" crop modes: resize (the shorter side to ``input_size / crop_pct``, by
Pillow with the model's interpolation, as torchvision does for a PIL image), centre crop (zero
padding where the image is smaller), then ``/ 255`` and ``(x - mean) / std`` in float32, in that
order. The tests compare it with timm's own transform on every Pillow mode and odd sizes.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .image_io import to_rgb

INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX,
                  "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS}
CROP_MODES = ("center", "squash")
DEFAULTS = {"crop_pct": 0.875, "interpolation": "bilinear", "crop_mode": "center",
            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}  # timm's defaults


class UnsupportedPreprocessing(ValueError):
    """The model's pretrained_cfg asks for a transform this module does not reproduce."""


class EvalTransform:
    """PIL image -> (3, H, W) float32 array, as timm's eval transform for ``pretrained_cfg`` (config.json)."""

    def __init__(self, pretrained_cfg: dict):
        cfg = {**DEFAULTS, **{k: v for k, v in pretrained_cfg.items() if v is not None}}
        self.input_size = tuple(int(v) for v in cfg["input_size"][-2:])  # (H, W)
        self.crop_pct, self.crop_mode = float(cfg["crop_pct"]), cfg["crop_mode"]
        if self.crop_mode not in CROP_MODES:
            raise UnsupportedPreprocessing(f"crop_mode {self.crop_mode!r} is not reproduced without torch "
                                           f"(supported: {', '.join(CROP_MODES)})")
        if cfg["interpolation"] not in INTERPOLATIONS:
            raise UnsupportedPreprocessing(f"interpolation {cfg['interpolation']!r} is not supported")
        if self.crop_mode == "center" and self.input_size[0] != self.input_size[1]:
            raise UnsupportedPreprocessing("a non-square input with crop_mode 'center' is not reproduced without torch")
        self.interpolation = INTERPOLATIONS[cfg["interpolation"]]
        self.mean = np.asarray(cfg["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(cfg["std"], np.float32).reshape(3, 1, 1)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after torchvision's Resize as timm sets it up."""
        scale = [math.floor(s / self.crop_pct) for s in self.input_size]
        if self.crop_mode == "squash":
            return scale[1], scale[0]
        short, long = sorted((width, height))
        new_short, new_long = scale[0], int(scale[0] * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = to_rgb(image)  # as training and the Space convert (transparency over white, 16-bit rescaled)
        size = self.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, self.interpolation)
        image = center_crop(image, self.input_size)
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return (pixels - self.mean) / self.std


def center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision's CenterCrop on a PIL image: pad with zeros where it is smaller, then crop the middle."""
    height, width = size
    if width > image.width or height > image.height:
        left, top = max(0, (width - image.width) // 2), max(0, (height - image.height) // 2)
        padded = Image.new(image.mode, (max(width, image.width), max(height, image.height)))
        padded.paste(image, (left, top))
        image = padded
    top = int(round((image.height - height) / 2.0))
    left = int(round((image.width - width) / 2.0))
    return image.crop((left, top, left + width, top + height))
