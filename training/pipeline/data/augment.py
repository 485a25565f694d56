"""The seed's augmentation variants as torchvision v2 pipelines, applied on the fly with ``set_transform``.

Every pipeline first resizes and crops as the backbone's ``pretrained_cfg`` says, so the random
geometry works on small tensors; nothing is materialised on disk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from timm.data.transforms import MaybeToTensor
from torchvision.transforms import InterpolationMode, v2
from torchvision.utils import make_grid, save_image

VARIANTS = ("none", "base", "grayscale", "noise")
NOISE_SIGMA = 0.05  # std of the Gaussian noise, on pixel values in [0, 1]
SMALL_CNN_CONFIG = {"input_size": (3, 64, 64), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
                    "crop_pct": 1.0, "interpolation": "bilinear"}


def build_transform(variant: str, data_config: dict, train: bool, channels: int = 3) -> v2.Compose:
    """PIL RGB image -> normalised float tensor (channels, H, W).

    ``data_config`` is timm's (``resolve_data_config``): input_size, mean, std, crop_pct, interpolation.
    At evaluation, or with ``none``, only the deterministic resize / centre crop / normalise is applied.
    """
    if variant not in VARIANTS:
        raise ValueError(f"augmentation must be one of {', '.join(VARIANTS)}, got {variant!r}")
    size = int(data_config["input_size"][-1])
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    interpolation = InterpolationMode(data_config.get("interpolation") or "bilinear")
    mean, std = list(data_config["mean"]), list(data_config["std"])
    resize = [v2.Resize(math.floor(size / crop_pct), interpolation=interpolation, antialias=True), v2.CenterCrop(size)]
    # Evaluation resizes the PIL image and scales it to [0, 1] with timm's own step, exactly as timm's eval
    # transform (and so the transformers pipeline and the Space) does, to the last bit (a test checks):
    # the reported figures are what users get. Training resizes the tensor (faster).
    steps: list = resize + [MaybeToTensor()] if not train else [v2.ToImage(), *resize]
    if train and variant != "none":
        # The seed's Keras ImageDataGenerator: rotation 20 degrees, width/height shift 0.2, horizontal flip.
        steps += [v2.RandomAffine(degrees=20, translate=(0.2, 0.2)), v2.RandomHorizontalFlip()]
    if variant == "grayscale" or channels == 1:
        steps.append(v2.Grayscale(num_output_channels=channels))
    if train:
        steps.append(v2.ToDtype(torch.float32, scale=True))
    if train and variant == "noise":
        steps.append(v2.GaussianNoise(sigma=NOISE_SIGMA, clip=True))
    if channels == 1:
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    steps.append(v2.Normalize(mean, std))
    return v2.Compose(steps)


def batch_transform(transform: Callable) -> Callable[[dict], dict]:
    """Wrap a per-image transform for ``Dataset.set_transform`` (a batch of PIL images in, tensors out)."""

    def apply(batch: dict) -> dict:
        out = {"pixel_values": [transform(image.convert("RGB")) for image in batch["image"]]}
        if "label" in batch:
            out["label"] = batch["label"]
        return out

    return apply


def save_augmentation_grid(images: Sequence[Image.Image], data_config: dict, path: str | Path,
                           seed: int = 0) -> Path:
    """One row per variant (as training sees them), one column per image, denormalised to a PNG."""
    mean = torch.tensor(data_config["mean"]).view(-1, 1, 1)
    std = torch.tensor(data_config["std"]).view(-1, 1, 1)
    torch.manual_seed(seed)
    tiles = []
    for variant in VARIANTS:
        transform = build_transform(variant, data_config, train=True)
        tiles += [(transform(image.convert("RGB")) * std + mean).clamp(0, 1) for image in images]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(tiles, nrow=len(images), padding=2, pad_value=1.0), path)
    return path
