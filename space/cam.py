"""Class activation maps on a frozen backbone's last feature map, and the heatmap overlay.

CAM never backpropagates through the backbone: gradient methods differentiate only the head,
starting at the feature map; classic CAM is the head's weights applied to that map, no gradient at
all. Self-contained (torch, numpy, PIL): the Space and training's faithfulness measurement share it.

Why not pytorch-grad-cam: importing it loads scikit-learn, pandas, OpenCV and matplotlib (+186 MB
RSS), which put the Space over 1 GiB with ResNet50; on a head-only graph each method is a few lines.
The tests check these against pytorch-grad-cam itself.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

CAM_METHODS = ("CAM", "Grad-CAM", "Grad-CAM++", "Layer-CAM")


def gradient_cam(method: str, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """(C, H, W) feature map and d(target logit)/d(feature map) -> (H, W) map, as pytorch-grad-cam."""
    if method == "Grad-CAM":  # Selvaraju et al. 2017: channel weights = mean gradient
        weights = grads.mean((1, 2))
    elif method == "Grad-CAM++":  # Chattopadhay et al. 2018: the closed-form alphas for an exp-linear score
        squared, cubed = grads.pow(2), grads.pow(3)
        alpha = squared / (2 * squared + activations.sum((1, 2), keepdim=True) * cubed + 1e-6)
        weights = (torch.where(grads != 0, alpha, 0) * grads.clamp(min=0)).sum((1, 2))
    elif method == "Layer-CAM":  # Jiang et al. 2021: positive gradients weight each location
        return (grads.clamp(min=0) * activations).sum(0).clamp(min=0)
    else:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    return torch.einsum("c,chw->hw", weights, activations).clamp(min=0)


def class_activation_map(model: nn.Module, feature_map: torch.Tensor, target: int, method: str) -> np.ndarray:
    """(1, C, H, W) feature map of a timm model -> (H, W) map in [0, 1] for class ``target``."""
    if method == "CAM":
        weights = model.get_classifier().weight[target]  # (C,)
        cam = torch.einsum("c,chw->hw", weights, feature_map[0]).clamp(min=0).detach().numpy()
    else:
        leaf = feature_map.clone().requires_grad_(True)  # a fresh leaf: nothing before it is differentiated
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(model.forward_head(leaf)[0, target], leaf)
        cam = gradient_cam(method, feature_map[0], grads[0]).numpy()
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


