"""After the head is chosen: calibrate its confidences and fit the "neither" score, on train data only.

    temperature  <- NLL on held-out train predictions               -> folded into the head's weight and bias
    OOD stats    <- the training images' features                  -> ood.safetensors
    two limits   <- cross-fitted training scores (2 %, 0.5 % above) -> config.json "ood"
    OOD method   <- "neither" on the OOD set's selection half      -> reported on its test half

Validation is only measured here (ECE/NLL before and after with a bootstrap interval, the share of
each answer, accuracy on the sure ones).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from space.ood import METHODS, verdicts

from ..features.bank import SplitFeatures
from ..recipe import TrustRecipe
from .calibration import calibration_report, fold_temperature, save_reliability_diagram, shrunk_temperature
from .ood import (
    KNN_K,
    choose_method,
    compare_methods,
    cross_fitted_scores,
    fit_statistics,
    leave_one_out_knn,
    method_statistics,
    scores_of,
    statistics_rows,
    too_few_for,
)


@dataclass(frozen=True)
class OutOfFoldScores:
    """Train's plain views (each image and its mirror) scored by heads that never saw them (nor their near
    duplicates): which fold each image was in, the bank rows scored, their labels and logits."""

    fold_of: np.ndarray | None  # a fold id per training image (-1: never held out); None: no folds
    rows: torch.Tensor  # bank rows; row r shows image r % images
    labels: torch.Tensor
    logits: torch.Tensor  # (R, C)
    images: int  # training images in the bank

    @property
    def image_of_row(self) -> torch.Tensor:
        return self.rows % self.images

    def scaled(self, temperature: float) -> OutOfFoldScores:
        return replace(self, logits=self.logits / temperature)


def calibrate(linear: nn.Linear, holdout: SplitFeatures, out_of_fold: OutOfFoldScores, validation: SplitFeatures,
              output_dir: Path, seed: int = 0) -> dict:
    """Fit T on held-out train predictions, fold it into ``linear`` (in place), report validation before/after.

    Held out: the holdout's images (and mirrors) through the final head, and every training image through a head
    that never saw it (``out_of_fold``). The holdout alone is ~10 % of train and often all correct, which drives T
    towards 0; the folds add the rest. Few held-out images keep T nearer 1 (``shrunk_temperature``).
    """
    pairs, fold_images = holdout.pairs, out_of_fold.image_of_row
    with torch.no_grad():
        logits = torch.cat([linear(pairs.flatten(0, 1)), out_of_fold.logits])
        before = linear(validation.plain)
    labels = torch.cat([holdout.labels.repeat(len(pairs)), out_of_fold.labels])
    holdout_images = torch.arange(len(holdout)).repeat(len(pairs)) - len(holdout)  # ids below 0
    found = shrunk_temperature(logits, labels, torch.cat([holdout_images, fold_images]), seed)
    fold_temperature(linear, found.value)
    with torch.no_grad():
        after = linear(validation.plain)
    held_out = len(fold_images.unique())
    if found.images < 2:
        fitted_on = (f"nothing: {found.images} training image(s) could be held out (too few per class), so the "
                     "probabilities are left unscaled (T = 1)")
    else:
        fitted_on = (f"held-out train predictions of {found.images} images: the holdout ({len(holdout)}) and "
                     f"{held_out} training images out of fold, each with its mirror")
    report = {"temperature": found.value, "temperature_fitted": found.fitted, "shrinkage": found.shrinkage,
              "pinned": found.pinned, "held_out_images": found.images, "fitted_on": fitted_on,
              "validation_before": calibration_report(before, validation.labels, interval=True),
              "validation_after": calibration_report(after, validation.labels, interval=True)}
    save_reliability_diagram(before.softmax(-1), after.softmax(-1), validation.labels,
                             output_dir / "reliability.png", f"validation ({len(validation)} images), "
                                                             f"T = {found.value:.2f} from held-out train")
    return report


def fit_ood(linear: nn.Linear, bank, out_of_fold: OutOfFoldScores, holdout: SplitFeatures,
            validation: SplitFeatures, ood: torch.Tensor, ood_parts: list[str], trust: TrustRecipe
            ) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(report for results.json, the config.json "ood" entry, the tensors for ood.safetensors).

    ``linear`` is the final head, calibrated, and ``out_of_fold``'s logits are scaled by the same temperature.
    """
    num_classes, seed, rates = linear.out_features, trust.seed, trust.rates
    rows = statistics_rows(torch.arange(bank.images), bank.images, seed)
    stats = fit_statistics(bank.rows(rows), bank.labels[rows], num_classes, seed)
    in_scores, source, k = training_scores(linear, bank, out_of_fold, holdout.pairs.flatten(0, 1), stats, seed)
    scored = len(next(iter(in_scores.values())))
    few = [name for name, rate in zip(("unsure", "neither"), rates, strict=True) if too_few_for(in_scores["knn"], rate)]
    if few:
        source += f" ({' and '.join(few)}: extrapolated by a normal tail, too few scores)"
    table = compare_methods(stats, linear, in_scores, validation.plain, ood, ood_parts, rates, k)
    method = choose_method(table)
    used = table[method]
    with torch.no_grad():
        logits = linear(validation.plain)
    answered = verdicts(scores_of(method, validation.plain, logits, stats, k), used["unsure_threshold"],
                        used["threshold"])
    sure = torch.tensor([a == "sure" for a in answered])
    correct = logits.argmax(-1) == validation.labels
    config = {"method": method, "unsure_threshold": used["unsure_threshold"], "threshold": used["threshold"],
              "k": k, "statistics": "ood.safetensors", "unsure_rate": rates[0], "neither_rate": rates[1],
              "threshold_from": source}
    report = {**config, "methods": table, "ood_images": len(ood_parts), "validation": used["validation"],
              "scored_images": scored, "extrapolated": few,
              "validation_accepted": 1 - used["validation"]["neither"],
              "validation_accuracy_on_sure": float(correct[sure].float().mean()) if sure.any() else None}
    return report, config, method_statistics(method, stats)


