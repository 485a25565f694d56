"""Fit the out-of-distribution scores of ``space/ood.py`` on training features and set their two limits.

The limits come from cross-fitted scores: every training image is scored by statistics fitted
without its fold, and a fold keeps each near-duplicate group and every view of an image on one side
(``head.cross_fit_folds``), so no image is scored against its own twin. Above the first limit the
answer is "unsure" (``UNSURE_RATE`` of those training images are), above the second "neither"
(``NEITHER_RATE``). Never validation, never the OOD set: the method is chosen on the OOD set's
``selection`` half and reported on its ``test`` half (training/pipeline/trust/ood_set.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import cho_factor, cho_solve, pinvh
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from space.ood import METHODS, STATISTICS, VERDICTS, ood_score, verdicts

UNSURE_RATE = 0.02  # share of training images (cross-fitted) answered "unsure" or "neither": the first limit
NEITHER_RATE = 0.005  # share answered "neither": the second limit
KNN_K = 5
ABSENT_CLASS_DISTANCE = 1e6
KNN_MAX_BANK = 20_000  # training features kept for kNN (a seeded subset beyond this): ood.safetensors stays small


def fit_statistics(features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0) -> dict:
    """Every method's statistics from (N, D) training features: class means, shrunk shared precision, kNN bank."""
    features = features.float()
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    centred = (features - means[labels]).double().numpy()
    absent = torch.bincount(labels, minlength=num_classes) == 0  # a class a cross-fitting fold holds out whole
    means[absent] = ABSENT_CLASS_DISTANCE  # so far away that it is never the nearest class
    covariance = LedoitWolf(assume_centered=True, store_precision=False).fit(centred).covariance_
    precision = torch.from_numpy(_inverse(covariance)).float()
    bank = F.normalize(features, dim=-1)
    if len(bank) > KNN_MAX_BANK:
        bank = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:KNN_MAX_BANK]]
    return {"class_means": means.contiguous(), "precision": precision.contiguous(), "bank": bank.contiguous()}


def _inverse(covariance: np.ndarray) -> np.ndarray:
    """The inverse of a shrunk covariance: by Cholesky (positive definite once shrunk; much faster than sklearn's
    ``precision_``, an eigendecomposition), by pseudo-inverse if degenerate."""
    try:
        factor = cho_factor(covariance, lower=True)
    except np.linalg.LinAlgError:
        return pinvh(covariance)
    return cho_solve(factor, np.eye(len(covariance)))


def statistics_rows(images: torch.Tensor, total_images: int, seed: int) -> torch.Tensor:
    """The bank rows the statistics are fitted on: the plain view and the mirror of ``images``, a seeded
    sample of at most ``KNN_MAX_BANK``."""
    rows = torch.cat([images, images + total_images])
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:KNN_MAX_BANK]]


def cross_fitted_scores(bank, fold_of: np.ndarray, logits: torch.Tensor, num_classes: int,
                        seed: int) -> dict[str, torch.Tensor]:
    """Every method's score of each held-out training image's plain view (``fold_of >= 0``, in image order), from
    statistics fitted on the other folds.

    ``logits``: (images, C) calibrated logits of the plain views from the out-of-fold heads (msp, energy).
    """
    fold_of = torch.from_numpy(fold_of)
    scored = (fold_of >= 0).nonzero().squeeze(1)
    scores = {method: torch.empty(bank.images) for method in METHODS}
    for fold in fold_of[scored].unique().tolist():
        held = (fold_of == fold).nonzero().squeeze(1)
        rows = statistics_rows((fold_of != fold).nonzero().squeeze(1), bank.images, seed)
        stats = fit_statistics(bank.rows(rows), bank.labels[rows], num_classes, seed)
        features = bank.rows(held)
        for method in METHODS:
            scores[method][held] = scores_of(method, features, logits[held], stats)
    return {method: score[scored] for method, score in scores.items()}


def leave_one_out_knn(bank, k: int = KNN_K) -> torch.Tensor:
    """The kNN score of each training image's plain view against every other image's plain view and mirror: the
    one honest score when no class has images enough for folds (``bank.images`` is then small)."""
    images = torch.arange(bank.images)
    features = bank.rows(images)
    others = F.normalize(bank.rows(torch.cat([images, images + bank.images])).float(), dim=-1)
    unit = F.normalize(features.float(), dim=-1)
    similarity = unit @ others.T
    own = torch.cat([images, images])
    similarity[own[None, :] == images[:, None]] = -torch.inf
    return 1 - similarity.topk(min(k, len(others) - 2), dim=-1).values[:, -1]


