"""The Space's model: load it from the Hub by id, classify, say "neither", and explain with a CAM.

``predict(image, method, opacity)`` (for the page) and ``classify(image)`` (the JSON answer) are
pure functions over one ``Classifier.predict`` and are tested without a server. The probabilities
are calibrated (the temperature is folded into the head's weights); the "neither" score and its two
limits come with the model (``config.json`` "ood" and ``ood.safetensors``, see ood.py): the answer
is "sure", "unsure" (looks most like a class, but unlike the training pictures) or "neither".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import timm
import torch
import yaml
from PIL import Image
from torch import nn

from .cam import CAM_METHODS, JET_PALETTE, class_activation_map, gradient_cam, overlay  # noqa: F401
from .ood import NEITHER, SURE, UNSURE, ood_score, verdict
from .texts import neither_text, unsure_text


@dataclass
class Prediction:
    label: str  # a class name, or NEITHER
    verdict: str  # SURE, UNSURE or NEITHER (ood.py); SURE when the model has no "neither" score
    confidences: dict[str, float]  # calibrated, over the classes (they still sum to 1 for "neither")
    ood_score: float | None
    threshold: float | None
    cam: np.ndarray | None  # (H, W) in [0, 1] for the top class, at feature-map resolution


class Classifier:
    # "no" (fp32, accelerate's name, as in training) by default: at batch 1 bf16 autocast can be slower
    # on a CPU (BENCHMARKS.md, bench.inference), and a CPU flag does not say which is faster.
    def __init__(self, model: str | nn.Module, precision: str = "no", revision: str | None = None,
                 ood: dict | None = None, ood_statistics: dict[str, torch.Tensor] | None = None):
        """``model``: a Hub model id (loaded with timm at one pinned revision, with its preprocessing, labels
        and OOD statistics) or a timm model (then ``ood``/``ood_statistics`` as in config.json/ood.safetensors).
        """
        self.model_id, self.revision, self.cam_method = None, revision, "CAM"
        if isinstance(model, str):
            self.model_id = model
            model, config, ood_statistics = self._load(model, revision)
            ood, self.cam_method = config.get("ood"), config.get("cam_method", "CAM")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.to(memory_format=torch.channels_last)
        self.transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=self.model))
        names = self.model.pretrained_cfg.get("label_names") or [str(i) for i in range(self.model.num_classes)]
        self.labels = list(names)
        self.ood, self.ood_statistics = (ood, ood_statistics) if ood and ood_statistics is not None else (None, None)
        if precision not in ("no", "bf16", "fp32"):  # fp32: the earlier name of "no"
            raise ValueError(f"precision must be no (fp32) or bf16, got {precision!r}")
        self.dtype = torch.bfloat16 if precision == "bf16" else None

    def _load(self, model_id: str, revision: str | None) -> tuple[nn.Module, dict, dict | None]:
        """Every file from one commit: the revision is resolved first, so a push in between can't mix them."""
        from huggingface_hub import HfApi, hf_hub_download
        from safetensors.torch import load_file

        self.revision = revision or HfApi().model_info(model_id).sha
        with open(hf_hub_download(model_id, "config.json", revision=self.revision), encoding="utf-8") as f:
            config = json.load(f)
        model = timm.create_model(f"hf-hub:{model_id}@{self.revision}", pretrained=True)
        statistics = None
        if config.get("ood"):
            statistics = load_file(hf_hub_download(model_id, config["ood"]["statistics"], revision=self.revision))
        return model, config, statistics

    def features(self, image: Image.Image) -> torch.Tensor:
        """The backbone's last feature map, (1, C, H, W), fp32."""
        x = self.transform(image).unsqueeze(0).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=self.dtype or torch.bfloat16,
                                                    enabled=self.dtype is not None):
            return self.model.forward_features(x).float()

    def decide(self, pooled: torch.Tensor) -> list[Prediction]:
        """Pooled features (N, D) -> one Prediction each (no CAM): calibrated probabilities and the OOD verdict."""
        with torch.inference_mode():
            logits = self.model.get_classifier()(pooled)
            scores = (ood_score(self.ood["method"], pooled, logits, self.ood_statistics, k=self.ood.get("k", 5))
                      if self.ood is not None else [None] * len(pooled))
        threshold = float(self.ood["threshold"]) if self.ood is not None else None
        unsure = self.ood.get("unsure_threshold") if self.ood is not None else None
        predictions = []
        for probs, score in zip(logits.softmax(-1), scores, strict=True):
            answer = SURE if score is None else verdict(float(score), unsure, threshold)
            label = NEITHER if answer == NEITHER else self.labels[int(probs.argmax())]
            predictions.append(Prediction(label, answer,
                                          {name: float(p) for name, p in zip(self.labels, probs, strict=True)},
                                          None if score is None else float(score), threshold, None))
        return predictions

    def predict(self, image: Image.Image, method: str | None = "CAM") -> Prediction:
        """Calibrated class probabilities, the OOD verdict, and the CAM for the top class (``method=None``: none)."""
        feature_map = self.features(image)
        with torch.inference_mode():
            pooled = self.model.forward_head(feature_map, pre_logits=True)
        prediction = self.decide(pooled)[0]
        if method is not None:
            top = max(prediction.confidences, key=prediction.confidences.get)
            prediction.cam = self.cam(feature_map, self.labels.index(top), method)
        return prediction

    def cam(self, feature_map: torch.Tensor, target: int, method: str) -> np.ndarray:
        return class_activation_map(self.model, feature_map, target, method)


