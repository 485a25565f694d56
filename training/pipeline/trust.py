"""After the head is chosen: calibrate its confidences and fit the "neither" score, on train data only.

    temperature  <- NLL on held-out train predictions               -> folded into the head's weight and bias
    OOD stats    <- the training images' features                  -> ood.safetensors
    two limits   <- cross-fitted training scores (2 %, 0.5 % above) -> config.json "ood"
    OOD method   <- "neither" on the OOD set's selection half      -> reported on its test half

Validation is only measured here (ECE/NLL before and after with a bootstrap interval, the share of
each answer, accuracy on the sure ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from space.ood import METHODS, verdicts

from .calibration import calibration_report, fold_temperature, save_reliability_diagram, shrunk_temperature
from .ood import (
    KNN_K,
    NEITHER_RATE,
    UNSURE_RATE,
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


def calibrate(linear: nn.Linear, holdout: torch.Tensor, holdout_labels: torch.Tensor, fold_logits: torch.Tensor,
              fold_labels: torch.Tensor, fold_images: torch.Tensor, validation: torch.Tensor,
              validation_labels: torch.Tensor, output_dir: Path, seed: int = 0) -> dict:
    """Fit T on held-out train predictions, fold it into ``linear`` (in place), report validation before/after.

    Held out: the holdout's images through the final head (``holdout``: (V, N, D), the image and its
    mirror) and every training image through a head that never saw it (``fold_logits``; ``fold_images``: the
    training image of each row). The holdout alone is ~10 % of train and often all correct, which drives T
    towards 0; the folds add the rest. Few held-out images keep T nearer 1 (``shrunk_temperature``).
    """
    with torch.no_grad():
        logits = torch.cat([linear(holdout.flatten(0, 1)), fold_logits])
        before = linear(validation)
    labels = torch.cat([holdout_labels.repeat(len(holdout)), fold_labels])
    holdout_images = torch.arange(len(holdout_labels)).repeat(len(holdout)) - len(holdout_labels)  # ids below 0
    found = shrunk_temperature(logits, labels, torch.cat([holdout_images, fold_images]), seed)
    fold_temperature(linear, found.value)
    with torch.no_grad():
        after = linear(validation)
    held_out = len(fold_images.unique())
    if found.images < 2:
        fitted_on = (f"nothing: {found.images} training image(s) could be held out (too few per class), so the "
                     "probabilities are left unscaled (T = 1)")
    else:
        fitted_on = (f"held-out train predictions of {found.images} images: the holdout ({len(holdout_labels)}) and "
                     f"{held_out} training images out of fold, each with its mirror")
    report = {"temperature": found.value, "temperature_fitted": found.fitted, "shrinkage": found.shrinkage,
              "pinned": found.pinned, "held_out_images": found.images, "fitted_on": fitted_on,
              "validation_before": calibration_report(before, validation_labels, interval=True),
              "validation_after": calibration_report(after, validation_labels, interval=True)}
    save_reliability_diagram(before.softmax(-1), after.softmax(-1), validation_labels,
                             output_dir / "reliability.png", f"validation ({len(validation_labels)} images), "
                                                             f"T = {found.value:.2f} from held-out train")
    return report


def fit_ood(linear: nn.Linear, temperature: float, bank, fold_of: np.ndarray | None, fold_logits: torch.Tensor,
            fold_rows: torch.Tensor, holdout: torch.Tensor, validation: torch.Tensor, validation_labels: torch.Tensor,
            ood: torch.Tensor, ood_parts: list[str], num_classes: int, seed: int,
            rates: tuple[float, float] = (UNSURE_RATE, NEITHER_RATE)) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(report for results.json, the config.json "ood" entry, the tensors for ood.safetensors).

    ``linear`` is the final head, calibrated with ``temperature``; ``fold_logits`` are the out-of-fold
    heads' logits of the bank rows ``fold_rows`` (plain views and mirrors; uncalibrated, so they are
    divided by ``temperature`` here); every feature tensor is (N, D). With too few images per class for
    folds, the holdout (scored against all of train) stands in for the cross-fitted scores.
    """
    rows = statistics_rows(torch.arange(bank.images), bank.images, seed)
    stats = fit_statistics(bank.rows(rows), bank.labels[rows], num_classes, seed)
    k = KNN_K
    if fold_of is not None:
        plain = fold_rows < bank.images
        logits = torch.empty(bank.images, num_classes)
        logits[fold_rows[plain]] = fold_logits[plain] / temperature
        in_scores = cross_fitted_scores(bank, fold_of, logits, num_classes, seed)
        left_out = int((fold_of < 0).sum())
        source = (f"cross-fitted scores of {bank.images - left_out} training images ({int(fold_of.max()) + 1} folds, "
                  "near duplicates and every view of an image on one side"
                  + (f"; {left_out} images of classes too small to hold out are not scored)" if left_out else ")"))
    elif len(holdout):
        with torch.no_grad():
            in_scores = {m: scores_of(m, holdout, linear(holdout), stats) for m in METHODS}
        source = f"the train holdout's {len(holdout)} features (too few images per class for folds)"
    else:  # one image per class: only the kNN score can be measured on images it never saw
        k = min(KNN_K, max(1, 2 * bank.images - 2))
        in_scores = {"knn": leave_one_out_knn(bank, k)}
        source = (f"leave-one-out kNN scores of the {bank.images} training images (one image per class: no folds, "
                  "no holdout; the other scores cannot be measured)")
    scored = len(next(iter(in_scores.values())))
    few = [name for name, rate in zip(("unsure", "neither"), rates, strict=True) if too_few_for(in_scores["knn"], rate)]
    if few:
        source += f" ({' and '.join(few)}: extrapolated by a normal tail, too few scores)"
    table = compare_methods(stats, linear, in_scores, validation, ood, ood_parts, rates, k)
    method = choose_method(table)
    used = table[method]
    with torch.no_grad():
        logits = linear(validation)
    answered = verdicts(scores_of(method, validation, logits, stats, k), used["unsure_threshold"],
                        used["threshold"])
    sure = torch.tensor([a == "sure" for a in answered])
    correct = logits.argmax(-1) == validation_labels
    config = {"method": method, "unsure_threshold": used["unsure_threshold"], "threshold": used["threshold"],
              "k": k, "statistics": "ood.safetensors", "unsure_rate": rates[0], "neither_rate": rates[1],
              "threshold_from": source}
    report = {**config, "methods": table, "ood_images": len(ood_parts), "validation": used["validation"],
              "scored_images": scored, "extrapolated": few,
              "validation_accepted": 1 - used["validation"]["neither"],
              "validation_accuracy_on_sure": float(correct[sure].float().mean()) if sure.any() else None}
    return report, config, method_statistics(method, stats)
