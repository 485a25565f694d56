"""Train a new head on a frozen timm backbone with accelerate.

    python -m training.train --dataset demo/alien-vs-predator --backbone hf-hub:timm/tf_efficientnet_lite0.in1k

Flow: load the dataset (Hub id or folder) -> hold out a stratified slice of train for model
selection -> build the frozen model -> run the backbone (``torch.inference_mode``, channels_last, in
the precision measured fastest, compiled when it pays: extractor.py) over ``augmented_views``
on-the-fly augmented passes of train, caching the pooled features in memory -> train the head for
``epochs`` over that bank -> pick the best epoch on the holdout -> evaluate on validation (all of it
and its leak-free part) -> save ``model/`` (timm Hub layout, safetensors), ``results.json`` and a
confusion matrix.

Why a feature bank: the backbone is frozen, so each augmented pass costs one forward and the head
then needs many cheap steps; a pass is computed once instead of once per head epoch. Several
processes (``torchrun``/``accelerate launch``) shard both the backbone passes and the head batches.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .augment import build_transform
from .corrections import take_in
from .data import holdout_split, load_splits, make_loader
from .extractor import (
    PooledFeatures,
    choose_precision,
    compile_pays,
    feature_extractor,
    image_features,
    keep_freed_memory,
)
from .head import StandardizedHead, head_optimizer, out_of_fold_logits, predict_proba, train_one_epoch
from .metrics import classification_report, save_confusion_matrix
from .mislabels import compare_dropping, find_suspects, flagged_rows, out_of_fold_probabilities, save_thumbnails
from .model import DEFAULT_BACKBONE, build_model, data_config
from .ood_set import OODImage, describe, ood_images
from .runinfo import peak_rss_mib, run_info
from .trust import calibrate, fit_ood


@dataclass
class TrainArguments:
    dataset: str = field(default="demo/alien-vs-predator", metadata={"help": "Hub dataset id or local folder"})
    backbone: str = field(default=DEFAULT_BACKBONE, metadata={"help": "timm model name or hf-hub: id"})
    pretrained: bool = field(default=True, metadata={"help": "load the backbone's pretrained weights"})
    augmentation: str = field(default="base", metadata={"help": "none | base | grayscale | noise"})
    augmented_views: int = field(default=6, metadata={"help": "augmented passes over train through the backbone"})
    epochs: int = field(default=10, metadata={"help": "head epochs over the cached features"})
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    # The images are small (short side <= 225 px) and the creature fills the frame: a centre crop of
    # 0.875 cuts it off. 1.0 measured 0.98 vs 0.955 on validation (lite0, seed 42); saved in the config.
    crop_pct: float | None = field(default=1.0, metadata={"help": "centre-crop fraction (None: the backbone's "
                                                                    "pretrained_cfg); saved in the model's config"})
    seed: int = 42
    holdout_fraction: float = field(default=0.1, metadata={"help": "stratified slice of train for model selection"})
    flip_tta: bool = field(default=True, metadata={
        "help": "also report accuracy with flip test-time augmentation, as its own row (the headline never uses "
                "it: no user path applies it)"})
    gradient_accumulation_steps: int = 1
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (the faster of bf16 and fp32, measured here) | bf16 | fp16 | no"})
    torch_compile: str = field(default="auto", metadata={
        "help": "compile the frozen backbone: auto (when it pays: a few thousand images) | yes | no"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only this many training images"})
    num_workers: int = 0
    output_dir: str = "outputs/train"
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    push_to_hub: str | None = field(default=None, metadata={"help": "model repo id to push to"})
    private: bool = False
    study_dir: str = field(default="outputs/study", metadata={"help": "training.study output to put in the card"})
    drop_suspects: bool = field(default=False, metadata={
        "help": "leave out the training images confident learning flags as mislabelled (the card then shows "
                "validation accuracy with and without them)"})
    feedback_dataset: str | None = field(default=None, metadata={
        "help": "the Space's corrections (dataset id): checked, de-duplicated, added to train only"})


@torch.inference_mode()
def backbone_features(backbone: PooledFeatures, loader, accelerator: Accelerator, flip: bool = False,
                      desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of a whole split, gathered across processes: (N, D) or (2, N, D) with its mirror."""
    features, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_main_process):
        pixels = batch["pixel_values"]
        out = [backbone(p) for p in ([pixels, pixels.flip(-1)] if flip else [pixels])]
        features.append(accelerator.gather_for_metrics(torch.stack(out, 1)))
        labels.append(accelerator.gather_for_metrics(batch["labels"]))
    stacked = torch.cat(features).transpose(0, 1)
    return (stacked if flip else stacked[0]).clone(), torch.cat(labels).clone()


