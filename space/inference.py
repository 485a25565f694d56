"""The Space's model: load from the Hub by id, predict, and explain with class activation maps.

``predict(image, method) -> (label_scores, heatmap_overlay)`` is pure (no Gradio) and tested
without a server. CAM never backpropagates through the backbone: the backbone runs once under
``torch.inference_mode``; gradient methods differentiate only the head, starting at the last
feature map. Classic CAM is the head's weights applied to that feature map, which needs no
gradient at all.

Why not pytorch-grad-cam: importing it loads scikit-learn, pandas, OpenCV and matplotlib (+186 MB
RSS), which put the Space over 1 GiB with ResNet50; on a head-only graph each method is a few lines.
The tests check these against pytorch-grad-cam itself.
"""

from __future__ import annotations

import os
import sys

# Triton is a GPU kernel compiler this CPU Space never uses, yet torchvision's import (via
# torch._dynamo) loads it when installed: 76 MB of RSS. A None entry makes it "not installed".
sys.modules.setdefault("triton", None)

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

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


class Classifier:
    # fp32 by default: at batch 1 on this 2-core CPU, bf16 autocast measured slower (ResNet50 p50
    # 78 ms vs 50 ms, bench/inference.py), and a CPU flag does not say which is faster; "bf16" on request.
    def __init__(self, model: str | nn.Module, precision: str = "fp32"):
        """``model``: a Hub model id (loaded with timm, preprocessing and labels from its config) or a timm model."""
        if isinstance(model, str):
            model = timm.create_model(f"hf-hub:{model}", pretrained=True)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.to(memory_format=torch.channels_last)
        config = timm.data.resolve_data_config({}, model=self.model)
        self.transform = timm.data.create_transform(**config)
        names = self.model.pretrained_cfg.get("label_names") or [str(i) for i in range(self.model.num_classes)]
        self.labels = list(names)
        if precision not in ("fp32", "no", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.dtype = torch.bfloat16 if precision == "bf16" else None

    def features(self, image: Image.Image) -> torch.Tensor:
        x = self.transform(image).unsqueeze(0).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=self.dtype or torch.bfloat16,
                                                    enabled=self.dtype is not None):
            return self.model.forward_features(x).float()

    def predict(self, image: Image.Image, method: str | None = "CAM") -> tuple[dict[str, float], np.ndarray | None]:
        """Label probabilities, and the CAM (values in [0, 1], feature-map resolution) for the top class."""
        features = self.features(image)
        with torch.inference_mode():
            probs = self.model.forward_head(features).softmax(-1)[0]
        scores = {label: float(p) for label, p in zip(self.labels, probs, strict=True)}
        if method is None:
            return scores, None
        return scores, self.cam(features, int(probs.argmax()), method)

    def cam(self, features: torch.Tensor, target: int, method: str) -> np.ndarray:
        if method == "CAM":
            weights = self.model.get_classifier().weight[target]  # (C,)
            cam = torch.einsum("c,chw->hw", weights, features[0]).clamp(min=0).numpy()
        else:
            leaf = features.clone().requires_grad_(True)  # a fresh leaf: nothing before it is differentiated
            with torch.enable_grad():
                (grads,) = torch.autograd.grad(self.model.forward_head(leaf)[0, target], leaf)
            cam = gradient_cam(method, features[0], grads[0]).numpy()
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


_classifier: Classifier | None = None


def model_id() -> str:
    """MODEL_ID from the environment, else the first of ``models:`` in this Space's README."""
    if os.environ.get("MODEL_ID"):
        return os.environ["MODEL_ID"]
    readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
    front_matter = open(readme, encoding="utf-8").read().split("---")[1]
    models = yaml.safe_load(front_matter).get("models") or []
    if not models:
        raise RuntimeError("no model to load: set MODEL_ID or list one under `models:` in README.md")
    return models[0]


def get_classifier() -> Classifier:
    """The Space's model (from the Hub at HF_ENDPOINT), loaded once per process."""
    global _classifier
    if _classifier is None:
        _classifier = Classifier(model_id())
    return _classifier


def predict(image: Image.Image, method: str = "CAM", opacity: float = 0.5) -> tuple[dict[str, float], Image.Image]:
    """One image in, (label -> probability, heatmap blended over the image at its size) out."""
    scores, cam = get_classifier().predict(image, method)
    return scores, overlay(image, cam, opacity)
