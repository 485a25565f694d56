"""``--unfreeze_last_stages``: the banks the head is trained on when the last stage(s) are tuned (stages.py).

    prefix bank (fp16, every view) -> the frozen linear probe            (LP; auto's "0")
                                   -> the stages tuned on all of train   (FT; auto's "1", judged on the holdout)
                                   -> per fold, stages tuned without it  (honest calibration and "neither")
    then the pooled banks: the tuned suffix over every row, and each fold's suffix over every row.

``auto`` keeps the frozen model unless tuning answers more of the train holdout right without telling the OOD
set's selection half apart less well (stages.auto_choice); validation and the OOD test half are never looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .features import FeatureBank, feature_passes, write_bank
from .head import cross_fit_folds, fit_plain_head
from .stages import (
    AUTO_DEPTHS,
    AUTO_MAX_OOD_LOSS,
    AUTO_MIN_GAIN,
    STAGE_FOLDS,
    StageModel,
    Suffix,
    TunedFeatures,
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
    holdout: torch.Tensor  # (2, N, D)
    holdout_labels: torch.Tensor
    fold_of: np.ndarray | None  # the stage folds (None: frozen, or too few images for folds)
    fold_banks: list[FeatureBank] | None
    report: dict  # for results.json and the card
    features: TunedFeatures  # pixels -> pooled features of the model as saved, for the other splits


def stage_banks(args, model: nn.Module, input_size: tuple[int, int, int], precision: str, compiled: bool,
                loaders: tuple, groups: np.ndarray, ood_pixels: torch.Tensor, accelerator,
                checkpoints: Path) -> StageBanks:
    """Tune the last stage(s) of ``model`` in place (or keep it, for auto's 0); ``loaders``: (train plain,
    train augmented, holdout), prepared; ``groups``: near-duplicate group ids of train (the folds keep them whole);
    ``ood_pixels``: the OOD set's selection half, preprocessed (auto checks that tuning keeps telling it apart)."""
    plain, augmented, holdout_loader = loaders
    depth = max(AUTO_DEPTHS) if args.unfreeze_last_stages == "auto" else int(args.unfreeze_last_stages)
    check_depth(model, depth)
    shape = activation_shape(model, depth, input_size)
    extractor = prefix_extractor(model, depth, precision, compiled)
    views = feature_passes(args.augmentation, args.augmented_views)
    prefix = write_bank(extractor, plain, augmented, accelerator, views, args.seed, checkpoints / "prefix",
                        resume=args.resume, dtype="<f2")
    frozen = Suffix(model, depth, shape)
    frozen_bank = pooled_bank(frozen, prefix, checkpoints / "pooled_frozen", accelerator, precision)
    if len(holdout_loader.dataset) == 0:
        return without_holdout(args, model, depth, shape, prefix, frozen_bank, extractor, precision, groups,
                               accelerator, checkpoints)
    holdout = write_bank(extractor, holdout_loader, None, accelerator, 1, args.seed, checkpoints / "prefix_holdout",
                         resume=args.resume, dtype="<f2")
    every_row = torch.arange(len(prefix))
    probe = fit_plain_head(model.get_classifier(), frozen_bank, every_row, accelerator, args, seed=args.seed)
    frozen_right, frozen_loss = holdout_figures(StageModel(frozen, probe), holdout)
    final = tune_stages(model, depth, shape, probe, prefix, every_row, holdout, args.stage_epochs, args, args.seed,
                        checkpoints / "stages" / f"depth_{depth}.safetensors", precision)
    with torch.inference_mode():
        ood_rows = torch.cat([extractor(part) for part in ood_pixels.split(args.batch_size)])
    tuned_suffix = load_suffix(model, depth, shape, final.state, as_copy=True)
    tuned_bank = pooled_bank(tuned_suffix, prefix, checkpoints / f"pooled_depth_{depth}", accelerator, precision)
    frozen_ood = ood_separation(frozen, frozen_bank, holdout, ood_rows, precision, args.seed)
    tuned_ood = ood_separation(tuned_suffix, tuned_bank, holdout, ood_rows, precision, args.seed)
    final.report.update(ood_auroc=tuned_ood["auroc"], ood_missed=tuned_ood["missed"])
    chosen = (auto_choice(frozen_right, {depth: final}, len(holdout), frozen_ood["auroc"], frozen_ood["missed"])
              if args.unfreeze_last_stages == "auto" else depth)
    report = {"requested": args.unfreeze_last_stages, "chosen": chosen, "depth_tried": depth,
              "holdout_predictions": len(holdout), "auto_min_gain": AUTO_MIN_GAIN,
              "auto_max_ood_loss": AUTO_MAX_OOD_LOSS, "ood_selection_images": len(ood_rows),
              "frozen": {"holdout_accuracy": frozen_right / len(holdout), "holdout_loss": frozen_loss,
                         "ood_auroc": frozen_ood["auroc"], "ood_missed": frozen_ood["missed"]},
              "tuned": final.report, "stage_learning_rate": args.stage_learning_rate, "precision": precision,
              "prefix_bank_bytes": sum(Path(f).stat().st_size for f in prefix.files), "activation_shape": list(shape)}
    if chosen == 0:
        return StageBanks(frozen_bank, pooled_pairs(frozen, holdout, precision), holdout.image_labels, None, None,
                          report, TunedFeatures(extractor, frozen, precision))
    fold_of, fold_banks, suffix = tuned_model(args, model, depth, shape, prefix, frozen_bank, final, precision,
                                              groups, accelerator, checkpoints)
    report["fold_tunings"] = 0 if fold_of is None else int(fold_of.max()) + 1
    return StageBanks(tuned_bank, pooled_pairs(suffix, holdout, precision), holdout.image_labels, fold_of, fold_banks,
                      report, TunedFeatures(extractor, suffix, precision))