def feature_passes(args: TrainArguments) -> int:
    """Backbone passes over train: the plain images (with their mirror), then the augmented views."""
    return 1 + (0 if args.augmentation == "none" else args.augmented_views)  # none: no randomness, one pass


def feature_bank(backbone, plain_loader, augmented_loader, accelerator, args,
                 checkpoint_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Train features: the images as evaluated and mirrored, then ``augmented_views`` augmented passes.

    Each pass is saved when done, so ``--resume`` skips it.
    """
    views = feature_passes(args)
    features, labels = [], []
    for view in range(views):
        path = checkpoint_dir / f"view_{view:03d}.safetensors"
        if args.resume and path.is_file():
            saved = load_file(path)
        else:
            set_seed(args.seed * 1000 + view)  # a view depends on (seed, view) only: resume is exact
            loader = plain_loader if view == 0 else augmented_loader
            x, y = backbone_features(backbone, loader, accelerator, flip=view == 0, desc=f"view {view + 1}/{views}")
            saved = {"features": x.flatten(0, 1) if view == 0 else x, "labels": y.repeat(2) if view == 0 else y}
            if accelerator.is_main_process:
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                save_file(saved, path)
            accelerator.wait_for_everyone()
        features.append(saved["features"])
        labels.append(saved["labels"])
    return torch.cat(features), torch.cat(labels)


def train(args: TrainArguments) -> dict:
    started = time.time()
    keep_freed_memory()
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps)
    output_dir, checkpoints = Path(args.output_dir), Path(args.output_dir) / "checkpoints"
    if not args.resume and accelerator.is_main_process:  # a fresh run never mixes with an old one's checkpoints
        shutil.rmtree(checkpoints, ignore_errors=True)
        for stale in ("metrics.jsonl", "faithfulness.json", "faithfulness.png", "suspects.png"):  # an older run's
            (output_dir / stale).unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(args.seed)
    dataset = load_splits(args.dataset)
    class_names = dataset["train"].features["label"].names
    train_split = dataset["train"]
    if args.max_train_samples:
        train_split = train_split.shuffle(seed=args.seed).select(range(min(args.max_train_samples, len(train_split))))
    train_split, holdout = holdout_split(train_split, args.holdout_fraction, args.seed)
    validation = dataset["validation"]
    files = (list(train_split["file"]) if "file" in train_split.column_names
             else [str(i) for i in range(len(train_split))])
    feedback, neither = None, []
    if args.feedback_dataset:  # after the holdout split: corrections join train only
        train_split, neither, feedback = take_in(args.feedback_dataset, train_split, validation)
        files += [f"feedback/{i}" for i in range(feedback["added_to_train"])]

    model = build_model(args.backbone, len(class_names), pretrained=args.pretrained, freeze=True)
    model.eval().to(accelerator.device)  # frozen: BatchNorm stays in eval
    config = data_config(model, crop_pct=args.crop_pct)
    precision, precision_probe = choose_precision(args.mixed_precision, model, config["input_size"], accelerator)
    backbone_images = len(train_split) * (feature_passes(args) + 1) + 2 * (len(holdout) + len(validation))  # mirrors
    compiled = compile_pays(args.torch_compile, backbone_images)
    extractor = feature_extractor(model, precision, compiled)
    loaders = [make_loader(ds, "none", config, False, args.batch_size, num_workers=args.num_workers)
               for ds in (train_split, holdout, validation)]
    # Not shuffled: row r of every view is image r % len(train_split), which the out-of-fold heads rely on.
    augmented = make_loader(train_split, args.augmentation, config, True, args.batch_size, shuffle=False,
                            num_workers=args.num_workers)
    plain_loader, holdout_loader, validation_loader, augmented = accelerator.prepare(*loaders, augmented)
    bank, bank_labels = feature_bank(extractor, plain_loader, augmented, accelerator, args, checkpoints)
    holdout_features, holdout_labels = backbone_features(extractor, holdout_loader, accelerator, flip=True)
    val_features, val_labels = backbone_features(extractor, validation_loader, accelerator, flip=True)
    ood_set = ood_images(seed=0) + [OODImage(f"feedback_{i}", "feedback", "selection", image)
                                    for i, image in enumerate(neither)]  # visitors' "neither": choose the method
    ood_features = image_features(extractor, [item.image for item in ood_set],
                                  build_transform("none", config, train=False), args.batch_size)
    del extractor
    extract_seconds = time.time() - started

    # Every training image scored by heads that never saw it: for calibration and the mislabel finder.
    plain = 2 * len(train_split)  # the bank starts with the un-augmented images and their mirrors
    fold_logits, fold_labels, fold_images = out_of_fold_logits(model.get_classifier(), bank, bank_labels,
                                                               len(train_split), 2, accelerator, args)
    mislabels = find_suspects(out_of_fold_probabilities(fold_logits, fold_images, len(train_split)),
                              np.asarray(train_split["label"]), files, class_names)
    plain_bank, plain_labels = bank[:plain], bank_labels[:plain]  # OOD statistics see every training image
    if args.drop_suspects:
        keep = ~flagged_rows(mislabels["flagged_indices"], len(train_split), len(bank))
        mislabels["comparison"] = compare_dropping(model.get_classifier(), bank, bank_labels, keep, val_features[0],
                                                   val_labels, accelerator, args)
        bank, bank_labels = bank[keep], bank_labels[keep]

    head = StandardizedHead(model.get_classifier(), bank.mean(0), bank.std(0) + 1e-6)
    bank_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(bank, bank_labels),
                                              batch_size=args.batch_size, shuffle=True)
    optimizer, scheduler = head_optimizer(head, len(bank_loader), args, args.gradient_accumulation_steps)
    head, optimizer, bank_loader, scheduler = accelerator.prepare(head, optimizer, bank_loader, scheduler)

    state = resume_state(accelerator, checkpoints) if args.resume else {"epoch": -1, "best_holdout": -1.0}
    for epoch in tqdm(range(state["epoch"] + 1, args.epochs), desc="head epochs",
                      disable=not accelerator.is_main_process):
        set_seed(args.seed + epoch)  # an epoch depends on (seed, epoch) only: resume is exact
        loss = train_one_epoch(head, bank_loader, optimizer, scheduler, accelerator, args)
        probs = predict_proba(accelerator.unwrap_model(head), holdout_features, tta=False)
        holdout_accuracy = (probs.argmax(-1) == holdout_labels).float().mean().item()
        state["epoch"] = epoch
        if holdout_accuracy >= state["best_holdout"]:  # selection on the holdout, never on validation; ties: later
            state.update(best_holdout=holdout_accuracy, best_epoch=epoch)
            if accelerator.is_main_process:
                save_file(accelerator.unwrap_model(head).state_dict(), output_dir / "best_head.safetensors")
        save_checkpoint(accelerator, checkpoints, state, {"epoch": epoch, "train_loss": loss,
                                                          "holdout_accuracy": holdout_accuracy}, output_dir)

    accelerator.wait_for_everyone()
    head = accelerator.unwrap_model(head)
    head.load_state_dict(load_file(output_dir / "best_head.safetensors"))
    linear = head.fold()  # the saved model is a plain timm model: the scaling now lives in its head
    calibration = calibrate(linear, holdout_features, holdout_labels, fold_logits, fold_labels, val_features[0],
                            val_labels, output_dir)
    ood_report, ood_config, ood_statistics = fit_ood(
        linear, plain_bank, plain_labels, holdout_features.flatten(0, 1), val_features[0], val_labels,
        ood_features, [item.part for item in ood_set], len(class_names), args.seed)
    ood_report["ood_set"] = describe(ood_set)
    results = evaluate_validation(linear, val_features, val_labels, validation, args.flip_tta, class_names)
    results.update(calibration=calibration, ood=ood_report, mislabels=mislabels, feedback=feedback)
    results.update(best_epoch=state["best_epoch"], holdout_accuracy=state["best_holdout"],
                   train_images=len(train_split), holdout_images=len(holdout), bank_size=len(bank),
                   seconds=round(time.time() - started, 1), feature_seconds=round(extract_seconds, 1),
                   mixed_precision=precision, precision_probe_images_per_s=precision_probe, torch_compile=compiled,
                   peak_rss_mib=peak_rss_mib(),
                   num_processes=accelerator.num_processes,
                   data_config={k: list(v) if isinstance(v, tuple) else v for k, v in config.items()})
    if accelerator.is_main_process:
        extra = {"ood": ood_config, "calibration": {"temperature": calibration["temperature"],
                                                    "fitted_on": calibration["fitted_on"], "folded_into_head": True}}
        save_outputs(model, results, args, class_names, output_dir, config, extra, ood_statistics)
        save_thumbnails([train_split[s["index"]]["image"] for s in mislabels["suspects"]], mislabels["suspects"],
                        output_dir / "suspects.png")
    return results


def evaluate_validation(head, features, labels, validation, tta: bool, class_names: list[str]) -> dict:
    """The headline is what users get: one plain forward per image (no test-time augmentation)."""
    probs = predict_proba(head, features, tta=False)
    predictions, references = probs.argmax(-1).tolist(), labels.tolist()
    leak = validation["leak"] if "leak" in validation.column_names else [False] * len(validation)
    files = validation["file"] if "file" in validation.column_names else list(range(len(validation)))
    clean = [i for i, is_leak in enumerate(leak) if not is_leak]
    return {
        "validation": classification_report(predictions, references, class_names),
        "validation_leak_free": classification_report([predictions[i] for i in clean],
                                                      [references[i] for i in clean], class_names),
        "validation_flip_tta": (classification_report(predict_proba(head, features, tta=True).argmax(-1).tolist(),
                                                      references, class_names) if tta else None),
        "misclassified": [{"file": files[i], "label": class_names[references[i]],
                           "predicted": class_names[predictions[i]], "confidence": round(probs[i].max().item(), 4)}
                          for i in range(len(predictions)) if predictions[i] != references[i]],
    }


def save_checkpoint(accelerator, checkpoints: Path, state: dict, log: dict, output_dir: Path) -> None:
    path = checkpoints / f"epoch_{state['epoch']:03d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "trainer_state.json").write_text(json.dumps(state))  # written last: marks the checkpoint complete
        with open(output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(log) + "\n")
        for old in sorted(checkpoints.glob("epoch_*"))[:-2]:  # keep the last two
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume_state(accelerator, checkpoints: Path) -> dict:
    complete = sorted(c for c in checkpoints.glob("epoch_*") if (c / "trainer_state.json").is_file())
    if not complete:
        return {"epoch": -1, "best_holdout": -1.0}  # killed before the first head epoch ended
    accelerator.load_state(str(complete[-1]))
    state = json.loads((complete[-1] / "trainer_state.json").read_text())
    accelerator.print(f"resumed from {complete[-1]} (head epoch {state['epoch']} done)")
    return state


def save_outputs(model, results: dict, args: TrainArguments, class_names: list[str], output_dir: Path,
                 config: dict, extra_config: dict, ood_statistics: dict) -> None:
    from .publish_model import save_model

    save_model(model, class_names, output_dir / "model", config, extra_config)
    save_file(ood_statistics, output_dir / "model" / "ood.safetensors")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    (output_dir / "run.json").write_text(json.dumps({"args": asdict(args), **run_info()}, indent=2))
    save_confusion_matrix(results["validation"]["confusion_matrix"], class_names, output_dir / "confusion_matrix.png",
                          f"validation, accuracy {results['validation']['accuracy']:.3f}")


def main() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses()
    results = train(args)
    full, clean = results["validation"], results["validation_leak_free"]
    print(f"validation accuracy {full['accuracy']:.4f} (all {full['n']}), {clean['accuracy']:.4f} "
          f"(leak-free {clean['n']}); best head epoch {results['best_epoch']}; {results['seconds']} s")
    if args.push_to_hub:
        from .publish_model import push_model

        info = push_model(Path(args.output_dir), args.push_to_hub, args, args.private, study_dir=Path(args.study_dir))
        print(f"pushed model {args.push_to_hub}: {info.commit_url}")


if __name__ == "__main__":
    from .errors import run_cli

    run_cli(main)
