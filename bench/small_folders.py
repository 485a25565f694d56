"""Small folders, ours beside the plain probe, in one run: 5 or 10 training images per class, 10 or 50 classes.

    python -m bench.small_folders [--kinds tiles glyphs] [--classes 10 50] [--train_per_class 5 10]
                                  [--seeds 42 1 2]

Per folder and seed: ours (``training.train`` as a user runs it, frozen Lite0) with accuracy and its bootstrap
90 % interval, ECE before and after scaling, the validation shares answered "unsure" and "neither", seconds
and peak RSS; beside it, a logistic regression on the same frozen features (one plain view, sklearn's default
C), fitted on the same training images (train plus holdout: the probe needs no holdout); and, for
``--fastai_seeds`` on folders of up to ``--fastai_max_classes`` classes, fastai's ``vision_learner`` with the
same Lite0 weights and ``fine_tune`` (``pip install -r bench/requirements-fastai.txt``).
``tiles`` are bench/folders.py's generated classes; ``glyphs`` are bench/far_folders.py's look-alike
letters, small, grey and noisy (far from ImageNet; 10 classes only). Validation: 20 images per class, made
by the same generator with another seed ("other hands").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import LITE0, machine
from bench.far_folders import make_folder as far_folder
from bench.folders import make_folder as tile_folder

VALIDATION_PER_CLASS = 20


def build(root: Path, kind: str, classes: int, per_class: int) -> Path:
    if kind == "glyphs":
        return far_folder(root, "glyphs", per_class, VALIDATION_PER_CLASS)
    train = tile_folder(root / "made_train", classes, per_class, seed=0)
    validation = tile_folder(root / "made_validation", classes, VALIDATION_PER_CLASS, seed=1)
    (root / "folder").mkdir()
    train.rename(root / "folder" / "train")
    validation.rename(root / "folder" / "validation")
    return root / "folder"


def ours(folder: Path, seed: int, output: Path, train_args: list[str] = ()) -> dict:
    started = time.time()
    command = [sys.executable, "-m", "training.train", "--dataset_id", str(folder), "--backbone", LITE0,
               "--seed", str(seed), "--output_dir", str(output), *train_args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    results = json.loads((output / "results.json").read_text())
    calibration, answered = results["calibration"], results["ood"]["validation"]
    return {"accuracy": results["validation"]["accuracy"], "interval": results["validation"].get("interval_90"),
            "ece_before": round(calibration["validation_before"]["ece"], 3),
            "ece_after": round(calibration["validation_after"]["ece"], 3),
            "temperature": round(calibration["temperature"], 3), "unsure": answered["unsure"],
            "neither": answered["neither"], "seconds": round(time.time() - started, 1),
            "peak_rss_mib": results["peak_rss_mib"], "best_epoch": results["best_epoch"],
            "head": results.get("head", {}).get("recipe"), "penalty": results.get("head", {}).get("penalty")}


def probe(folder: Path | str) -> dict:
    """Logistic regression (sklearn defaults) on one plain view of frozen Lite0 features."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from training.pipeline.data.augment import build_transform
    from training.pipeline.data.splits import load_splits
    from training.pipeline.features.extractor import feature_extractor, image_features
    from training.pipeline.features.model import build_model, data_config

    started = time.time()
    splits = load_splits(str(folder))
    model = build_model(LITE0, len(splits["train"].features["label"].names), pretrained=True, freeze=True).eval()
    transform = build_transform("none", data_config(model, crop_pct=1.0), train=False)
    extractor = feature_extractor(model, "no")
    with torch.inference_mode():
        x = {s: image_features(extractor, [i.convert("RGB") for i in splits[s]["image"]], transform).numpy()
             for s in ("train", "validation")}
    classifier = LogisticRegression(max_iter=2000).fit(x["train"], splits["train"]["label"])
    accuracy = float((classifier.predict(x["validation"]) == np.asarray(splits["validation"]["label"])).mean())
    return {"probe_accuracy": accuracy, "probe_seconds": round(time.time() - started, 1)}


def fastai_runs(folder: Path, seed: int) -> dict:
    """fastai's usual small-folder recipe on the same Lite0 weights: ``vision_learner`` (timm body, normalised as
    the weights' config says), ``aug_transforms``, then ``fine_tune(5)`` and ``fine_tune(20, freeze_epochs=5)``."""
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, aug_transforms, set_seed, vision_learner

    out = {}
    for name, epochs, freeze_epochs in (("fastai_5", 5, 1), ("fastai_20", 20, 5)):
        set_seed(seed, reproducible=True)
        train_images = sum(1 for _ in (folder / "train").rglob("*.png"))
        dls = ImageDataLoaders.from_folder(folder, train="train", valid="validation", item_tfms=Resize(224),
                                           batch_tfms=aug_transforms(), bs=min(64, train_images // 2), seed=seed,
                                           num_workers=0)
        learner = vision_learner(dls, LITE0, metrics=accuracy, pretrained=True)
        started = time.time()
        learner.fine_tune(epochs, freeze_epochs=freeze_epochs)
        out[f"{name}_accuracy"] = float(learner.validate()[1])
        out[f"{name}_seconds"] = round(time.time() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["tiles", "glyphs"])
    parser.add_argument("--classes", nargs="+", type=int, default=[10, 50])
    parser.add_argument("--train_per_class", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--fastai_seeds", nargs="*", type=int, default=[],
                        help="also fastai's two recipes for these seeds (slow on CPU; pip install -r "
                             "bench/requirements-fastai.txt)")
    parser.add_argument("--fastai_max_classes", type=int, default=10)
    parser.add_argument("--train_args", default="", help="more training.train arguments for ours, e.g. '--epochs 40'")
    args = parser.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="small-folders-") as tmp:
        for kind in args.kinds:
            for classes in ([10] if kind == "glyphs" else args.classes):
                for per_class in args.train_per_class:
                    name = f"{kind}_{classes}x{per_class}"
                    folder = build(Path(tmp) / name, kind, classes, per_class)
                    baseline = probe(folder)
                    for seed in args.seeds:
                        row = ours(folder, seed, Path(tmp) / f"{name}_{seed}", args.train_args.split())
                        if seed in args.fastai_seeds and classes <= args.fastai_max_classes:
                            row.update(fastai_runs(folder, seed))
                        print(json.dumps({"folder": name, "seed": seed, **row, **baseline}), flush=True)


if __name__ == "__main__":
    main()