def tuned_model(args, model: nn.Module, depth: int, shape: tuple[int, ...], prefix: FeatureBank,
                frozen_bank: FeatureBank, final, precision: str, groups: np.ndarray, accelerator,
                checkpoints: Path) -> tuple[np.ndarray | None, list[FeatureBank] | None, Suffix]:
    """The fold tunings' banks, then the model's own stages set to the ``final`` tuning: (folds, banks, suffix)."""
    # The folds first: each starts, as the final tuning did, from the frozen weights the model still holds.
    fold_of = cross_fit_folds(prefix.image_labels, groups, args.seed, STAGE_FOLDS)  # also the out-of-fold heads' folds
    fold_banks = None if fold_of is None else [
        fold_bank(fold, fold_of, model, depth, shape, prefix, frozen_bank, precision, accelerator, args, checkpoints)
        for fold in range(int(fold_of.max()) + 1)]
    return fold_of, fold_banks, load_suffix(model, depth, shape, final.state)


def without_holdout(args, model: nn.Module, depth: int, shape: tuple[int, ...], prefix: FeatureBank,
                    frozen_bank: FeatureBank, extractor, precision: str, groups: np.ndarray, accelerator,
                    checkpoints: Path) -> StageBanks:
    """A small folder with no holdout: ``auto`` has nothing to judge a tuning by and keeps the backbone frozen; an
    explicit depth is tuned as asked (no holdout figures), with its fold tunings."""
    empty = torch.empty(2, 0, frozen_bank.dim)
    report = {"requested": args.unfreeze_last_stages, "holdout_predictions": 0, "precision": precision,
              "stage_learning_rate": args.stage_learning_rate, "activation_shape": list(shape)}
    if args.unfreeze_last_stages == "auto":
        return StageBanks(frozen_bank, empty, torch.empty(0, dtype=torch.long), None, None,
                          {**report, "chosen": 0, "depth_tried": 0},
                          TunedFeatures(extractor, Suffix(model, depth, shape), precision))
    every_row = torch.arange(len(prefix))
    probe = fit_plain_head(model.get_classifier(), frozen_bank, every_row, accelerator, args, seed=args.seed)
    final = tune_stages(model, depth, shape, probe, prefix, every_row, None, args.stage_epochs, args, args.seed,
                        checkpoints / "stages" / f"depth_{depth}.safetensors", precision)
    tuned_bank = pooled_bank(load_suffix(model, depth, shape, final.state, as_copy=True), prefix,
                             checkpoints / f"pooled_depth_{depth}", accelerator, precision)
    fold_of, fold_banks, suffix = tuned_model(args, model, depth, shape, prefix, frozen_bank, final, precision,
                                              groups, accelerator, checkpoints)
    report.update(chosen=depth, depth_tried=depth, tuned=final.report,
                  fold_tunings=0 if fold_of is None else int(fold_of.max()) + 1)
    return StageBanks(tuned_bank, empty, torch.empty(0, dtype=torch.long), fold_of, fold_banks, report,
                      TunedFeatures(extractor, suffix, precision))


def fold_bank(fold: int, fold_of: np.ndarray, model: nn.Module, depth: int, shape: tuple[int, ...],
              prefix: FeatureBank, frozen_bank: FeatureBank, precision: str, accelerator, args,
              checkpoints: Path) -> FeatureBank:
    """The pooled bank of stages tuned, with the final tuning's recipe, on every fold but ``fold``."""
    image_of_row = torch.arange(len(prefix)) % prefix.images
    rows = (~torch.from_numpy(fold_of == fold)[image_of_row]).nonzero().squeeze(1)
    seed = args.seed * 100 + fold
    probe = fit_plain_head(model.get_classifier(), frozen_bank, rows, accelerator, args, seed=seed)
    tuned = tune_stages(model, depth, shape, probe, prefix, rows, None, args.stage_epochs, args, seed,
                        checkpoints / "stages" / f"depth_{depth}_fold_{fold}.safetensors", precision)
    suffix = load_suffix(model, depth, shape, tuned.state, as_copy=True)
    return pooled_bank(suffix, prefix, checkpoints / f"pooled_depth_{depth}_fold_{fold}", accelerator, precision)
