"""Unfreezing the last stage(s): tune them on cached activations of the frozen part (LP-FT on a bank).

The backbone is cut before its last ``n`` stages. The frozen prefix runs once per image and view
(``PrefixFeatures``, written to disk as fp16 by ``features.write_bank``); each tuning epoch runs only
the ``Suffix`` (the last stages and what follows them up to the pooled features) and a linear head.
The head starts from the frozen model's linear probe (LP-FT, Kumar et al. 2022); the stages learn at
``--stage_learning_rate``, the head at ``--learning_rate``. Everything stays in eval mode: BatchNorm
keeps its running statistics, and frozen parameters keep ``requires_grad=False``.

Honesty: features from stages tuned on an image are closer to their class than a new image's, so
out-of-fold heads on them would make calibration over-confident. The stages are therefore also tuned
once per fold (``STAGE_FOLDS``, which the out-of-fold heads then use too; near duplicates on one side),
and each fold's out-of-fold head and logits use the bank of a suffix that never saw that fold
(``fold_banks``): calibration, the mislabel finder and the logit-based "neither" scores (msp, energy).
The feature-based scores (knn, mahalanobis) are distances in one model's geometry, which differs from
tuning to tuning: they stay cross-fitted on the final model's own bank (the folds' own geometries put
more of validation past the "neither" limit than it should: BENCHMARKS.md, *Unfreezing*).

The saved model stays the plain timm architecture with changed weights.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import DataLoaderConfiguration
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch import nn

from ...errors import UserError
from ..head.linear import StandardizedHead, class_weights, one_cycle
from ..recipe import HeadRecipe, StageRecipe
from .bank import READ_CHUNK_ROWS, FeatureBank, NpyRowWriter, bank_loader
from .extractor import PooledFeatures, feature_extractor, half_dtype
from .runtime import run_accelerator

STAGE_CHOICES = ("0", "1", "2", "auto")
AUTO_DEPTHS = (1,)  # auto weighs the frozen model against this depth (2 cost several times more per step)
AUTO_MIN_GAIN = 0.01  # auto unfreezes only when the holdout's answers (image and mirror) gain at least this share
AUTO_MAX_OOD_LOSS = 0.005  # ... and the kNN AUROC of holdout against the OOD selection half drops at most this much
# ... and no more of that half falls inside the holdout's "neither" limit (NEITHER_RATE) than with frozen features
STAGE_FOLDS = 3  # tuned runs' folds: each is a tuning of (k-1)/k of train (3 keeps tuned runs affordable)
SUGGEST_TUNING_BELOW = 0.9  # holdout accuracy of a frozen run below which --unfreeze_last_stages auto is suggested


def tuning_hint(requested: str, holdout_accuracy: float | None) -> str | None:
    """The one line a frozen run with a weak holdout prints: what to try next (None: no holdout to judge by)."""
    if requested != "0" or holdout_accuracy is None or holdout_accuracy >= SUGGEST_TUNING_BELOW:
        return None
    return (f"holdout accuracy {holdout_accuracy:.3f} with the backbone frozen: its features may not separate these "
            "images; try --unfreeze_last_stages auto")


def stages_of(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    """(stem, stages, tail) of a timm EfficientNet or ResNet: forward_features runs them in that order."""
    kind = type(model).__name__
    if kind == "EfficientNet":
        return [model.conv_stem, model.bn1], list(model.blocks), [model.conv_head, model.bn2]
    if kind == "ResNet":
        return ([model.conv1, model.bn1, model.act1, model.maxpool],
                [model.layer1, model.layer2, model.layer3, model.layer4], [])
    raise UserError(f"--unfreeze_last_stages supports timm's EfficientNet and ResNet families; this backbone is a "
                    f"{kind}: use --unfreeze_last_stages 0")


def check_depth(model: nn.Module, n: int) -> None:
    stages = stages_of(model)[1]
    if not 0 < n < len(stages):
        raise UserError(f"--unfreeze_last_stages {n}: this backbone has {len(stages)} stages; use 1 to "
                        f"{len(stages) - 1}")


class Prefix(nn.Module):
    """pixels -> the activation before the last ``n`` stages (the frozen part)."""

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        stem, stages, _ = stages_of(model)
        self.layers = nn.Sequential(*stem, *stages[:len(stages) - n])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels)


class Suffix(nn.Module):
    """The activation before the last ``n`` stages -> pooled features; its parameters are the model's own."""

    def __init__(self, model: nn.Module, n: int, shape: tuple[int, ...]):
        super().__init__()
        _, stages, tail = stages_of(model)
        self.layers = nn.Sequential(*stages[len(stages) - n:], *tail)
        self.pool = model.global_pool
        self.shape = tuple(shape)  # (C, H, W) of the cached activation
        self.depth = n

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        activation = rows.view(-1, *self.shape).contiguous(memory_format=torch.channels_last)  # faster on CPU
        return self.pool(self.layers(activation))


