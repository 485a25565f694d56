"""The Space's model: load it from the Hub by id, classify, say "neither", and explain with a CAM.

It runs on ONNX Runtime, numpy and Pillow, without torch: the model repo's ``onnx/model.onnx`` gives the
logits, the pooled features and the last feature map; ``preprocess.py`` is timm's eval transform.
``predict(image, method, opacity)`` (for the page) and ``classify(image)`` (the JSON answer) are pure
functions over one ``Classifier.predict`` and are tested without a server. The probabilities are
calibrated (the temperature is folded into the head's weights); the "neither" score and its two limits
come with the model (``config.json`` "ood" and ``ood.safetensors``, see ood.py): the answer is "sure",
"unsure" (looks most like a class, but unlike the training pictures) or "neither".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import yaml
from PIL import Image

from .cam import CAM_METHODS, JET_PALETTE, class_activation_map, overlay  # noqa: F401
from .ood import NEITHER, SURE, UNSURE, ood_score, softmax, verdict
from .preprocess import EvalTransform
from .texts import neither_text, unsure_text

ONNX_FILE = "onnx/model.onnx"
ONNX_OUTPUTS = ("logits", "features", "feature_map")  # features: pooled, what the head and "neither" read


@dataclass
class Prediction:
    label: str  # a class name, or NEITHER
    verdict: str  # SURE, UNSURE or NEITHER (ood.py); SURE when the model has no "neither" score
    confidences: dict[str, float]  # calibrated, over the classes (they still sum to 1 for "neither")
    ood_score: float | None
    threshold: float | None
    cam: np.ndarray | None  # (H, W) in [0, 1] for the top class, at feature-map resolution


class ModelFiles:
    """A model's files from one place: a local folder, or a Hub repo at one pinned commit (resolved
    first, so a push in between can't mix two versions)."""

    def __init__(self, model: str | os.PathLike, revision: str | None = None):
        self.model, self.local = str(model), os.path.isdir(model)
        self.revision = revision
        if not self.local and revision is None:
            from huggingface_hub import HfApi

            self.revision = HfApi().model_info(self.model).sha

    def path(self, name: str) -> str:
        if self.local:
            return os.path.join(self.model, name)
        from huggingface_hub import hf_hub_download

        return hf_hub_download(self.model, name, revision=self.revision)

    def exists(self, name: str) -> bool:
        if self.local:
            return os.path.isfile(os.path.join(self.model, name))
        from huggingface_hub import file_exists

        return file_exists(self.model, name, revision=self.revision)

    def config(self) -> dict:
        with open(self.path("config.json"), encoding="utf-8") as f:
            return json.load(f)

    def ood_statistics(self, config: dict) -> dict[str, np.ndarray] | None:
        from safetensors.numpy import load_file

        return load_file(self.path(config["ood"]["statistics"])) if config.get("ood") else None

    def head(self, config: dict) -> tuple[np.ndarray, np.ndarray]:
        """The classifier's weight (classes, D) and bias, read alone from model.safetensors."""
        from safetensors import safe_open

        name = config.get("pretrained_cfg", {}).get("classifier", "classifier")
        with safe_open(self.path("model.safetensors"), framework="numpy") as f:
            return f.get_tensor(f"{name}.weight").astype(np.float32), f.get_tensor(f"{name}.bias").astype(np.float32)


class Classifier:
    """``model``: a Hub model id or a local folder in timm's Hub layout with ``onnx/model.onnx``."""

    def __init__(self, model: str | os.PathLike, revision: str | None = None):
        import onnxruntime as ort

        files = ModelFiles(model, revision)
        if not files.exists(ONNX_FILE):
            raise FileNotFoundError(f"{model} has no {ONNX_FILE}: it was published before the ONNX export; "
                                    "retrain or re-publish it (python -m training.retrain / training.train)")
        self.model_id, self.revision = (None, None) if files.local else (files.model, files.revision)
        config = files.config()
        self.setup(config, files.head(config), files.ood_statistics(config))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(files.path(ONNX_FILE), options, providers=["CPUExecutionProvider"])

    def setup(self, config: dict, head: tuple[np.ndarray, np.ndarray], ood_statistics: dict | None) -> None:
        """What every runtime shares: labels, preprocessing, the calibrated head, "neither" and the CAM default."""
        names = config.get("label_names") or [str(i) for i in range(len(head[0]))]
        self.labels = list(names)
        self.transform = EvalTransform(config.get("pretrained_cfg", {}))
        self.weight, self.bias = head
        ood = config.get("ood")
        self.ood, self.ood_statistics = (ood, ood_statistics) if ood and ood_statistics is not None else (None, None)
        self.cam_method = config.get("cam_method", "CAM")

    def forward(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3, H, W) float32 -> logits (N, classes), pooled features (N, D), last feature map (N, D, h, w)."""
        return tuple(self.session.run(list(ONNX_OUTPUTS), {"pixel_values": np.ascontiguousarray(pixels)}))

    def decide(self, pooled) -> list[Prediction]:
        """Pooled features (N, D) -> one Prediction each (no CAM): calibrated probabilities and the OOD verdict."""
        pooled = np.asarray(pooled, np.float32)
        logits = pooled @ self.weight.T + self.bias
        scores = (ood_score(self.ood["method"], pooled, logits, self.ood_statistics, k=self.ood.get("k", 5))
                  if self.ood is not None else [None] * len(pooled))
        threshold = float(self.ood["threshold"]) if self.ood is not None else None
        unsure = self.ood.get("unsure_threshold") if self.ood is not None else None
        predictions = []
        for probs, score in zip(softmax(logits), scores, strict=True):
            answer = SURE if score is None else verdict(float(score), unsure, threshold)
            label = NEITHER if answer == NEITHER else self.labels[int(probs.argmax())]
            predictions.append(Prediction(label, answer,
                                          {name: float(p) for name, p in zip(self.labels, probs, strict=True)},
                                          None if score is None else float(score), threshold, None))
        return predictions

    def predict(self, image: Image.Image, method: str | None = "CAM") -> Prediction:
        """Calibrated class probabilities, the OOD verdict, and the CAM for the top class (``method=None``: none)."""
        prediction, cams = self.explain(image, [] if method is None else [method])
        prediction.cam = cams.get(method)
        return prediction

    def explain(self, image: Image.Image, methods: list[str]) -> tuple[Prediction, dict[str, np.ndarray]]:
        """One forward pass: the prediction, and the top class's map under each of ``methods``."""
        _, pooled, feature_map = self.forward(self.transform(image)[None])
        prediction = self.decide(pooled)[0]
        top = self.labels.index(max(prediction.confidences, key=prediction.confidences.get))
        return prediction, {m: self.cam(feature_map[0], top, m) for m in methods}

    def cam(self, feature_map: np.ndarray, target: int, method: str) -> np.ndarray:
        """(D, h, w) feature map -> (h, w) map in [0, 1] for class ``target``."""
        return class_activation_map(feature_map, self.weight[target], method)


