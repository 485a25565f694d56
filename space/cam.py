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


def gradient_cam(method: str, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """(C, H, W) feature map and d(target logit)/d(feature map) -> (H, W) map, as pytorch-grad-cam."""
    if method == "Grad-CAM":  # Selvaraju et al. 2017: channel weights = mean gradient
        weights = grads.mean((1, 2))
    elif method == "Grad-CAM++":  # Chattopadhay et al. 2018: the closed-form alphas for an exp-linear score
        squared, cubed = grads ** 2, grads ** 3
        alpha = squared / (2 * squared + activations.sum((1, 2), keepdims=True) * cubed + 1e-6)
        weights = (np.where(grads != 0, alpha, 0) * np.maximum(grads, 0)).sum((1, 2))
    elif method == "Layer-CAM":  # Jiang et al. 2021: positive gradients weight each location
        return np.maximum((np.maximum(grads, 0) * activations).sum(0), 0)
    else:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    return np.maximum(np.einsum("c,chw->hw", weights, activations), 0)


def class_activation_map(feature_map: np.ndarray, weight: np.ndarray, method: str) -> np.ndarray:
    """(C, H, W) feature map and the target class's head weights (C,) -> (H, W) map in [0, 1]."""
    feature_map, weight = np.asarray(feature_map, np.float32), np.asarray(weight, np.float32)
    if method == "CAM":
        cam = np.maximum(np.einsum("c,chw->hw", weight, feature_map), 0)
    else:  # the logit's gradient: mean pooling spreads each weight evenly over the H x W locations
        grads = np.broadcast_to((weight / np.float32(feature_map[0].size))[:, None, None], feature_map.shape)
        cam = gradient_cam(method, feature_map, grads)
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