def scores_of(method: str, features: torch.Tensor, logits: torch.Tensor, stats: dict, k: int = KNN_K) -> torch.Tensor:
    """The Space's own score (space.ood, numpy) as a tensor, for training's bookkeeping."""
    return torch.from_numpy(ood_score(method, features.detach(), logits.detach(), stats, k=k))


def limit(in_scores: torch.Tensor, rate: float, extrapolate: bool = True) -> float:
    """The score that only ``rate`` of the in-distribution images exceed.

    Fewer than ``1 / rate`` scores cannot place that quantile (it lies beyond the largest): then the larger of
    the empirical quantile and a normal tail's (mean + z x std) is taken, so a small folder errs towards
    accepting real pictures rather than calling them "neither" (``extrapolate=False``: the empirical quantile
    alone, for comparing two feature sets on one holdout). No scores at all: no limit (infinity).
    """
    scores = in_scores.double()
    if len(scores) == 0:
        return float("inf")
    quantile = float(torch.quantile(scores, 1 - rate))
    if len(scores) * rate >= 1 or not extrapolate:
        return quantile
    from scipy.stats import norm

    spread = float(scores.std()) if len(scores) > 1 else 0.0
    return max(quantile, float(scores.mean()) + float(norm.ppf(1 - rate)) * spread)


def too_few_for(in_scores: torch.Tensor, rate: float) -> bool:
    """Whether ``limit`` had to extrapolate for ``rate``."""
    return len(in_scores) * rate < 1


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """Area under the ROC curve for telling OOD (positive, higher score) from in-distribution."""
    truth = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(truth, np.r_[in_scores.numpy(), out_scores.numpy()]))


def shares(scores: torch.Tensor, unsure: float, neither: float) -> dict[str, float]:
    """The share of ``scores`` answered sure, unsure and neither."""
    answered = verdicts(scores, unsure, neither)
    return {v: sum(a == v for a in answered) / max(len(answered), 1) for v in VERDICTS}


def compare_methods(stats: dict, head, in_scores: dict[str, torch.Tensor], validation: torch.Tensor,
                    ood: torch.Tensor, ood_parts: list[str], rates: tuple[float, float], k: int = KNN_K) -> dict:
    """Per method: both limits (from ``in_scores``, the cross-fitted training scores), AUROC on each OOD half
    (selection: against ``in_scores``; test: against validation) and the share of each answer there.

    ``head`` maps features to (calibrated) logits; the feature tensors are (N, D).
    """
    selection = torch.tensor([p == "selection" for p in ood_parts])
    with torch.no_grad():
        logits = {"validation": head(validation), "ood": head(ood)}
    table = {}
    for method in in_scores:  # the methods that could be scored on held-out training images
        score = {name: scores_of(method, x, logits[name], stats, k)
                 for name, x in (("validation", validation), ("ood", ood))}
        unsure, neither = (limit(in_scores[method], rate) for rate in rates)
        row = {"unsure_threshold": unsure, "threshold": neither,
               "validation": shares(score["validation"], unsure, neither)}
        for part, mask, inside in (("selection", selection, in_scores[method]),
                                   ("test", ~selection, score["validation"])):
            row[f"auroc_{part}"] = auroc(inside, score["ood"][mask])
            row[f"ood_{part}"] = shares(score["ood"][mask], unsure, neither)
        table[method] = row
    return table


def choose_method(table: dict) -> str:
    """Most of the selection half answered "neither" at the limit; ties broken by AUROC there."""
    return max(table, key=lambda m: (round(table[m]["ood_selection"]["neither"], 4),
                                     round(table[m]["auroc_selection"], 4)))


def method_statistics(method: str, stats: dict) -> dict[str, torch.Tensor]:
    """Only what ``method`` needs, for ood.safetensors (safetensors cannot store an empty file's worth of nothing)."""
    kept = {name: stats[name] for name in STATISTICS[method]}
    return kept or {"none": torch.zeros(1)}