_classifier: Classifier | None = None
# The Space's root: its README.md, examples/, space.json and feedback.json sit beside this package.
SPACE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_id() -> str:
    """MODEL_ID from the environment, else the first of ``models:`` in this Space's README."""
    if os.environ.get("MODEL_ID"):
        return os.environ["MODEL_ID"]
    readme = os.path.join(SPACE_ROOT, "README.md")
    text = open(readme, encoding="utf-8").read() if os.path.isfile(readme) else ""
    front_matter = text.split("---")[1] if text.startswith("---") else ""
    models = (yaml.safe_load(front_matter) or {}).get("models") or []
    if not models:
        raise RuntimeError("no model to load: set MODEL_ID or list one under `models:` in README.md")
    return models[0]


def get_classifier() -> Classifier:
    """The Space's model (from the Hub at HF_ENDPOINT), loaded once per process; MODEL_REVISION pins one."""
    global _classifier
    if _classifier is None:
        _classifier = Classifier(model_id(), revision=os.environ.get("MODEL_REVISION") or None)
    return _classifier


def predict(image: Image.Image, method: str | None = None, opacity: float = 0.5) -> tuple[dict, Image.Image]:
    """For the page: ({"label": headline, "confidences": {class: p}}, heatmap blended over the image).

    The headline is the top class when sure, "Not sure: looks most like ..." when the picture scores
    just past the first limit, "Neither ..." past the second (the probabilities and the heatmap are
    still shown). ``method=None``: the model's own default.
    """
    classifier = get_classifier()
    prediction = classifier.predict(image, method or classifier.cam_method)
    return {"label": headline(prediction, classifier.labels), "confidences": prediction.confidences}, \
        overlay(image, prediction.cam, opacity)


def headline(prediction: Prediction, labels: list[str]) -> str:
    if prediction.verdict == NEITHER:
        return neither_text(labels)
    if prediction.verdict == UNSURE:
        top = max(prediction.confidences, key=prediction.confidences.get)
        return unsure_text(top, prediction.confidences[top])
    return prediction.label


def classify(image: Image.Image) -> dict:
    """The machine-readable answer (the Space's ``/classify``): label (a class or "neither"), verdict ("sure",
    "unsure" or "neither"), calibrated confidences, the OOD score and both limits, the model's id and revision."""
    classifier = get_classifier()
    prediction = classifier.predict(image, method=None)
    return {"label": prediction.label, "verdict": prediction.verdict, "confidences": prediction.confidences,
            "ood_score": prediction.ood_score, "unsure_threshold": (classifier.ood or {}).get("unsure_threshold"),
            "threshold": prediction.threshold, "model": {"id": classifier.model_id, "revision": classifier.revision}}
