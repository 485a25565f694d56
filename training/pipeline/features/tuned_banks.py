"""``--unfreeze_last_stages``: the banks the head is trained on when the last stage(s) are tuned (tuning.py).

    prefix bank (fp16, every view) -> the frozen linear probe            (LP; auto's "0")
                                   -> the stages tuned on all of train   (FT; auto's "1", judged on the holdout)
                                   -> per fold, stages tuned without it  (honest calibration and "neither")
    then the pooled banks: the tuned suffix over every row, and each fold's suffix over every row.

``auto`` keeps the frozen model unless tuning answers more of the train holdout right without telling the OOD
set's selection half apart less well (tuning.auto_choice); validation and the OOD test half are never looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..head.linear import StandardizedHead, cross_fit_folds, fit_plain_head, fold_seed, rows_without
from ..recipe import FeatureRecipe
from .bank import FeatureBank, SplitFeatures, feature_passes, write_bank
from .tuning import (
    AUTO_DEPTHS,
    AUTO_MAX_OOD_LOSS,
    AUTO_MIN_GAIN,
    STAGE_FOLDS,
    StageModel,
    Suffix,
    TunedFeatures,
    TuningRecipe,
    activation_shape,
    auto_choice,
    check_depth,
    holdout_figures,
    load_suffix,
    ood_separation,
    pooled_bank,
    pooled_pairs,
    prefix_extractor,
    tune_stages,
)


@dataclass
class StageBanks:
    bank: FeatureBank  # pooled train features of the model as saved
    holdout: SplitFeatures
    fold_of: np.ndarray | None  # the stage folds (None: frozen, or too few images for folds)
    fold_banks: list[FeatureBank] | None
    report: dict  # for results.json and the card
    features: TunedFeatures  # pixels -> pooled features of the model as saved, for the other splits


@dataclass(frozen=True)
class StageInputs:
    """What a tuning reads: the prepared loaders (train plain, train augmented, holdout), train's near-duplicate
    group ids (the folds keep them whole) and the OOD set's selection half, preprocessed (auto checks that tuning
    keeps telling it apart)."""

    loaders: tuple
    groups: np.ndarray
    ood_pixels: torch.Tensor


@dataclass(frozen=True)
class StageRun:
    """What every tuning of one run shares: the model cut ``depth`` stages from its end, the recipe, where to save."""

    model: nn.Module
    depth: int
    shape: tuple[int, ...]  # the cached activation's (C, H, W)
    recipe: TuningRecipe
    accelerator: object
    checkpoints: Path

    @property
    def frozen(self) -> Suffix:
        return Suffix(self.model, self.depth, self.shape)

    @property
    def seed(self) -> int:
        return self.recipe.head.seed

    def probe(self, frozen_bank: FeatureBank, rows: torch.Tensor, seed: int) -> StandardizedHead:
        """The frozen model's linear probe on ``rows``: where a tuning's head starts (LP-FT)."""
        return fit_plain_head(self.model.get_classifier(), frozen_bank, rows, self.accelerator, self.recipe.head,
                              seed=seed)

    def tune(self, probe: StandardizedHead, prefix: FeatureBank, rows: torch.Tensor, holdout: FeatureBank | None,
             seed: int, name: str):
        return tune_stages(self.frozen, probe, prefix, rows, holdout, self.recipe, seed,
                           self.checkpoints / "stages" / f"{name}.safetensors")

    def pooled(self, suffix: Suffix, prefix: FeatureBank, name: str) -> FeatureBank:
        return pooled_bank(suffix, prefix, self.checkpoints / name, self.accelerator, self.recipe.precision)


def stage_banks(model: nn.Module, input_size: tuple[int, int, int], inputs: StageInputs, recipe: TuningRecipe,
                features: FeatureRecipe, compiled: bool, accelerator, checkpoints: Path) -> StageBanks:
    """Tune the last stage(s) of ``model`` in place (or keep it, for auto's 0)."""
    requested = recipe.stages.requested
    depth = max(AUTO_DEPTHS) if requested == "auto" else int(requested)
    check_depth(model, depth)
    run = StageRun(model, depth, activation_shape(model, depth, input_size), recipe, accelerator, checkpoints)
    plain, augmented, holdout_loader = inputs.loaders
    extractor = prefix_extractor(model, depth, recipe.precision, compiled)
    views = feature_passes(features.augmentation, features.augmented_views)
    prefix = write_bank(extractor, (plain, augmented), accelerator, views, features.seed, checkpoints / "prefix",
                        resume=features.resume, dtype="<f2")
    frozen_bank = run.pooled(run.frozen, prefix, "pooled_frozen")
    if len(holdout_loader.dataset) == 0:
        return without_holdout(run, prefix, frozen_bank, extractor, inputs.groups)
    holdout_prefix = write_bank(extractor, (holdout_loader, None), accelerator, 1, features.seed,
                                checkpoints / "prefix_holdout", resume=features.resume, dtype="<f2")
    with torch.inference_mode():
        ood_rows = torch.cat([extractor(part) for part in inputs.ood_pixels.split(features.batch_size)])
    return judged_tuning(run, prefix, frozen_bank, holdout_prefix, ood_rows, extractor, inputs.groups)


def judged_tuning(run: StageRun, prefix: FeatureBank, frozen_bank: FeatureBank, holdout_prefix: FeatureBank,
                  ood_rows: torch.Tensor, extractor, groups: np.ndarray) -> StageBanks:
    """The tuning on all of train, judged against the frozen model on the holdout and the OOD selection half."""
    every_row, precision, depth = torch.arange(len(prefix)), run.recipe.precision, run.depth
    probe = run.probe(frozen_bank, every_row, run.seed)
    frozen_right, frozen_loss = holdout_figures(StageModel(run.frozen, probe), holdout_prefix)
    final = run.tune(probe, prefix, every_row, holdout_prefix, run.seed, f"depth_{depth}")
    tuned_suffix = load_suffix(run.model, depth, run.shape, final.state, as_copy=True)
    tuned_bank = run.pooled(tuned_suffix, prefix, f"pooled_depth_{depth}")
    frozen_ood = ood_separation(run.frozen, frozen_bank, holdout_prefix, ood_rows, precision, run.seed)
    tuned_ood = ood_separation(tuned_suffix, tuned_bank, holdout_prefix, ood_rows, precision, run.seed)
    final.report.update(ood_auroc=tuned_ood["auroc"], ood_missed=tuned_ood["missed"])
    requested = run.recipe.stages.requested
    chosen = (auto_choice(frozen_right, {depth: final}, len(holdout_prefix), frozen_ood["auroc"], frozen_ood["missed"])
              if requested == "auto" else depth)
    report = {"requested": requested, "chosen": chosen, "depth_tried": depth,
              "holdout_predictions": len(holdout_prefix), "auto_min_gain": AUTO_MIN_GAIN,
              "auto_max_ood_loss": AUTO_MAX_OOD_LOSS, "ood_selection_images": len(ood_rows),
              "frozen": {"holdout_accuracy": frozen_right / len(holdout_prefix), "holdout_loss": frozen_loss,
                         "ood_auroc": frozen_ood["auroc"], "ood_missed": frozen_ood["missed"]},
              "tuned": final.report, "stage_learning_rate": run.recipe.stages.learning_rate, "precision": precision,
              "prefix_bank_bytes": sum(Path(f).stat().st_size for f in prefix.files),
              "activation_shape": list(run.shape)}
    if chosen == 0:
        pairs = SplitFeatures(pooled_pairs(run.frozen, holdout_prefix, precision), holdout_prefix.image_labels)
        return StageBanks(frozen_bank, pairs, None, None, report, TunedFeatures(extractor, run.frozen, precision))
    fold_of, fold_banks, suffix = tuned_model(run, prefix, frozen_bank, final, groups)
    report["fold_tunings"] = 0 if fold_of is None else int(fold_of.max()) + 1
    holdout = SplitFeatures(pooled_pairs(suffix, holdout_prefix, precision), holdout_prefix.image_labels)
    return StageBanks(tuned_bank, holdout, fold_of, fold_banks, report, TunedFeatures(extractor, suffix, precision))


def tuned_model(run: StageRun, prefix: FeatureBank, frozen_bank: FeatureBank, final, groups: np.ndarray
                ) -> tuple[np.ndarray | None, list[FeatureBank] | None, Suffix]:
    """The fold tunings' banks, then the model's own stages set to the ``final`` tuning: (folds, banks, suffix)."""
    # The folds first: each starts, as the final tuning did, from the frozen weights the model still holds.
    fold_of = cross_fit_folds(prefix.image_labels, groups, run.seed, STAGE_FOLDS)  # also the out-of-fold heads'
    fold_banks = None if fold_of is None else [fold_bank(run, fold, fold_of, prefix, frozen_bank)
                                               for fold in range(int(fold_of.max()) + 1)]
    return fold_of, fold_banks, load_suffix(run.model, run.depth, run.shape, final.state)


def without_holdout(run: StageRun, prefix: FeatureBank, frozen_bank: FeatureBank, extractor, groups: np.ndarray
                    ) -> StageBanks:
    """A small folder with no holdout: ``auto`` has nothing to judge a tuning by and keeps the backbone frozen; an
    explicit depth is tuned as asked (no holdout figures), with its fold tunings."""
    empty = SplitFeatures(torch.empty(2, 0, frozen_bank.dim), torch.empty(0, dtype=torch.long))
    precision, depth = run.recipe.precision, run.depth
    report = {"requested": run.recipe.stages.requested, "holdout_predictions": 0, "precision": precision,
              "stage_learning_rate": run.recipe.stages.learning_rate, "activation_shape": list(run.shape)}
    if run.recipe.stages.requested == "auto":
        return StageBanks(frozen_bank, empty, None, None, {**report, "chosen": 0, "depth_tried": 0},
                          TunedFeatures(extractor, run.frozen, precision))
    every_row = torch.arange(len(prefix))
    final = run.tune(run.probe(frozen_bank, every_row, run.seed), prefix, every_row, None, run.seed, f"depth_{depth}")
    tuned_bank = run.pooled(load_suffix(run.model, depth, run.shape, final.state, as_copy=True), prefix,
                            f"pooled_depth_{depth}")
    fold_of, fold_banks, suffix = tuned_model(run, prefix, frozen_bank, final, groups)
    report.update(chosen=depth, depth_tried=depth, tuned=final.report,
                  fold_tunings=0 if fold_of is None else int(fold_of.max()) + 1)
    return StageBanks(tuned_bank, empty, fold_of, fold_banks, report, TunedFeatures(extractor, suffix, precision))


def fold_bank(run: StageRun, fold: int, fold_of: np.ndarray, prefix: FeatureBank, frozen_bank: FeatureBank
              ) -> FeatureBank:
    """The pooled bank of stages tuned, with the final tuning's recipe, on every fold but ``fold``."""
    rows = rows_without(fold_of, fold, prefix)
    seed = fold_seed(run.seed, fold)
    tuned = run.tune(run.probe(frozen_bank, rows, seed), prefix, rows, None, seed, f"depth_{run.depth}_fold_{fold}")
    suffix = load_suffix(run.model, run.depth, run.shape, tuned.state, as_copy=True)
    return run.pooled(suffix, prefix, f"pooled_depth_{run.depth}_fold_{fold}")
