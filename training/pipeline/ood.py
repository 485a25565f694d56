"""Fit the out-of-distribution scores of ``space/ood.py`` on training features and measure them.

The statistics come from the training images' features; the threshold from the train holdout alone
(the score that ``TPR`` of its images stay under), never from validation or the OOD set. The method
is chosen on the OOD set's ``selection`` half and reported on its ``test`` half (training/pipeline/ood_set.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from space.ood import METHODS, STATISTICS, ood_score

TPR = 0.95  # share of in-distribution images the threshold accepts
KNN_K = 5
KNN_MAX_BANK = 20_000  # training features kept for kNN (a seeded subset beyond this): ood.safetensors stays small


def fit_statistics(features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0) -> dict:
    """Every method's statistics from (N, D) training features: class means, shrunk shared precision, kNN bank."""
    features = features.float()
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    centred = (features - means[labels]).double().numpy()
    precision = torch.from_numpy(LedoitWolf(assume_centered=True).fit(centred).precision_).float()
    bank = F.normalize(features, dim=-1)
    if len(bank) > KNN_MAX_BANK:
        bank = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:KNN_MAX_BANK]]
    return {"class_means": means.contiguous(), "precision": precision.contiguous(), "bank": bank.contiguous()}


def threshold_at_tpr(in_scores: torch.Tensor, tpr: float = TPR) -> float:
    """The score under which ``tpr`` of the in-distribution images fall."""
    return float(torch.quantile(in_scores.double(), tpr))


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """Area under the ROC curve for telling OOD (positive, higher score) from in-distribution."""
    truth = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(truth, np.r_[in_scores.numpy(), out_scores.numpy()]))


def fpr_at_tpr(in_scores: torch.Tensor, out_scores: torch.Tensor, tpr: float = TPR) -> float:
    """Share of OOD images accepted when the threshold keeps ``tpr`` of these in-distribution images."""
    return float((out_scores <= threshold_at_tpr(in_scores, tpr)).float().mean())


def compare_methods(stats: dict, head, holdout: torch.Tensor, validation: torch.Tensor, ood: torch.Tensor,
                    ood_parts: list[str]) -> dict:
    """Per method: threshold (holdout), AUROC / FPR@95TPR on each OOD half (selection: against the holdout;
    test: against validation), validation accepted.

    ``head`` maps features to (calibrated) logits; the three feature tensors are (N, D).
    """
    selection = torch.tensor([p == "selection" for p in ood_parts])
    table = {}
    with torch.no_grad():
        logits = {name: head(x) for name, x in (("holdout", holdout), ("validation", validation), ("ood", ood))}
    for method in METHODS:
        score = {name: ood_score(method, x, logits[name], stats, k=KNN_K)
                 for name, x in (("holdout", holdout), ("validation", validation), ("ood", ood))}
        threshold = threshold_at_tpr(score["holdout"])
        row = {"threshold": threshold,
               "validation_accepted": float((score["validation"] <= threshold).float().mean())}
        # The method is chosen on the selection half against the holdout; validation only reports.
        for part, mask, inside in (("selection", selection, score["holdout"]), ("test", ~selection,
                                                                                score["validation"])):
            row[f"auroc_{part}"] = auroc(inside, score["ood"][mask])
            row[f"fpr95_{part}"] = fpr_at_tpr(inside, score["ood"][mask])
            row[f"ood_accepted_{part}"] = float((score["ood"][mask] <= threshold).float().mean())
        table[method] = row
    return table


def choose_method(table: dict) -> str:
    """Best AUROC on the selection half; ties broken by the lower FPR@95TPR there."""
    return max(table, key=lambda m: (round(table[m]["auroc_selection"], 4), -table[m]["fpr95_selection"]))


def method_statistics(method: str, stats: dict) -> dict[str, torch.Tensor]:
    """Only what ``method`` needs, for ood.safetensors (safetensors cannot store an empty file's worth of nothing)."""
    kept = {name: stats[name] for name in STATISTICS[method]}
    return kept or {"none": torch.zeros(1)}
