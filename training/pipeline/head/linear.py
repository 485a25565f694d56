"""The new head: a linear layer trained on cached backbone features, and its out-of-fold twin for calibration.

``StandardizedHead`` trains on standardised features and ``fold()`` writes the scaling back into the
plain linear layer, so the saved model stays a plain timm model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from tqdm.auto import tqdm

from ..features.bank import FeatureBank, SplitFeatures, bank_loader
from ..recipe import HeadRecipe
from .checkpoints import FRESH_STATE, resume_state, save_checkpoint

CALIBRATION_FOLDS = 5
STD_FLOOR = 0.02  # of the median feature's spread: below, a feature is left out (frozen features sit far above)


class StandardizedHead(nn.Module):
    """Trains the model's linear head on standardised features; ``fold()`` writes the scaling into it."""

    def __init__(self, linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        # A linear probe is convex: start from zero, not from timm's init (scaled for ImageNet's 1000
        # outputs, it gives logits of ~15 on 1280 standardised features and a long first epoch).
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        self.linear = linear
        self.register_buffer("mean", mean)
        # A feature (nearly) constant on train is left out (its scale infinite, its weight 0): scaled by its own
        # spread it blows up when a new image moves it; floored, Adam still turns its noise-sized variation into a
        # full-sized weight. "Nearly": under STD_FLOOR of the median varying feature's (tuned stages leave hundreds).
        varying = std[std > 0]
        floor = STD_FLOOR * float(varying.median()) if len(varying) else 1.0
        std = std + 1e-6
        self.register_buffer("std", torch.where(std < floor, torch.inf, std))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        weight = self.linear.weight / self.std
        self.linear.bias -= weight @ self.mean
        self.linear.weight.copy_(weight)
        return self.linear


def predict_proba(head: nn.Module, features: torch.Tensor, tta: bool) -> torch.Tensor:
    """features: (2, N, D), the image and its mirror; with tta the two softmaxes are averaged."""
    head.eval()
    with torch.no_grad():
        return head(features).softmax(-1).mean(0) if tta else head(features[0]).softmax(-1)



def class_weights(labels: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor | None:
    """``balanced``: n / (classes x count), as sklearn's ``class_weight="balanced"``; ``none``: no weights."""
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float()
    return len(labels) / (num_classes * counts.clamp_min(1))


def train_one_epoch(head, loader, optimizer, scheduler, accelerator, label_smoothing: float = 0.0,
                    weight: torch.Tensor | None = None) -> float:
    head.train()
    total, count = 0.0, 0
    for features, labels in loader:
        with accelerator.accumulate(head):
            loss = F.cross_entropy(head(features), labels, weight=weight, label_smoothing=label_smoothing)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        total, count = total + loss.item() * len(labels), count + len(labels)
    return total / max(count, 1)


def head_optimizer(head: nn.Module, steps_per_epoch: int, recipe: HeadRecipe, accumulation: int = 1
                   ) -> tuple[torch.optim.Optimizer, object]:
    """AdamW with a one-cycle schedule over ``recipe.epochs``: the one recipe every head is trained with."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    return optimizer, one_cycle(optimizer, recipe.learning_rate, recipe.epochs * -(-steps_per_epoch // accumulation))


def one_cycle(optimizer: torch.optim.Optimizer, max_lr: float | list[float], steps: int
              ) -> torch.optim.lr_scheduler.OneCycleLR:
    """The one-cycle schedule every head and stage tuning uses: 10 % warm-up, and at least 2 steps of it (with
    about 10 steps in all, torch's warm-up phase would be 0 steps long and divide by zero)."""
    steps = max(4, steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, pct_start=max(0.1, 2 / steps),
                                               total_steps=steps)


def fit_plain_head(linear: nn.Linear, bank: FeatureBank, index: torch.Tensor, accelerator, recipe: HeadRecipe,
                   seed: int, after_epoch: Callable[[nn.Module], None] | None = None) -> StandardizedHead:
    """A head trained on ``index``'s rows with the final head's recipe for ``recipe.epochs`` (no checkpoints, no
    selection), in eval mode; ``after_epoch(head)`` is called after each epoch."""
    torch.manual_seed(seed)
    head = StandardizedHead(copy.deepcopy(linear), *bank.mean_std(index))
    loader = bank_loader(bank, index, recipe.batch_size, seed)
    weight = class_weights(bank.labels[index], linear.out_features, recipe.class_weight)
    optimizer, scheduler = head_optimizer(head, len(loader), recipe)
    for _ in range(recipe.epochs):
        train_one_epoch(head, loader, optimizer, scheduler, accelerator, recipe.label_smoothing, weight)
        if after_epoch is not None:
            after_epoch(head.eval())
    return head.eval()


def cross_fit_folds(labels: torch.Tensor, groups: np.ndarray | None, seed: int,
                    folds: int = CALIBRATION_FOLDS) -> np.ndarray | None:
    """A fold id per training image: stratified by class, every near-duplicate group (``groups``: an id per
    image) on one side, as many folds as the smallest class that can lend images has groups (at most
    ``folds``). A class of a single group is never held out (fold -1: a head without it would not know the
    class); None when no class can lend an image."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    sizes = {c: len(set(groups[labels == c].tolist())) for c in np.unique(labels)}
    eligible = [c for c, n in sizes.items() if n >= 2]
    if not eligible:
        return None
    count = min(folds, min(sizes[c] for c in eligible))
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    lent = np.isin(labels, eligible)
    splitter = StratifiedGroupKFold(count, shuffle=True, random_state=seed)
    index = np.flatnonzero(lent)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(index)), labels[lent], groups[lent])):
        fold_of[index[held_out]] = fold
    return fold_of


class OutOfFold:
    """The train images' plain views (the image and its mirror: bank rows ``rows``, labels ``labels``) scored by
    heads that never saw them, after any epoch of those heads' training (``logits(epoch)``).

    Each fold head's weights are kept after every epoch (epochs x folds x D x C floats, not N x C per
    epoch), so calibration can use the epoch the final head was chosen at: the temperature is then
    fitted on heads trained exactly as long as the one it scales.
    """

    def __init__(self, bank: FeatureBank, rows: list[torch.Tensor], states: list[list[dict]], num_classes: int,
                 fold_banks: list[FeatureBank] | None = None):
        self.bank, self.fold_rows, self.states, self.num_classes = bank, rows, states, num_classes
        self.fold_banks = fold_banks or [bank] * len(rows)  # the bank each fold's head was trained on
        self.rows = torch.cat(rows) if rows else torch.empty(0, dtype=torch.long)
        self.labels = bank.labels[self.rows] if rows else torch.empty(0, dtype=torch.long)

    def losses(self) -> list[float] | None:
        """The fold heads' log loss on the images they never saw, after each epoch (None: no folds)."""
        if not self.fold_rows:
            return None
        return [F.cross_entropy(self.logits(epoch), self.labels).item() for epoch in range(len(self.states[0]))]

    def logits(self, epoch: int = -1) -> torch.Tensor:
        """(R, C) logits of ``rows`` from the fold heads after ``epoch`` (-1: the last)."""
        out = [torch.empty(0, self.num_classes)]
        for rows, states, bank in zip(self.fold_rows, self.states, self.fold_banks, strict=True):
            linear = nn.Linear(bank.dim, self.num_classes)
            linear.load_state_dict(states[epoch])
            with torch.no_grad():
                out += [linear(features) for features, _ in bank.chunks(rows)]
        return torch.cat(out)


def out_of_fold_logits(linear: nn.Linear, bank: FeatureBank, accelerator, recipe: HeadRecipe,
                       fold_of: np.ndarray | None, fold_banks: list[FeatureBank] | None = None) -> OutOfFold:
    """Every train image's plain views scored by a head that never saw it (nor its near duplicates).

    The bank's first two views are un-augmented (the image and its mirror). One head per fold of
    ``fold_of`` (cross_fit_folds) is trained with the final head's recipe on the other folds' rows, every
    view (as sklearn's CalibratedClassifierCV with ensemble=False); every process computes the same heads.
    ``fold_banks``: fold k's features come from its own bank (tuned stages that never saw fold k: features/tuning.py).
    """
    images, plain_views = bank.images, 2
    rows_out, states = [], []
    if fold_of is None:
        return OutOfFold(bank, rows_out, states, linear.out_features)
    for fold in range(int(fold_of.max()) + 1):
        rows = rows_without(fold_of, fold, bank)
        held_out = torch.from_numpy(fold_of == fold).nonzero().squeeze(1)
        rows_out.append(torch.cat([view * images + held_out for view in range(plain_views)]))
        states.append([])
        fit_plain_head(linear, fold_banks[fold] if fold_banks else bank, rows, accelerator, recipe,
                       seed=fold_seed(recipe.seed, fold),
                       after_epoch=lambda head, kept=states[-1]: kept.append(folded(head)))
    return OutOfFold(bank, rows_out, states, linear.out_features, fold_banks)


def fold_seed(seed: int, fold: int) -> int:
    """The seed of fold ``fold``'s head and stage tuning: apart from the final head's and every other fold's."""
    return seed * 100 + fold


def rows_without(fold_of: np.ndarray, fold: int, bank: FeatureBank) -> torch.Tensor:
    """The bank's rows (every view; row r shows image r % images) of the images outside ``fold``."""
    image_of_row = torch.arange(len(bank)) % bank.images
    return (~torch.from_numpy(fold_of == fold)[image_of_row]).nonzero().squeeze(1)


def folded(head: StandardizedHead) -> dict[str, torch.Tensor]:
    """The plain linear layer's weights ``head`` stands for, leaving ``head`` as it is."""
    return copy.deepcopy(head).fold().state_dict()


def holdout_scores(head: nn.Module, holdout: SplitFeatures) -> tuple[float | None, float]:
    """(accuracy on the plain images, log loss over the images and their mirrors) of ``head``; (None, 0.0) for an
    empty holdout."""
    if len(holdout) == 0:
        return None, 0.0
    head.eval()
    with torch.no_grad():
        logits = head(holdout.pairs)
    accuracy = (logits[0].argmax(-1) == holdout.labels).float().mean().item()
    return accuracy, F.cross_entropy(logits.flatten(0, 1), holdout.labels.repeat(len(holdout.pairs))).item()


def held_out_loss(holdout_loss: float, holdout_rows: int, out_of_fold: tuple[list[float], int] | None,
                  epoch: int) -> float:
    """The mean log loss over the holdout's predictions and the out-of-fold ones after ``epoch`` (0 with neither)."""
    if not out_of_fold:
        return holdout_loss
    losses, rows = out_of_fold
    return (holdout_loss * holdout_rows + losses[epoch] * rows) / (holdout_rows + rows)


def best_head(linear: nn.Linear, bank: FeatureBank, rows: torch.Tensor, holdout: SplitFeatures, accelerator,
              recipe: HeadRecipe, output_dir: Path, out_of_fold: tuple[list[float], int] | None = None
              ) -> tuple[nn.Linear, dict]:
    """``linear`` trained for ``recipe.epochs`` on ``rows`` of the bank, checkpointed each epoch (``recipe.resume``
    continues); the epoch with the lowest log loss on every held-out prediction, folded: the holdout (each image and
    its mirror) through this head, and the training images through their out-of-fold heads after the
    same epoch (``out_of_fold``: one loss per epoch, and how many predictions each is over). A small folder's
    holdout of a few images alone picks an under-trained epoch by chance; with neither, the last epoch is kept.

    Log loss, not accuracy: on a holdout of ~70 images accuracy moves in steps of 1.4 % and often ties an
    under-fitted early epoch with the converged ones, which then gives over- or under-confident answers.
    """
    checkpoints = output_dir / "checkpoints"
    head = StandardizedHead(linear, *bank.mean_std(rows))
    loader = bank_loader(bank, rows, recipe.batch_size)
    order = loader.generator  # the prepared loader shuffles with it: reseeded per epoch below
    weight = class_weights(bank.labels[rows], head.linear.out_features, recipe.class_weight)
    optimizer, scheduler = head_optimizer(head, len(loader), recipe, recipe.gradient_accumulation_steps)
    head, optimizer, loader, scheduler = accelerator.prepare(head, optimizer, loader, scheduler)
    weight = None if weight is None else weight.to(accelerator.device)
    state = resume_state(accelerator, checkpoints) if recipe.resume else dict(FRESH_STATE)
    selected_on = " and ".join(name for name, used in (("holdout", len(holdout)), ("out-of-fold", out_of_fold))
                               if used) or "last epoch"
    for epoch in tqdm(range(state["epoch"] + 1, recipe.epochs), desc="head epochs",
                      disable=not accelerator.is_main_process):
        set_seed(recipe.seed + epoch)  # an epoch depends on (seed, epoch) only: resume is exact
        order.manual_seed(recipe.seed + epoch)
        loss = train_one_epoch(head, loader, optimizer, scheduler, accelerator, recipe.label_smoothing, weight)
        loss = accelerator.reduce(torch.tensor(loss, device=accelerator.device), "mean").item()  # every process's
        holdout_accuracy, holdout_loss = holdout_scores(accelerator.unwrap_model(head), holdout)
        selection_loss = held_out_loss(holdout_loss, 2 * len(holdout), out_of_fold, epoch)
        state.update(epoch=epoch, selected_on=selected_on)
        if selection_loss <= state["best_holdout_loss"]:  # selection on held-out train, never validation; ties: later
            state.update(best_holdout=holdout_accuracy, best_holdout_loss=selection_loss, best_epoch=epoch)
            if accelerator.is_main_process:
                save_file(accelerator.unwrap_model(head).state_dict(), output_dir / "best_head.safetensors")
        save_checkpoint(accelerator, checkpoints, state, {"epoch": epoch, "train_loss": loss,
                                                          "holdout_accuracy": holdout_accuracy,
                                                          "holdout_loss": holdout_loss}, output_dir)
    accelerator.wait_for_everyone()
    head = accelerator.unwrap_model(head)
    head.load_state_dict(load_file(output_dir / "best_head.safetensors"))
    return head.fold(), state  # the saved model is a plain timm model: the scaling now lives in its head


HOLDOUT_ALONE_PER_CLASS = 5  # holdout images per class (each class present) above which it picks the epoch alone


def selection_out_of_fold(held_out: OutOfFold, holdout: SplitFeatures, classes: int
                          ) -> tuple[list[float], int] | None:
    """The out-of-fold losses the epoch is also chosen on, or None where the holdout can choose alone: the fold
    heads see (k-1)/k of train and over-fit sooner, so they pull the choice early; a holdout of a few images per
    class (a small folder) is noisier still, and picked the epoch-0 head on 10 glyphs."""
    counts = torch.bincount(holdout.labels, minlength=classes)
    if (counts.min() > 0 and len(holdout) >= HOLDOUT_ALONE_PER_CLASS * classes) or not len(held_out.rows):
        return None
    return held_out.losses(), len(held_out.rows)
