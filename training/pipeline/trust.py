"""After the head is chosen: calibrate its confidences and fit the "neither" score, on train data only.

    temperature  <- NLL on held-out train predictions        -> folded into the head's weight and bias
    OOD stats    <- the training images' features          -> ood.safetensors
    threshold    <- the holdout's scores at 95 % TPR        -> config.json "ood"
    OOD method   <- AUROC on the OOD set's selection half   -> reported on its test half

Validation is only measured here (ECE/NLL before and after, images accepted, accuracy on them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from space.ood import ood_score

from .calibration import calibration_report, fit_temperature, fold_temperature, save_reliability_diagram
from .ood import KNN_K, TPR, choose_method, compare_methods, fit_statistics, method_statistics


def calibrate(linear: nn.Linear, holdout: torch.Tensor, holdout_labels: torch.Tensor, fold_logits: torch.Tensor,
              fold_labels: torch.Tensor, validation: torch.Tensor, validation_labels: torch.Tensor,
              output_dir: Path) -> dict:
    """Fit T on held-out train predictions, fold it into ``linear`` (in place), report validation before/after.

    Held out: the holdout's images through the final head (``holdout``: (V, N, D), the image and its
    mirror) and every training image through a head that never saw it (``fold_logits``). The holdout
    alone is ~10 % of train and often all correct, which drives T towards 0; the folds add the rest.
    """
    with torch.no_grad():
        logits = torch.cat([linear(holdout.flatten(0, 1)), fold_logits])
        before = linear(validation)
    labels = torch.cat([holdout_labels.repeat(len(holdout)), fold_labels])
    temperature = fit_temperature(logits, labels)
    fold_temperature(linear, temperature)
    with torch.no_grad():
        after = linear(validation)
    report = {"temperature": temperature,
              "fitted_on": f"held-out train predictions: the holdout ({len(holdout_labels)} images) and "
                           f"{len(fold_labels) // len(holdout)} training images out of fold, each with its mirror",
              "validation_before": calibration_report(before, validation_labels),
              "validation_after": calibration_report(after, validation_labels)}
    save_reliability_diagram(before.softmax(-1), after.softmax(-1), validation_labels,
                             output_dir / "reliability.png", f"validation ({len(validation_labels)} images), "
                                                             f"T = {temperature:.2f} from held-out train")
    return report


def fit_ood(linear: nn.Linear, train_features: torch.Tensor, train_labels: torch.Tensor, holdout: torch.Tensor,
            validation: torch.Tensor, validation_labels: torch.Tensor, ood: torch.Tensor, ood_parts: list[str],
            num_classes: int, seed: int) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(report for results.json, the config.json "ood" entry, the tensors for ood.safetensors).

    ``linear`` is the final, calibrated head; every feature tensor is (N, D).
    """
    stats = fit_statistics(train_features, train_labels, num_classes, seed)
    table = compare_methods(stats, linear, holdout, validation, ood, ood_parts)
    method = choose_method(table)
    threshold = table[method]["threshold"]
    with torch.no_grad():
        logits = linear(validation)
    accepted = ood_score(method, validation, logits, stats, k=KNN_K) <= threshold
    correct = logits.argmax(-1) == validation_labels
    config = {"method": method, "threshold": threshold, "k": KNN_K, "statistics": "ood.safetensors",
              "threshold_from": f"train holdout, {TPR:.0%} true-positive rate"}
    report = {**config, "methods": table, "ood_images": len(ood_parts),
              "validation_accepted": float(accepted.float().mean()),
              "validation_accuracy_on_accepted": float(correct[accepted].float().mean()) if accepted.any() else None}
    return report, config, method_statistics(method, stats)
