"""Class activation maps on a frozen backbone's last feature map, and the heatmap overlay.

The head is a linear layer on the average-pooled feature map (timm's classifier; the export checks
it), so the gradient of a logit with respect to the map is the class's weight row divided by H x W,
the same at every location: CAM, Grad-CAM, Grad-CAM++ and Layer-CAM all have closed forms, computed
here in numpy from the map and that row. No backward pass and no torch: the Space runs on ONNX
Runtime. The tests check these against autograd through the timm model and against pytorch-grad-cam.

Why not pytorch-grad-cam at run time: it needs torch, and importing it loads scikit-learn, pandas,
OpenCV and matplotlib (+186 MB RSS).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CAM_METHODS = ("CAM", "Grad-CAM", "Grad-CAM++", "Layer-CAM")


def channel_weights(method: str, feature_map: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(C,) weights whose sum over the (C, H, W) feature map, clamped at 0, is ``method``'s map, as pytorch-grad-cam
    computes it from the gradient g = weight / (H x W), the same at every location."""
    if method == "CAM":
        return weight
    g = weight / np.float32(feature_map[0].size)
    if method == "Grad-CAM":  # Selvaraju et al. 2017: channel weights = mean gradient
        return g
    if method == "Grad-CAM++":  # Chattopadhay et al. 2018: the closed-form alphas for an exp-linear score
        alpha = g ** 2 / (2 * g ** 2 + feature_map.sum((1, 2)) * g ** 3 + 1e-6)
        return np.where(g != 0, alpha, 0) * np.maximum(g, 0) * np.float32(feature_map[0].size)  # summed over H x W
    if method == "Layer-CAM":  # Jiang et al. 2021: positive gradients weight each location
        return np.maximum(g, 0)
    raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")


def class_activation_map(feature_map: np.ndarray, weight: np.ndarray, method: str) -> np.ndarray:
    """(C, H, W) feature map and the target class's head weights (C,) -> (H, W) map in [0, 1]."""
    feature_map, weight = np.asarray(feature_map, np.float32), np.asarray(weight, np.float32)
    cam = np.maximum(np.einsum("c,chw->hw", channel_weights(method, feature_map, weight), feature_map), 0)
    span = cam.max() - cam.min()
    return (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)


def _jet_palette() -> list[int]:
    """matplotlib's 'jet' as a 256-entry RGB palette, from its segment data (no matplotlib import:
    it cost the Space ~40 MB and, per pixel in float, most of the overlay's time)."""
    segments = {"r": [(0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)],
                "g": [(0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)],
                "b": [(0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)]}
    x = np.linspace(0, 1, 256)
    channels = [np.interp(x, *zip(*points, strict=True)) for points in segments.values()]
    return np.round(np.stack(channels, 1) * 255).astype(np.uint8).flatten().tolist()


JET_PALETTE = _jet_palette()


def overlay(image: Image.Image, cam: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """The CAM upsampled to the image's own size, coloured (RGB 'jet') and blended over it."""
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR)
    heat.putpalette(JET_PALETTE)  # L -> P: the colouring happens in PIL's C code
    return Image.blend(image, heat.convert("RGB"), float(np.clip(opacity, 0.0, 1.0)))


