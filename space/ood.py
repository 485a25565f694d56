"""Out-of-distribution scores on a frozen backbone's pooled features: higher = less like the training images.

Pure numpy and self-contained (the Space runs without torch): the Space, ``training.predict`` and
training all score with this one module (training fits the statistics, ``training/pipeline/trust/ood.py``).
The statistics ship in the model repo as ``ood.safetensors``; the method, its parameters and the
threshold in ``config.json`` under ``"ood"``.

- ``msp``: 1 - the largest softmax probability (Hendrycks & Gimpel 2017), the common baseline.
- ``energy``: -logsumexp(logits) (Liu et al. 2020).
- ``mahalanobis``: the smallest squared Mahalanobis distance to a class mean, with one shared,
  shrunk covariance (Lee et al. 2018; Ledoit-Wolf shrinkage because D is near the sample count).
- ``knn``: 1 - cosine similarity to the k-th nearest training feature (Sun et al. 2022).

Three answers from two limits on the score (``verdict``): "sure" up to ``unsure_threshold``,
"unsure" up to ``threshold`` (the picture looks most like a class, but unlike the training pictures),
"neither" above it. A model saved before the middle answer has ``threshold`` alone: sure or neither.
"""

from __future__ import annotations

import numpy as np

METHODS = ("msp", "energy", "mahalanobis", "knn")
# Which statistics each method needs from ood.safetensors.
STATISTICS = {"msp": (), "energy": (), "mahalanobis": ("class_means", "precision"), "knn": ("bank",)}
SURE, UNSURE, NEITHER = "sure", "unsure", "neither"
VERDICTS = (SURE, UNSURE, NEITHER)


def verdict(score: float, unsure_threshold: float | None, threshold: float) -> str:
    """The answer for one score: sure, unsure (past the first limit) or neither (past the second)."""
    if score > threshold:
        return NEITHER
    return UNSURE if unsure_threshold is not None and score > unsure_threshold else SURE


def verdicts(scores, unsure_threshold: float | None, threshold: float) -> list[str]:
    return [verdict(float(s), unsure_threshold, threshold) for s in scores]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def ood_score(method: str, features, logits, stats: dict, k: int = 5) -> np.ndarray:
    """(N, D) pooled features and (N, C) logits -> (N,) scores; a score above the threshold means "neither".

    Arrays or CPU tensors in (they are read as float32 arrays), a float32 array out.
    """
    features, logits = np.asarray(features, np.float32), np.asarray(logits, np.float32)
    if method == "msp":
        return 1 - softmax(logits).max(-1)
    if method == "energy":
        top = logits.max(-1)
        return -(top + np.log(np.exp(logits - top[:, None]).sum(-1)))
    if method == "mahalanobis":
        means, precision = np.asarray(stats["class_means"], np.float32), np.asarray(stats["precision"], np.float32)
        # (x-m)P(x-m) expanded, so memory is N x C, not N x C x D (1,000 classes stay cheap).
        projected = features @ precision
        distances = ((projected * features).sum(-1, keepdims=True) - 2 * projected @ means.T
                     + ((means @ precision) * means).sum(-1))
        return distances.min(-1)
    if method == "knn":
        bank = np.asarray(stats["bank"], np.float32)  # unit-norm training features
        unit = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
        similarity = unit @ bank.T
        kth = min(k, len(bank))
        return 1 - -np.partition(-similarity, kth - 1, axis=-1)[:, kth - 1]
    raise ValueError(f"unknown OOD method {method!r}; choose from {', '.join(METHODS)}")
