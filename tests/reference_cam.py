"""The reference the Space's numpy CAM is checked against: autograd through the timm model's own head."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def torch_cam(model: nn.Module, feature_map: torch.Tensor, target: int, method: str) -> np.ndarray:
    """(1, C, H, W) feature map of a timm model -> (H, W) map in [0, 1], by differentiating ``forward_head``."""
    if method == "CAM":
        weights = model.get_classifier().weight[target]
        cam = torch.einsum("c,chw->hw", weights, feature_map[0]).clamp(min=0).detach()
    else:
        leaf = feature_map.clone().requires_grad_(True)
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(model.forward_head(leaf)[0, target], leaf)
        a, g = feature_map[0], grads[0]
        if method == "Grad-CAM":
            cam = torch.einsum("c,chw->hw", g.mean((1, 2)), a).clamp(min=0)
        elif method == "Grad-CAM++":
            alpha = g.pow(2) / (2 * g.pow(2) + a.sum((1, 2), keepdim=True) * g.pow(3) + 1e-6)
            weights = (torch.where(g != 0, alpha, 0) * g.clamp(min=0)).sum((1, 2))
            cam = torch.einsum("c,chw->hw", weights, a).clamp(min=0)
        else:
            cam = (g.clamp(min=0) * a).sum(0).clamp(min=0)
    cam = cam.numpy()
    span = cam.max() - cam.min()
    return (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)
