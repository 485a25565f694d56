"""The second head recipe for small folders: a logistic regression fitted to convergence on the raw features.

The one-cycle head (linear.py) trains on per-feature standardised features, which puts every feature on an
equal footing. With a few images per class that costs accuracy where most features barely vary (BENCHMARKS.md,
"Why the probe wins on grey digits"). A full-batch L-BFGS fit with sklearn's L2 penalty does not. Which head a
run keeps is decided on the training images' out-of-fold predictions, never on validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..features.bank import FeatureBank
from ..trust.calibration import fit_temperature
from .linear import OutOfFold, class_weights

PENALTIES = (1.0, 10.0)  # sklearn's C (per image): its default, and a weaker penalty
SMALL_PER_CLASS = 30  # median training images per class up to which the converged head competes
MAX_WORK = 100_000  # images x classes: each fit holds the plain views in memory and costs ~ images x classes
MAX_ITERATIONS = 200
PLAIN_VIEWS = 2  # the bank's first two views: the image as evaluated and its mirror
# A converged head replaces one-cycle only when its loss is lower, paired image by image, at the usual one-sided 5 %
# level: a near tie keeps the incumbent.
STANDARD_ERRORS = 1.645


@dataclass(frozen=True)
class HeadChoice:
    """Which head recipe a run kept, and the out-of-fold log loss (at its best temperature) of each it tried."""

    recipe: str  # "one-cycle" or "converged"
    penalty: float | None  # the converged head's C
    losses: dict[str, float]
    reason: str


def competes(labels: torch.Tensor, classes: int) -> bool:
    """A small folder: few images per class, and a fit cheap enough to run six times per penalty."""
    per_class = torch.bincount(labels, minlength=classes).float()
    return float(per_class.median()) <= SMALL_PER_CLASS and len(labels) * classes <= MAX_WORK


def fit_converged(features: torch.Tensor, labels: torch.Tensor, classes: int, penalty: float, images: int,
                  weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A linear layer's weights minimising the mean cross-entropy + |W|^2 / (2 C images): sklearn's
    ``LogisticRegression(C)`` over ``images`` images, whose views share each image's weight."""
    w = torch.zeros(classes, features.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    x = features.double()
    optimizer = torch.optim.LBFGS([w, b], max_iter=MAX_ITERATIONS, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-10)
    weight = None if weight is None else weight.double()

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(x @ w.T + b, labels, weight=weight) + (w * w).sum() / (2 * penalty * images)
        value.backward()
        return value

    optimizer.step(loss)
    return {"weight": w.detach().float(), "bias": b.detach().float()}


def plain_rows(rows: torch.Tensor, images: int) -> torch.Tensor:
    return rows[rows < PLAIN_VIEWS * images]


def converged_out_of_fold(bank: FeatureBank, held_out: OutOfFold, penalty: float, class_weight: str,
                          fold_banks: list[FeatureBank] | None = None) -> OutOfFold:
    """The converged head's twin of ``held_out``: the same held-out rows, each fold's head fitted on the plain
    views of the other folds' images (in that fold's bank, when tuned stages gave each fold its own)."""
    states = []
    every = torch.arange(PLAIN_VIEWS * bank.images)
    for fold, held_rows in enumerate(held_out.fold_rows):
        fold_bank = fold_banks[fold] if fold_banks else bank
        held = torch.zeros(bank.images, dtype=torch.bool)
        held[held_rows % bank.images] = True
        rows = every[~held[every % bank.images]]
        states.append([fit_on(fold_bank, rows, held_out.num_classes, penalty, class_weight)])
    return OutOfFold(bank, held_out.fold_rows, states, held_out.num_classes, fold_banks)


def fit_on(bank: FeatureBank, rows: torch.Tensor, classes: int, penalty: float, class_weight: str
           ) -> dict[str, torch.Tensor]:
    labels = bank.labels[rows]
    weight = class_weights(labels, classes, class_weight)
    return fit_converged(bank.rows(rows), labels, classes, penalty, len(rows.remainder(bank.images).unique()), weight)


def calibrated_losses(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Each held-out image's log loss (over its views) at the temperature that suits these logits best: what a
    recipe gives once calibrated, as every head is (a penalty that only scales the logits changes nothing)."""
    rows = F.cross_entropy(logits.double() / fit_temperature(logits, labels), labels, reduction="none")
    ids, image_of_row = images.unique(return_inverse=True)
    total = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, image_of_row, rows)
    return total / torch.bincount(image_of_row, minlength=len(ids))


def clearly_lower(incumbent: torch.Tensor, candidate: torch.Tensor) -> tuple[bool, float, float]:
    """(is the candidate's loss lower by more than ``STANDARD_ERRORS`` standard errors of the paired per-image
    difference, that mean difference, its standard error)."""
    difference = incumbent - candidate
    error = float(difference.std() / len(difference) ** 0.5) if len(difference) > 1 else float("inf")
    mean = float(difference.mean())
    return mean > STANDARD_ERRORS * error, mean, error


def compete(linear: nn.Linear, bank: FeatureBank, rows: torch.Tensor, held_out: OutOfFold,
            one_cycle_logits: torch.Tensor, class_weight: str, fold_banks: list[FeatureBank] | None = None
            ) -> tuple[HeadChoice, torch.Tensor]:
    """The head to keep: ``linear`` (the one-cycle head, trained on ``rows``) or, on a small folder, the best
    converged head when its calibrated out-of-fold loss is clearly lower, image by image. A converged winner is
    written into ``linear``. Returns the choice and the kept recipe's out-of-fold logits."""
    classes = linear.out_features
    if not held_out.fold_rows:
        return HeadChoice("one-cycle", None, {}, "no out-of-fold predictions to compare on"), one_cycle_logits
    if not competes(bank.image_labels, classes):
        return HeadChoice("one-cycle", None, {}, "not a small folder"), one_cycle_logits
    images, labels = held_out.rows % bank.images, held_out.labels
    incumbent = calibrated_losses(one_cycle_logits, labels, images)
    losses, candidates = {"one-cycle": float(incumbent.mean())}, {}
    for penalty in PENALTIES:
        logits = converged_out_of_fold(bank, held_out, penalty, class_weight, fold_banks).logits(0)
        candidates[penalty] = (logits, calibrated_losses(logits, labels, images))
        losses[f"converged C={penalty:g}"] = float(candidates[penalty][1].mean())
    penalty = min(candidates, key=lambda c: float(candidates[c][1].mean()))
    lower, mean, error = clearly_lower(incumbent, candidates[penalty][1])
    rounded = {k: round(v, 4) for k, v in losses.items()}
    said = f"converged C={penalty:g} lower by {mean:.4f} per image, standard error {error:.4f}"
    if not lower:
        return HeadChoice("one-cycle", None, rounded, f"not clearly lower: {said}"), one_cycle_logits
    linear.load_state_dict(fit_on(bank, plain_rows(rows, bank.images), classes, penalty, class_weight))
    return HeadChoice("converged", penalty, rounded, f"clearly lower: {said}"), candidates[penalty][0]
