"""Train a new head on a frozen timm backbone with accelerate.

    python -m training.train --dataset_id you/leaves --model_id you/leaves-classifier --push_to_hub \
        --backbone hf-hub:timm/tf_efficientnet_lite0.in1k --epochs 10

``train()`` is the whole recipe, top-down; each step is one call into ``pipeline/``. Several processes
(``torchrun``/``accelerate launch``) shard both the backbone passes and the head batches.

``release`` is the one path from arguments to a published model (train, ONNX behind its parity gate,
the heatmaps' faithfulness, the card, one commit to main or a pull request) that ``--push_to_hub``,
``training.demo`` and ``training.retrain`` all take, so every pushed model has the same files and card.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed
from huggingface_hub import CommitInfo

from space.image_io import to_rgb

from .cli import parse
from .faithfulness import FaithfulnessArguments
from .faithfulness import measure as measure_faithfulness
from .pipeline.data.provenance import dataset_commit
from .pipeline.data.splits import holdout_minimum, load_splits, training_data
from .pipeline.evaluate.metrics import evaluate_validation
from .pipeline.export.onnx_export import export_and_check
from .pipeline.export.outputs import prepare_output_dir, save_run
from .pipeline.export.results import HeadFacts, Results, assemble
from .pipeline.export.runinfo import peak_rss_mib, run_info
from .pipeline.features.extract import extract_features, head_accelerator, load_backbone
from .pipeline.features.extractor import keep_freed_memory
from .pipeline.features.model import set_cam_method
from .pipeline.features.tuning import tuning_hint
from .pipeline.head.converged import compete
from .pipeline.head.linear import best_head, cross_fit_folds, out_of_fold_logits, selection_out_of_fold
from .pipeline.head.mislabels import suspects_and_rows
from .pipeline.trust.fit import OutOfFoldScores, calibrate, fit_ood
from .pipeline.trust.ood_set import describe
from .publishing.model_card import push_model
from .publishing.visibility import check_images_may_go
from .train_arguments import DEPRECATED, TrainArguments


def pinned(args: TrainArguments) -> TrainArguments:
    """``args`` with the dataset's revision resolved to the commit it is at now (a folder has none)."""
    return replace(args, dataset_revision=dataset_commit(args.dataset_id, args.dataset_revision))


def train(args: TrainArguments) -> Results:
    """The recipe, top-down: data -> backbone features -> head -> trust -> evaluation -> the saved model."""
    args = pinned(args)  # every later read of the dataset sees this commit
    recipe = args.recipe()
    started = time.time()
    keep_freed_memory()
    output_dir = prepare_output_dir(recipe.output_dir, resume=recipe.features.resume)
    checkpoints = output_dir / "checkpoints"
    set_seed(recipe.data.seed)
    # 1. Data: validation as published, a holdout from train, any accepted corrections.
    data = training_data(recipe.data)
    classes = len(data.class_names)
    # 2. Backbone features, once per image and view (after tuning the last stages, if asked).
    features_started = time.time()  # the runtime probe belongs to the feature passes' time
    backbone = load_backbone(recipe, classes=classes, checkpoints=checkpoints)
    accelerator = head_accelerator(backbone, gradient_accumulation_steps=recipe.head.gradient_accumulation_steps)
    x = extract_features(data=data, backbone=backbone, recipe=recipe, accelerator=accelerator,
                         checkpoints=checkpoints, started=features_started)
    # 3. Head: out-of-fold twins (for the suspects, calibration and "neither"), then the head itself, its epoch
    #    chosen on held-out train, and on a small folder a converged rival.
    new_head = backbone.model.get_classifier()
    fold_of = x.fold_of if x.fold_banks else cross_fit_folds(x.bank.image_labels, data.groups, recipe.head.seed)
    held_out = out_of_fold_logits(new_head, x.bank, accelerator, recipe.head, fold_of=fold_of, fold_banks=x.fold_banks)
    mislabels, rows = suspects_and_rows(held_out, data, x.bank, x.validation, accelerator, recipe.head, new_head)
    linear, state = best_head(new_head, x.bank, rows, x.holdout, accelerator, recipe.head, output_dir,
                              out_of_fold=selection_out_of_fold(held_out, x.holdout, classes))
    choice, fold_logits = compete(linear, x.bank, rows, held_out, held_out.logits(state["best_epoch"]),
                                  recipe.head.class_weight, x.fold_banks)
    scores = OutOfFoldScores(fold_of, held_out.rows, held_out.labels, fold_logits, images=x.bank.images)
    # 4. Trust, from train only: the temperature, then the "neither" score and its two limits.
    calibration = calibrate(linear, holdout=x.holdout, out_of_fold=scores, validation=x.validation,
                            output_dir=output_dir, seed=recipe.trust.seed)
    ood, ood_config, ood_statistics = fit_ood(linear, x.bank, scores.scaled(calibration["temperature"]), x.holdout,
                                              x.validation, x.ood, [item.part for item in x.ood_set], recipe.trust)
    ood["ood_set"] = describe(x.ood_set)
    # 5. Evaluation on validation (measured only), and the run's record.
    evaluated = evaluate_validation(linear, x.validation.pairs, x.validation.labels, data.validation,
                                    recipe.trust.flip_tta, data.class_names)
    head = HeadFacts.of(state, bank_size=len(rows), choice=asdict(choice))
    run = {"seconds": round(time.time() - started, 1), **x.run, "peak_rss_mib": peak_rss_mib(),
           "num_processes": accelerator.num_processes, "data_config": plain_config(backbone.config)}
    results = assemble(evaluated, (calibration, ood), mislabels, data, head, run,
                       holdout_minimum(recipe.data.holdout_fraction))
    if hint := tuning_hint(recipe.stages.requested, state["best_holdout"]):
        accelerator.print(hint)
    # 6. The model in timm's Hub layout (safetensors), its "neither" statistics and the evidence.
    if accelerator.is_main_process:
        save_run(backbone.model, results, {"args": asdict(args), **run_info()}, data, output_dir, backbone.config,
                 (ood_config, ood_statistics))
    return results


def plain_config(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


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
    set_cam_method(Path(args.output_dir) / "model", faithfulness["best"])  # the Space's default heatmap
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
