"""The saved model as ONNX (``onnx/model.onnx``, the layout optimum and transformers.js read), behind a parity gate.

One graph, three outputs: the calibrated logits, the pooled features ("neither" reads them) and the
last feature map (the CAM's input). Dynamic batch; the spatial size is fixed at the model's input size
(``tf_`` models pad "same" for one size, and the Space always feeds that size). The gate runs the
ONNX model through the Space's own Classifier (numpy preprocessing, ONNX Runtime) and the timm model
through torch on the validation images: same top-1 on every image and probabilities within 1e-4, or
nothing is pushed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnxruntime
import timm
import torch
from PIL import Image
from torch import nn

from space.inference import ONNX_FILE, ONNX_OUTPUTS, Classifier
from space.preprocess import UnsupportedPreprocessing

from ...errors import UserError
from .torch_classifier import TorchClassifier

OPSET = 18
MAX_PROBABILITY_GAP = 1e-4


class ExportGraph(nn.Module):
    """pixel_values -> (logits, pooled features, last feature map) of a timm model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feature_map = self.model.forward_features(pixel_values)
        pooled = self.model.forward_head(feature_map, pre_logits=True)
        return self.model.get_classifier()(pooled), pooled, feature_map


def check_linear_head(model: nn.Module) -> None:
    """The Space's CAM and "neither" assume pooled = the feature map's mean and logits = a linear layer on it."""
    classifier = model.get_classifier()
    feature_map = torch.randn(2, model.num_features, 3, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = model.forward_head(feature_map, pre_logits=True)
        ok = (isinstance(classifier, nn.Linear) and pooled.shape == (2, model.num_features)
              and torch.allclose(pooled, feature_map.mean((2, 3)), atol=1e-5))
    if not ok:
        raise UserError(f"{model.pretrained_cfg.get('architecture', type(model).__name__)}: the head is not a "
                        "linear layer on the average-pooled last feature map, which the ONNX Space's CAM needs")


def export_graph(model: nn.Module, input_size: tuple[int, int, int], path: Path) -> Path:
    """``ExportGraph(model)`` as ONNX at ``path``: fp32, opset ``OPSET``, dynamic batch, fixed spatial size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(ExportGraph(model.eval()), (torch.zeros(1, *input_size),), str(path), dynamo=False,
                      opset_version=OPSET, input_names=["pixel_values"], output_names=list(ONNX_OUTPUTS),
                      dynamic_axes={name: {0: "batch"} for name in ("pixel_values", *ONNX_OUTPUTS)})
    return path


def export_onnx(model_dir: Path) -> Path:
    """Write ``model_dir/onnx/model.onnx`` from the saved model (what a user downloads)."""
    # A fresh load: a model that went through torch.inference_mode() has inference tensors, which export refuses.
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    check_linear_head(model)
    return export_graph(model, timm.data.resolve_data_config({}, model=model)["input_size"], model_dir / ONNX_FILE)


def parity(model_dir: Path, images: Iterable[Image.Image], batch_size: int = 25) -> dict:
    """The ONNX Classifier (numpy preprocessing, ONNX Runtime) against timm (its own eval transform, torch) on
    ``images`` (PIL, RGB): top-1 agreement and the largest probability gap."""
    onnx_side, torch_side = Classifier(model_dir), TorchClassifier(str(model_dir))
    timm_transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=torch_side.model))
    agree, gap, count, images = 0, 0.0, 0, iter(images)
    while batch := list(itertools.islice(images, batch_size)):
        count += len(batch)
        pixels = np.stack([onnx_side.transform(image) for image in batch])
        with torch.inference_mode():
            logits = torch_side.model(torch.stack([timm_transform(image) for image in batch]))
        p_torch = logits.softmax(-1).numpy()
        p_onnx = np.array([list(p.confidences.values()) for p in onnx_side.decide(onnx_side.forward(pixels)[1])])
        agree += int((p_onnx.argmax(1) == p_torch.argmax(1)).sum())
        gap = max(gap, float(np.abs(p_onnx - p_torch).max()))
    return {"images": count, "same_top1": agree, "max_probability_gap": gap, "opset": OPSET,
            "input_size": list(onnx_side.transform.input_size), "file": ONNX_FILE,
            "passed": agree == count and gap <= MAX_PROBABILITY_GAP}


def export_and_check(output_dir: Path, images: Iterable[Image.Image], split: str) -> dict:
    """Export the run's model, measure parity on ``images`` (``split`` names them) and write onnx.json;
    a failing gate raises a UserError (the caller pushes nothing)."""
    export_onnx(output_dir / "model")
    try:
        report = {**parity(output_dir / "model", images), "split": split, "onnxruntime": onnxruntime.__version__}
    except UnsupportedPreprocessing as e:
        raise UserError(f"{output_dir / 'model'}: {e}, and the ONNX Space and card need it; nothing pushed") from None
    (output_dir / "onnx.json").write_text(json.dumps(report, indent=2))
    if not report["passed"]:
        raise UserError(f"ONNX parity gate failed on {split}: top-1 agrees on {report['same_top1']} of "
                        f"{report['images']} images, largest probability gap {report['max_probability_gap']:.2e} "
                        f"(limit {MAX_PROBABILITY_GAP:g}); nothing pushed, see {output_dir / 'onnx.json'}")
    return report