def training_scores(linear: nn.Linear, bank, out_of_fold: OutOfFoldScores, holdout_rows: torch.Tensor, stats: dict,
                    seed: int) -> tuple[dict[str, torch.Tensor], str, int]:
    """(every method's scores of training images it never saw, where they come from, kNN's k). With too few images
    per class for folds, the holdout (``holdout_rows``: its images and mirrors, (2N, D), scored against all of
    train) stands in for the cross-fitted scores."""
    fold_of, num_classes = out_of_fold.fold_of, linear.out_features
    if fold_of is not None:
        plain = out_of_fold.rows < bank.images
        logits = torch.empty(bank.images, num_classes)
        logits[out_of_fold.rows[plain]] = out_of_fold.logits[plain]
        in_scores = cross_fitted_scores(bank, fold_of, logits, num_classes, seed)
        left_out = int((fold_of < 0).sum())
        source = (f"cross-fitted scores of {bank.images - left_out} training images ({int(fold_of.max()) + 1} folds, "
                  "near duplicates and every view of an image on one side"
                  + (f"; {left_out} images of classes too small to hold out are not scored)" if left_out else ")"))
        return in_scores, source, KNN_K
    if len(holdout_rows):
        with torch.no_grad():
            in_scores = {m: scores_of(m, holdout_rows, linear(holdout_rows), stats) for m in METHODS}
        source = f"the train holdout's {len(holdout_rows)} features (too few images per class for folds)"
        return in_scores, source, KNN_K
    # one image per class: only the kNN score can be measured on images it never saw
    k = min(KNN_K, max(1, 2 * bank.images - 2))
    source = (f"leave-one-out kNN scores of the {bank.images} training images (one image per class: no folds, "
              "no holdout; the other scores cannot be measured)")
    return {"knn": leave_one_out_knn(bank, k)}, source, k
