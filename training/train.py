"""Train a new head on a frozen timm backbone with accelerate.

    python -m training.train --dataset_id you/leaves --model_id you/leaves-classifier --push_to_hub \
        --backbone hf-hub:timm/tf_efficientnet_lite0.in1k --epochs 10

The two jobs of ``train()``:
1. ``extract_features``: load the dataset (Hub id or folder), hold out a stratified slice of train for
   model selection, run the frozen backbone (in the precision measured fastest, compiled when it
   pays: extractor.py) over the plain and ``augmented_views`` augmented passes of train, writing the
   features to disk (features.py), and over holdout, validation and the OOD set. With
   ``--unfreeze_last_stages 1|2|auto`` the bank holds the frozen part's activations instead, the last
   stage(s) are tuned on them, and the pooled bank comes from the tuned stages (pipeline/unfreeze.py).
2. ``fit_head``: out-of-fold heads (calibration, mislabel finder), the head for ``epochs`` over the
   bank with the best epoch picked on the holdout, temperature, the "neither" score, validation
   (all of it and its leak-free part), then ``model/`` (timm Hub layout, safetensors),
   ``results.json``, ``run.json`` and the plots.

Several processes (``torchrun``/``accelerate launch``) shard both the backbone passes and the head batches.

``release`` is the one path from arguments to a published model — train, export ONNX behind its
parity gate (pipeline/onnx_export.py), measure the heatmaps' faithfulness (``cam_method``), write the
card, push (to main or as a pull request) — that
``--push_to_hub``, ``training.demo`` and ``training.retrain`` all take, so every pushed model has the
same files and card sections.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import AutocastKwargs, set_seed
from huggingface_hub import CommitInfo
from safetensors.torch import save_file

from space.image_io import to_rgb

from .cli import parse
from .faithfulness import FaithfulnessArguments
from .faithfulness import measure as measure_faithfulness
from .pipeline.augment import build_transform
from .pipeline.converged import compete
from .pipeline.coverage import unmeasured
from .pipeline.data import TrainingData, holdout_minimum, load_splits, make_loader, training_data
from .pipeline.extractor import compile_pays, image_features, keep_freed_memory
from .pipeline.features import FeatureBank, feature_passes, split_features, write_bank
from .pipeline.head import best_head, cross_fit_folds, out_of_fold_logits
from .pipeline.metrics import class_balance, evaluate_validation, save_confusion_matrix, save_per_class
from .pipeline.mislabels import (
    compare_dropping,
    find_suspects,
    kept_rows,
    out_of_fold_probabilities,
    pictured,
    save_thumbnails,
)
from .pipeline.model import build_model, data_config, save_model
from .pipeline.onnx_export import export_and_check
from .pipeline.ood_set import OODImage, describe, ood_images
from .pipeline.provenance import dataset_commit
from .pipeline.runinfo import peak_rss_mib, run_info
from .pipeline.runtime import BACKBONE_ONNX, backbone_extractor, choose_runtime_once, process_state, run_accelerator
from .pipeline.stages import tuning_hint
from .pipeline.trust import calibrate, fit_ood
from .pipeline.unfreeze import stage_banks
from .publishing.model_card import push_model
from .publishing.visibility import check_images_may_go
from .train_arguments import DEPRECATED, TrainArguments


@dataclass
class Extracted:
    """Everything the head needs from the frozen backbone, and how it was computed."""

    model: torch.nn.Module
    config: dict
    bank: FeatureBank
    holdout: torch.Tensor  # (2, N, D): the image and its mirror
    holdout_labels: torch.Tensor
    validation: torch.Tensor  # (2, N, D)
    validation_labels: torch.Tensor
    ood: torch.Tensor
    ood_set: list[OODImage]
    run: dict  # precision, compile and timing facts for results.json
    fold_banks: list[FeatureBank] | None = None  # tuned stages: each fold's bank (pipeline/unfreeze.py)
    fold_of: np.ndarray | None = None  # tuned stages: the folds the fold banks left out


def pinned(args: TrainArguments) -> TrainArguments:
    """``args`` with the dataset's revision resolved to the commit it is at now (a folder has none)."""
    return replace(args, dataset_revision=dataset_commit(args.dataset_id, args.dataset_revision))


