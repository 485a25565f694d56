"""The backbone step: the frozen timm model, the runtime measured fastest here, and its features of every split.

Each image and view goes through the backbone once: train's views to disk (bank.py), the small splits and
the OOD set in memory. With stages to tune, the bank holds the frozen part's activations instead and the pooled
features come from the tuned stages (tuned_banks.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import AutocastKwargs

from ..data.augment import build_transform
from ..data.splits import TrainingData, make_loader
from ..recipe import Recipe
from ..trust.ood_set import OODImage, ood_images
from .bank import FeatureBank, SplitFeatures, feature_passes, paired_features, write_bank
from .extractor import compile_pays, image_features
from .model import build_model, data_config
from .runtime import BACKBONE_ONNX, backbone_extractor, choose_runtime_once, process_state, run_accelerator
from .tuned_banks import StageInputs, stage_banks
from .tuning import TuningRecipe


@dataclass
class Backbone:
    """The frozen model with its new (untrained) head, its preprocessing, and how its passes run here."""

    model: torch.nn.Module
    config: dict  # timm's data config: input size, mean, std, crop
    runtime: str  # torch or onnxruntime
    precision: str  # no, bf16 or fp16
    probe: dict  # the runtime probe's images per second


@dataclass
class Extracted:
    """Everything the head needs from the backbone, and how it was computed."""

    bank: FeatureBank  # train, every view, on disk
    holdout: SplitFeatures
    validation: SplitFeatures
    ood: torch.Tensor  # the OOD set's features (N, D)
    ood_set: list[OODImage]
    run: dict  # precision, compile and timing facts for results.json
    fold_banks: list[FeatureBank] | None = None  # tuned stages: each fold's bank (tuned_banks.py)
    fold_of: np.ndarray | None = None  # tuned stages: the folds the fold banks left out


def load_backbone(recipe: Recipe, classes: int, checkpoints: Path) -> Backbone:
    """The frozen backbone (BatchNorm in eval) with a head for ``classes``, and the runtime measured fastest."""
    state = process_state()
    model = build_model(recipe.backbone, classes, pretrained=recipe.pretrained, freeze=True)
    model.eval().to(state.device)
    config = data_config(model, crop_pct=recipe.crop_pct)
    features = recipe.features
    runtime = "torch" if recipe.stages.tuning else features.runtime  # tuning runs the frozen part with torch
    choice = choose_runtime_once(runtime, features.mixed_precision, model, config["input_size"], state, checkpoints,
                                 features.resume)
    return Backbone(model, config, *choice)


def head_accelerator(backbone: Backbone, gradient_accumulation_steps: int) -> Accelerator:
    """The run's Accelerator, in the backbone's measured precision (a stage tuning's steps autocast to it); the head
    trains in fp32: on cached fp32 features a linear layer gains nothing from 16 bits, and its probabilities are
    calibrated for the fp32 model users load. split_batches: N processes share each batch, so 1 or N processes
    give one head."""
    return run_accelerator(backbone.precision, gradient_accumulation_steps=gradient_accumulation_steps,
                           dataloader_config=DataLoaderConfiguration(split_batches=True),
                           kwargs_handlers=[AutocastKwargs(enabled=False)])


def extract_features(data: TrainingData, backbone: Backbone, recipe: Recipe, accelerator: Accelerator,
                     checkpoints: Path, started: float) -> Extracted:
    """The backbone over every image and view, once (train's views to disk); timed from ``started``."""
    features, config = recipe.features, backbone.config
    views = feature_passes(features.augmentation, features.augmented_views)
    images = len(data.train) * (views + 1) + 2 * (len(data.holdout) + len(data.validation))  # with mirrors
    compiled = backbone.runtime == "torch" and compile_pays(features.torch_compile, images)
    loaders = [make_loader(ds, "none", config, False, features.batch_size, num_workers=features.num_workers)
               for ds in (data.train, data.holdout, data.validation)]
    # Not shuffled: row r of every view is image r, which the out-of-fold heads rely on.
    augmented = make_loader(data.train, features.augmentation, config, True, features.batch_size, shuffle=False,
                            num_workers=features.num_workers)
    plain, holdout_loader, validation_loader, augmented = accelerator.prepare(*loaders, augmented)
    ood_set = ood_images(seed=0) + [OODImage(f"feedback_{i}", "feedback", "selection", image)
                                    for i, image in enumerate(data.neither)]  # visitors' "neither": choose the method
    evaluated = build_transform("none", config, train=False)
    stages = None
    if recipe.stages.tuning:  # the model's last stage(s) change here; the splits below then go through them
        selection = torch.stack([evaluated(item.image) for item in ood_set if item.part == "selection"])
        stages = stage_banks(backbone.model, config["input_size"],
                             StageInputs((plain, augmented, holdout_loader), data.groups, selection),
                             TuningRecipe(recipe.stages, recipe.head, backbone.precision), features, compiled,
                             accelerator, checkpoints)
        extractor, bank, holdout = stages.features, stages.bank, stages.holdout
    else:
        extractor = backbone_extractor(backbone.runtime, backbone.precision, backbone.model, config["input_size"],
                                       accelerator, checkpoints / BACKBONE_ONNX, compiled)
        bank = write_bank(extractor, (plain, augmented), accelerator, views, features.seed, checkpoints / "bank",
                          resume=features.resume)
        holdout = paired_features(extractor, holdout_loader, accelerator, "holdout", width=bank.dim)
    validation = paired_features(extractor, validation_loader, accelerator, "validation")
    ood = image_features(extractor, [item.image for item in ood_set], evaluated, features.batch_size)
    run = {"runtime": backbone.runtime, "mixed_precision": backbone.precision,
           "precision_probe_images_per_s": backbone.probe, "torch_compile": compiled,
           "feature_seconds": round(time.time() - started, 1),
           "stages": stages.report if stages else {"requested": "0", "chosen": 0}}
    return Extracted(bank, holdout, validation, ood, ood_set, run, fold_banks=stages.fold_banks if stages else None,
                     fold_of=stages.fold_of if stages else None)
