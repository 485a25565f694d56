"""Choose the centre-crop fraction on train alone: 5-fold cross-validation of a linear probe.

    python -m bench.crop_choice [--crops 0.875 0.95 1.0]

Frozen EfficientNet-Lite0 (the shared ImageNet weights), the un-augmented training images and
their mirrors at each crop, a logistic-regression probe (standardised features), folds split by
image (a mirror never sits in another fold than its image). Validation is never read.
"""

from __future__ import annotations

import argparse

import numpy as np
import timm
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.common import LITE0, machine, real_images, table
from training.pipeline.data.augment import build_transform
from training.pipeline.features.extractor import feature_extractor, image_features, keep_freed_memory


def cross_validate(features: np.ndarray, mirrored: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple:
    accuracy, loss = [], []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        probe.fit(np.r_[features[train], mirrored[train]], np.r_[labels[train], labels[train]])
        probs = probe.predict_proba(features[test])
        accuracy.append((probs.argmax(1) == labels[test]).mean())
        loss.append(log_loss(labels[test], probs, labels=[0, 1]))
    return float(np.mean(accuracy)), float(np.std(accuracy)), float(np.mean(loss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crops", type=float, nargs="+", default=[0.875, 0.95, 1.0])
    args = parser.parse_args()
    keep_freed_memory()
    train = real_images()
    images, labels = [image.convert("RGB") for image in train["image"]], np.asarray(train["label"])
    model = timm.create_model(LITE0, pretrained=True, num_classes=2).eval()
    extractor = feature_extractor(model, "no")
    rows = []
    for crop in args.crops:
        config = timm.data.resolve_data_config({"crop_pct": crop}, model=model)
        transform = build_transform("none", config, train=False)
        with torch.inference_mode():
            plain = image_features(extractor, images, transform).numpy()
            mirrored = image_features(extractor, [i.transpose(0) for i in images], transform).numpy()
        mean, std, loss = cross_validate(plain, mirrored, labels)
        rows.append([crop, f"{mean:.4f} ± {std:.4f}", f"{loss:.4f}"])
    print(f"{machine()}\nLite0, {len(images)} training images, 5-fold CV (seed 0), logistic probe:\n")
    print(table(rows, ["crop_pct", "CV accuracy", "CV log loss"]))


if __name__ == "__main__":
    main()