def train(args: TrainArguments) -> dict:
    args = pinned(args)  # every later read of the dataset sees this commit
    started = time.time()
    keep_freed_memory()
    state = process_state()
    output_dir = prepare_output_dir(args, state)
    set_seed(args.seed)
    data = training_data(args)
    features_started = time.time()  # the probe belongs to the feature passes' time
    model = build_model(args.backbone, len(data.class_names), pretrained=args.pretrained, freeze=True)
    model.eval().to(state.device)  # frozen: BatchNorm stays in eval
    tuning = args.unfreeze_last_stages != "0"
    config = data_config(model, crop_pct=args.crop_pct)
    choice = choose_runtime_once("torch" if tuning else args.runtime, args.mixed_precision, model,
                                 config["input_size"], state, output_dir / "checkpoints", args.resume)
    # The Accelerator gets the chosen precision (a tuning's steps autocast to it); the head trains in fp32: on
    # cached fp32 features a linear layer gains nothing from 16 bits, and its probabilities are calibrated for
    # the fp32 model users load. split_batches: N processes share each batch, so 1 or N processes give one head.
    accelerator = run_accelerator(choice[1], gradient_accumulation_steps=args.gradient_accumulation_steps,
                                  dataloader_config=DataLoaderConfiguration(split_batches=True),
                                  kwargs_handlers=[AutocastKwargs(enabled=False)])
    extracted = extract_features(args, data, model, config, choice, accelerator, output_dir / "checkpoints",
                                 features_started)
    return fit_head(args, data, extracted, accelerator, output_dir, started)


def prepare_output_dir(args: TrainArguments, accelerator: PartialState) -> Path:
    output_dir = Path(args.output_dir)
    if not args.resume and accelerator.is_main_process:  # a fresh run never mixes with an old one's checkpoints
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
        for stale in ("metrics.jsonl", "faithfulness.json", "faithfulness.png", "suspects.png"):  # an older run's
            (output_dir / stale).unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return output_dir


def extract_features(args: TrainArguments, data: TrainingData, model: torch.nn.Module, config: dict,
                     choice: tuple[str, str, dict], accelerator: Accelerator, checkpoints: Path,
                     started: float) -> Extracted:
    """Job 1: the frozen backbone over every image and view, once (train's views to disk), in the ``choice``
    of runtime and precision (measured from ``started``)."""
    runtime, precision, probe = choice
    tuning = args.unfreeze_last_stages != "0"
    views = feature_passes(args.augmentation, args.augmented_views)
    images = len(data.train) * (views + 1) + 2 * (len(data.holdout) + len(data.validation))  # with mirrors
    compiled = runtime == "torch" and compile_pays(args.torch_compile, images)
    loaders = [make_loader(ds, "none", config, False, args.batch_size, num_workers=args.num_workers)
               for ds in (data.train, data.holdout, data.validation)]
    # Not shuffled: row r of every view is image r, which the out-of-fold heads rely on.
    augmented = make_loader(data.train, args.augmentation, config, True, args.batch_size, shuffle=False,
                            num_workers=args.num_workers)
    plain_loader, holdout_loader, validation_loader, augmented = accelerator.prepare(*loaders, augmented)
    ood_set = ood_images(seed=0) + [OODImage(f"feedback_{i}", "feedback", "selection", image)
                                    for i, image in enumerate(data.neither)]  # visitors' "neither": choose the method
    evaluated = build_transform("none", config, train=False)
    stages = None
    if tuning:  # the model's last stage(s) change here; the splits below then go through the tuned model
        selection = torch.stack([evaluated(item.image) for item in ood_set if item.part == "selection"])
        stages = stage_banks(args, model, config["input_size"], precision, compiled,
                             (plain_loader, augmented, holdout_loader), data.groups, selection, accelerator,
                             checkpoints)
    if stages:
        extractor, bank, holdout, holdout_labels = stages.features, stages.bank, stages.holdout, stages.holdout_labels
    else:
        extractor = backbone_extractor(runtime, precision, model, config["input_size"], accelerator,
                                       checkpoints / BACKBONE_ONNX, compiled)
        bank = write_bank(extractor, plain_loader, augmented, accelerator, views, args.seed, checkpoints / "bank",
                          resume=args.resume)
        holdout, holdout_labels = split_features(extractor, holdout_loader, accelerator, flip=True, desc="holdout")
        holdout = holdout if len(holdout_labels) else torch.empty(2, 0, bank.dim)  # no holdout: a small folder
    validation, validation_labels = split_features(extractor, validation_loader, accelerator, flip=True,
                                                   desc="validation")
    ood = image_features(extractor, [item.image for item in ood_set], evaluated, args.batch_size)
    run = {"runtime": runtime, "mixed_precision": precision, "precision_probe_images_per_s": probe,
           "torch_compile": compiled, "feature_seconds": round(time.time() - started, 1),
           "stages": stages.report if stages else {"requested": "0", "chosen": 0}}
    return Extracted(model, config, bank, holdout, holdout_labels, validation, validation_labels, ood, ood_set, run,
                     fold_banks=stages.fold_banks if stages else None, fold_of=stages.fold_of if stages else None)