_classifier: Classifier | None = None
# The Space's root: its README.md, examples/, space.json and feedback.json sit beside this package.
SPACE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def front_matter() -> dict:
    """This Space's README YAML (``models:``, ``datasets:``), or {}."""
    readme = os.path.join(SPACE_ROOT, "README.md")
    text = open(readme, encoding="utf-8").read() if os.path.isfile(readme) else ""
    return (yaml.safe_load(text.split("---")[1]) or {}) if text.startswith("---") else {}


def space_datasets() -> tuple[str, ...]:
    """The datasets this Space's model is trained and published from (README ``datasets:``)."""
    return tuple(front_matter().get("datasets") or ())


def model_id() -> str:
    """MODEL_ID from the environment, else the first of ``models:`` in this Space's README."""
    if os.environ.get("MODEL_ID"):
        return os.environ["MODEL_ID"]
    models = front_matter().get("models") or []
    if not models:
        raise RuntimeError("no model to load: set MODEL_ID or list one under `models:` in README.md")
    return models[0]


def get_classifier() -> Classifier:
    """The Space's model (from the Hub at HF_ENDPOINT), loaded once per process; MODEL_REVISION pins one."""
    global _classifier
    if _classifier is None:
        _classifier = Classifier(model_id(), revision=os.environ.get("MODEL_REVISION") or None)
    return _classifier


def predict(image: Image.Image, method: str | None = None, opacity: float = 0.5,
            classifier: Classifier | None = None) -> tuple[dict, Image.Image]:
    """For the page: ({"label": headline, "confidences": {class: p}}, heatmap blended over the image).

    The headline is the top class when sure, "Not sure: looks most like ..." when the picture scores
    just past the first limit, "Neither ..." past the second (the probabilities and the heatmap are
    still shown). ``method=None``: the model's own default; ``classifier=None``: the Space's model.
    """
    classifier = classifier or get_classifier()
    prediction = classifier.predict(image, method or classifier.cam_method)
    return {"label": headline(prediction, classifier.labels), "confidences": prediction.confidences}, \
        overlay(image, prediction.cam, opacity)


def compare(image: Image.Image, opacity: float = 0.5, classifier: Classifier | None = None
            ) -> list[tuple[Image.Image, str]]:
    """For the page's "Compare all methods": the top class's heatmap under every CAM method, each captioned."""
    _, cams = (classifier or get_classifier()).explain(image, list(CAM_METHODS))
    return [(overlay(image, cams[m], opacity), m) for m in CAM_METHODS]


def headline(prediction: Prediction, labels: list[str]) -> str:
    if prediction.verdict == NEITHER:
        return neither_text(labels)
    if prediction.verdict == UNSURE:
        top = max(prediction.confidences, key=prediction.confidences.get)
        return unsure_text(top, prediction.confidences[top])
    return prediction.label


def classify(image: Image.Image, classifier: Classifier | None = None) -> dict:
    """The machine-readable answer (the Space's ``/classify``): label (a class or "neither"), verdict ("sure",
    "unsure" or "neither"), calibrated confidences, the OOD score and both limits, the model's id and revision."""
    classifier = classifier or get_classifier()
    prediction = classifier.predict(image, method=None)
    return {"label": prediction.label, "verdict": prediction.verdict, "confidences": prediction.confidences,
            "ood_score": prediction.ood_score, "unsure_threshold": (classifier.ood or {}).get("unsure_threshold"),
            "threshold": prediction.threshold, "model": {"id": classifier.model_id, "revision": classifier.revision}}