class PrefixFeatures(PooledFeatures):
    """``PooledFeatures`` for the prefix: rows are the flattened activation at the cut."""

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixels).flatten(1)


def prefix_extractor(model: nn.Module, n: int, precision: str, compiled: bool = False) -> PrefixFeatures:
    return feature_extractor(Prefix(model, n), precision, compiled, kind=PrefixFeatures)


def activation_shape(model: nn.Module, n: int, input_size: tuple[int, int, int]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(Prefix(model, n).eval()(torch.zeros(1, *input_size)).shape[1:])


@dataclass
class Tuned:
    """A tuning's result: the suffix's weights and what the holdout said after each epoch."""

    state: dict[str, torch.Tensor]
    report: dict


class StageModel(nn.Module):
    def __init__(self, suffix: Suffix, head: StandardizedHead):
        super().__init__()
        self.suffix, self.head = suffix, head

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.suffix(rows))


def holdout_figures(model: nn.Module, holdout: FeatureBank) -> tuple[int, float]:
    """(right answers over the holdout's images and mirrors, mean log loss) of rows -> logits ``model``."""
    model.eval()
    right, loss = 0, 0.0
    with torch.no_grad():
        for rows, labels in holdout.chunks(torch.arange(len(holdout)), 256):
            logits = model(rows)
            right += int((logits.argmax(-1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
    return right, loss / max(len(holdout), 1)


@dataclass(frozen=True)
class TuningRecipe:
    """How a stage tuning trains: the stages' recipe, the head's (its learning rate, batch, loss) and the run's
    measured precision, which the steps autocast to (the holdout's figures stay fp32, as users run the model)."""

    stages: StageRecipe
    head: HeadRecipe
    precision: str = "no"


def tune_stages(frozen: Suffix, probe: StandardizedHead, bank: FeatureBank, rows: torch.Tensor,
                holdout: FeatureBank | None, recipe: TuningRecipe, seed: int, saved: Path) -> Tuned:
    """A copy of the ``frozen`` suffix tuned for ``recipe.stages.epochs`` on ``rows`` of the prefix ``bank`` with a
    head that starts as ``probe``. The last epoch is kept (no selection: the fold tunings then repeat the same recipe
    exactly); the ``holdout``'s figures after each epoch are reported. Saved to ``saved`` (a resumed run loads it
    instead of tuning again: the result depends on the recipe and seed only)."""
    if saved.is_file():
        return Tuned(load_file(saved), json.loads(saved.with_suffix(".json").read_text()))
    started = time.time()
    set_seed(seed)
    suffix = copy.deepcopy(frozen).to(memory_format=torch.channels_last)
    for p in suffix.parameters():
        p.requires_grad_(True)
    tuned = StageModel(suffix, copy.deepcopy(probe))
    head, stages = recipe.head, recipe.stages
    loader = bank_loader(bank, rows, head.batch_size, seed)
    optimizer = torch.optim.AdamW([{"params": list(suffix.parameters()), "lr": stages.learning_rate},
                                   {"params": list(tuned.head.parameters()), "lr": head.learning_rate}],
                                  weight_decay=head.weight_decay)
    scheduler = one_cycle(optimizer, [stages.learning_rate, head.learning_rate], stages.epochs * len(loader))
    weight = class_weights(bank.labels[rows], probe.linear.out_features, head.class_weight)
    # Its own Accelerator (the processes are shared): the run's accelerator then checkpoints the head alone, so a
    # resumed run, which skips finished tunings, restores the same objects in the same order.
    accelerator = run_accelerator(recipe.precision, dataloader_config=DataLoaderConfiguration(split_batches=True))
    prepared, optimizer, prepared_loader, scheduler = accelerator.prepare(tuned, optimizer, loader, scheduler)
    history = []
    for epoch in range(stages.epochs):
        loader.generator.manual_seed(seed + epoch)
        tuning_epoch(prepared, prepared_loader, optimizer, scheduler, accelerator, weight, head.label_smoothing)
        unwrapped = accelerator.unwrap_model(prepared)
        entry = {"epoch": epoch}
        if holdout is not None:  # a new wrapper: the prepared one's forward autocasts
            right, loss = holdout_figures(StageModel(unwrapped.suffix, unwrapped.head), holdout)
            entry.update(holdout_accuracy=right / len(holdout), holdout_loss=loss)
        history.append(entry)
    suffix = accelerator.unwrap_model(prepared).suffix
    state = {k: v.detach().contiguous().clone() for k, v in suffix.state_dict().items()}  # safetensors: contiguous
    report = {"depth": frozen.depth, "epochs": stages.epochs, "last": history[-1], "history": history,
              "rows": len(rows), "seconds": round(time.time() - started, 1)}
    return save_tuning(Tuned(state, report), saved, accelerator)


def tuning_epoch(model: nn.Module, loader, optimizer, scheduler, accelerator, weight: torch.Tensor | None,
                 label_smoothing: float) -> None:
    model.eval()  # BatchNorm keeps its running statistics; no dropout
    for features, labels in loader:
        loss = F.cross_entropy(model(features), labels, weight=weight, label_smoothing=label_smoothing)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def save_tuning(tuned: Tuned, saved: Path, accelerator) -> Tuned:
    """Weights and report to ``saved`` (the weights last: a complete tuning), by the main process."""
    if accelerator.is_main_process:
        saved.parent.mkdir(parents=True, exist_ok=True)
        save_file(tuned.state, saved.with_suffix(".tmp"))
        saved.with_suffix(".json").write_text(json.dumps(tuned.report))
        saved.with_suffix(".tmp").replace(saved)  # the weights last: a complete tuning
    accelerator.wait_for_everyone()
    return tuned


def autocast(precision: str):
    """The run's measured precision (bf16/fp16) for the suffix's passes, as for the frozen part's; fp32 otherwise."""
    dtype = half_dtype(precision)
    return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)


@torch.inference_mode()
def pool(suffix: Suffix, rows: torch.Tensor, precision: str) -> torch.Tensor:
    """Prefix rows -> pooled fp32 features through ``suffix`` (eval mode) in the run's precision."""
    suffix.eval()
    with autocast(precision):
        return suffix(rows).float()


@torch.inference_mode()
def pooled_bank(suffix: Suffix, prefix: FeatureBank, directory: Path, accelerator, precision: str = "no"
                ) -> FeatureBank:
    """``suffix`` over every row of the prefix bank: the pooled bank the heads train on (one file per view)."""
    files = [directory / Path(file).name for file in prefix.files]
    if accelerator.is_main_process:
        for view, file in enumerate(files):
            if file.is_file():  # a resumed run: written whole before (renamed when complete)
                continue
            writer = NpyRowWriter(file, prefix.images)
            index = torch.arange(prefix.images) + view * prefix.images
            for rows, _ in prefix.chunks(index, READ_CHUNK_ROWS // 8):
                writer.append(pool(suffix, rows, precision).numpy())
            writer.close()
    accelerator.wait_for_everyone()
    return FeatureBank(files, prefix.image_labels)


class TunedFeatures:
    """pixels -> pooled features through the (compiled) prefix and the suffix: the run's other splits take the
    same path as its bank, and the prefix is not compiled twice."""

    def __init__(self, prefix: PrefixFeatures, suffix: Suffix, precision: str):
        self.prefix, self.suffix, self.precision = prefix, suffix, precision

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return pool(self.suffix, self.prefix(pixels), self.precision)


def pooled_pairs(suffix: Suffix, prefix: FeatureBank, precision: str = "no") -> torch.Tensor:
    """A small split's (2, N, D) pooled features (the image and its mirror) from its prefix bank."""
    out = torch.cat([pool(suffix, rows, precision) for rows, _ in prefix.chunks(torch.arange(len(prefix)), 256)])
    return out.view(2, prefix.images, -1)


def load_suffix(model: nn.Module, n: int, shape: tuple[int, ...], state: dict[str, torch.Tensor],
                as_copy: bool = False) -> Suffix:
    """The model's own suffix with ``state`` loaded into it (the model changes), or a copy (a fold's)."""
    suffix = Suffix(model, n, shape)
    if as_copy:
        suffix = copy.deepcopy(suffix)
    with torch.no_grad():
        for name, tensor in suffix.state_dict().items():
            tensor.copy_(state[name])  # in place: requires_grad stays False, the model keeps its tensors
    return suffix


def auto_choice(frozen_right: int, tuned: dict[int, Tuned], predictions: int, frozen_auroc: float = 1.0,
                frozen_missed: int = 0) -> int:
    """0, or the depth whose holdout answers beat the frozen model's by at least ``AUTO_MIN_GAIN`` (and 2) while its
    features still tell the OOD set's selection half apart: kNN AUROC down by at most ``AUTO_MAX_OOD_LOSS``
    (``report["ood_auroc"]``) and no more of those images inside the holdout's "neither" limit than frozen
    (``report["ood_missed"]``: the operating point users get, which an AUROC near 1 hides)."""
    need = max(2, int(np.ceil(AUTO_MIN_GAIN * predictions)))
    best, best_right = 0, frozen_right + need - 1
    for depth, result in sorted(tuned.items()):
        right = round(result.report["last"]["holdout_accuracy"] * predictions)
        keeps_ood = (result.report.get("ood_auroc", 1.0) >= frozen_auroc - AUTO_MAX_OOD_LOSS
                     and result.report.get("ood_missed", 0) <= frozen_missed)
        if right > best_right and keeps_ood:
            best, best_right = depth, right
    return best


def ood_separation(suffix: Suffix, bank: FeatureBank, holdout: FeatureBank, ood_rows: torch.Tensor, precision: str,
                   seed: int) -> dict[str, float]:
    """How well the features pooled by ``suffix`` tell other pictures apart, by kNN against ``bank`` (train's rows):
    the AUROC of the holdout (images and mirrors) against OOD images (their prefix rows), and ``missed``: how many
    of those images score inside the holdout's "neither" limit (``NEITHER_RATE`` of the holdout beyond it)."""
    from ..trust.ood import NEITHER_RATE, auroc, limit, scores_of, statistics_rows

    # kNN's statistics only (fit_statistics also fits the Mahalanobis precision, which this never reads).
    stats = {"bank": F.normalize(bank.rows(statistics_rows(torch.arange(bank.images), bank.images, seed)), dim=-1)}
    inside = pooled_pairs(suffix, holdout, precision).flatten(0, 1)
    outside = pool(suffix, ood_rows, precision)
    no_logits = torch.zeros(1, 1)  # knn reads features only
    in_scores = scores_of("knn", inside, no_logits.expand(len(inside), 1), stats)
    out_scores = scores_of("knn", outside, no_logits.expand(len(outside), 1), stats)
    inside_limit = limit(in_scores, NEITHER_RATE, extrapolate=False)
    return {"auroc": auroc(in_scores, out_scores), "missed": int((out_scores <= inside_limit).sum())}