def fit_head(args: TrainArguments, data: TrainingData, x: Extracted, accelerator: Accelerator, output_dir: Path,
             started: float) -> dict:
    """Job 2: every head on the cached features, then calibration, "neither", validation and the saved model."""
    # Every training image scored by heads that never saw it (nor its near duplicates): for calibration, the
    # mislabel finder and the "neither" limits.
    fold_of = x.fold_of if x.fold_banks else cross_fit_folds(x.bank.image_labels, data.groups, args.seed)
    held_out = out_of_fold_logits(x.model.get_classifier(), x.bank, accelerator, args, fold_of, x.fold_banks)
    held_images = held_out.rows % x.bank.images
    mislabels = find_suspects(out_of_fold_probabilities(held_out.logits(), held_images, len(data.train)),
                              np.asarray(data.train["label"]), data.files, data.class_names,
                              scored=held_images.unique().numpy())
    rows = torch.arange(len(x.bank))
    if args.drop_suspects:
        rows = kept_rows(mislabels["flagged_indices"], x.bank)
        mislabels["comparison"] = compare_dropping(x.model.get_classifier(), x.bank, rows, x.validation[0],
                                                   x.validation_labels, accelerator, args)
    out_of_fold = selection_out_of_fold(held_out, x.holdout_labels, len(data.class_names))
    linear, state = best_head(x.model.get_classifier(), x.bank, x.holdout, x.holdout_labels, rows, accelerator,
                              args, output_dir, out_of_fold)
    # On a small folder a converged logistic regression competes with it, judged out of fold (converged.py).
    head_choice, fold_logits = compete(linear, x.bank, rows, held_out, held_out.logits(state["best_epoch"]),
                                       args.class_weight, x.fold_banks)
    calibration = calibrate(linear, x.holdout, x.holdout_labels, fold_logits, held_out.labels,
                            held_images, x.validation[0], x.validation_labels, output_dir, args.seed)
    ood_report, ood_config, ood_statistics = fit_ood(
        linear, calibration["temperature"], x.bank, fold_of, fold_logits, held_out.rows, x.holdout.flatten(0, 1),
        x.validation[0], x.validation_labels, x.ood, [item.part for item in x.ood_set], len(data.class_names),
        args.seed, (args.unsure_rate, args.neither_rate))
    ood_report["ood_set"] = describe(x.ood_set)
    results = evaluate_validation(linear, x.validation, x.validation_labels, data.validation, args.flip_tta,
                                  data.class_names)
    results.update(calibration=calibration, ood=ood_report, mislabels=mislabels, feedback=data.feedback,
                   class_balance=class_balance(data.train["label"], data.validation["label"], data.class_names))
    results.update(best_epoch=state["best_epoch"], holdout_accuracy=state["best_holdout"],
                   holdout_loss=state["best_holdout_loss"],
                   train_images=len(data.train), holdout_images=len(data.holdout), bank_size=len(rows),
                   seconds=round(time.time() - started, 1), **x.run, peak_rss_mib=peak_rss_mib(),
                   num_processes=accelerator.num_processes,
                   data_config={k: list(v) if isinstance(v, tuple) else v for k, v in x.config.items()})
    results["data"], results["head"] = asdict(data.record), asdict(head_choice)
    results.update(selected_on=state.get("selected_on", "holdout"), holdout_missing=data.holdout_missing,
                   holdout_minimum=holdout_minimum(args.holdout_fraction))
    results["not_measured"] = unmeasured(results)
    hint = tuning_hint(args.unfreeze_last_stages, state["best_holdout"])
    if hint:
        accelerator.print(hint)
    if accelerator.is_main_process:
        extra = {"ood": ood_config, "calibration": {"temperature": calibration["temperature"],
                                                    "fitted_on": calibration["fitted_on"], "folded_into_head": True}}
        save_outputs(x.model, results, args, data.class_names, output_dir, x.config, extra, ood_statistics)
        shown = pictured(mislabels["suspects"])  # never a visitor's correction: those are listed by row only
        save_thumbnails([data.train[s["index"]]["image"] for s in shown], shown, output_dir / "suspects.png")
    return results


HOLDOUT_ALONE_PER_CLASS = 5  # holdout images per class (each class present) above which it picks the epoch alone


def selection_out_of_fold(held_out, holdout_labels: torch.Tensor, classes: int) -> tuple[list[float], int] | None:
    """The out-of-fold losses the epoch is also chosen on, or None where the holdout can choose alone: the fold
    heads see (k-1)/k of train and over-fit sooner, so they pull the choice early; a holdout of a few images per
    class (a small folder) is noisier still, and picked the epoch-0 head on 10 glyphs."""
    counts = torch.bincount(holdout_labels, minlength=classes)
    if (counts.min() > 0 and len(holdout_labels) >= HOLDOUT_ALONE_PER_CLASS * classes) or not len(held_out.rows):
        return None
    return held_out.losses(), len(held_out.rows)


def save_outputs(model, results: dict, args: TrainArguments, class_names: list[str], output_dir: Path,
                 config: dict, extra_config: dict, ood_statistics: dict) -> None:
    save_model(model, class_names, output_dir / "model", config, extra_config)
    save_file(ood_statistics, output_dir / "model" / "ood.safetensors")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    (output_dir / "run.json").write_text(json.dumps({"args": asdict(args), **run_info()}, indent=2))
    save_per_class(results["validation"], results["class_balance"]["train"], output_dir / "per_class.csv")
    (output_dir / "confusion_matrix.png").unlink(missing_ok=True)
    if results["validation"]["confusion_matrix"] is not None:  # beyond DENSE_MATRIX_MAX classes, a picture says nothing
        save_confusion_matrix(results["validation"]["confusion_matrix"], class_names,
                              output_dir / "confusion_matrix.png",
                              f"validation, accuracy {results['validation']['accuracy']:.3f}")


@dataclass
class Released:
    results: dict
    faithfulness: dict | None  # None in the processes other than the main one
    commit: CommitInfo | None  # None when nothing was pushed (not the main process)


def release(args: TrainArguments, study_dir: Path | None = None, create_pr: bool = False,
            describe: Callable[[dict], tuple[str | None, str | None]] | None = None) -> Released:
    """Train with ``args``, measure the heatmaps' faithfulness and push to ``args.model_id`` with the card.

    ``describe(results)`` gives the commit message and description (the gate's table for a pull request).
    Under several processes only the main one measures and pushes.
    """
    args = pinned(args)  # training, the ONNX check, faithfulness and the card read the same commit
    if args.push_to_hub and args.model_id:  # said before training, not after (push_model checks again)
        check_images_may_go(args.dataset_id, args.model_id, "model", args.private,
                            "the card's suspects and heatmaps", args.allow_private_images)
    results = train(args)
    if not PartialState().is_main_process:
        return Released(results, None, None)
    return publish_run(args, results, study_dir, create_pr, describe)


def publish_run(args: TrainArguments, results: dict, study_dir: Path | None = None, create_pr: bool = False,
                describe: Callable[[dict], tuple[str | None, str | None]] | None = None) -> Released:
    """A trained run (``args.output_dir``) to the Hub: ONNX behind its parity gate (a failure pushes nothing),
    faithfulness, the card, one commit."""
    validation = load_splits(args.dataset_id, args.validation_fraction, args.seed, args.dataset_revision)["validation"]
    export_and_check(Path(args.output_dir), (to_rgb(row["image"]) for row in validation),
                     f"validation (all {len(validation)} images)")
    faithfulness = measure_faithfulness(FaithfulnessArguments(output_dir=args.output_dir, dataset_id=args.dataset_id,
                                                              images=args.faithfulness_images))
    message, description = describe(results) if describe else (None, None)
    commit = push_model(Path(args.output_dir), args.model_id, args, args.private, study_dir=study_dir,
                        message=message, create_pr=create_pr, description=description)
    return Released(results, faithfulness, commit)


def main() -> None:
    args = parse(TrainArguments, __doc__, deprecated=DEPRECATED)
    if args.push_to_hub:
        released = release(args, study_dir=Path(args.study_dir))
        results = released.results
    else:
        results, released = train(args), None
    if not PartialState().is_main_process:  # one report, not one per process
        return
    full, clean = results["validation"], results["validation_leak_free"]
    print(f"validation accuracy {full['accuracy']:.4f} (all {full['n']}), {clean['accuracy']:.4f} "
          f"(leak-free {clean['n']}); best head epoch {results['best_epoch']}; {results['seconds']} s")
    if args.unfreeze_last_stages != "0" and results["stages"]["holdout_predictions"]:
        stages = results["stages"]
        print(f"last stages tuned: {stages['chosen']} (asked: {stages['requested']}; holdout accuracy frozen "
              f"{stages['frozen']['holdout_accuracy']:.3f}, last {stages['depth_tried']} tuned "
              f"{stages['tuned']['last']['holdout_accuracy']:.3f})")
    if released and released.commit:
        print(f"pushed model {args.model_id}: {released.commit.commit_url}")


if __name__ == "__main__":
    from .cli import run

    run(main)
