"""Classification metrics as an ``evaluate`` module (works offline and gathers across processes).

``evaluate.load("accuracy")`` fetches a script from the Hub at run time, which an offline machine
(or the local Hub) cannot serve; a ``Metric`` subclass defined here keeps evaluate's API —
``add_batch``/``compute`` and multi-process gathering — without that download.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ..head.linear import predict_proba
from ..trust.calibration import bootstrap_interval


class ClassificationReport(evaluate.Metric):
    def __init__(self, class_names: list[str], **kwargs):
        super().__init__(**kwargs)
        self.class_names = list(class_names)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="accuracy, macro precision/recall/F1, per-class scores and the confusion matrix",
            citation="", inputs_description="predictions and references: class indices",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        labels = list(range(len(self.class_names)))
        precision, recall, f1, support = precision_recall_fscore_support(
            references, predictions, labels=labels, zero_division=0)
        matrix = confusion_matrix(references, predictions, labels=labels)
        return {
            "accuracy": float((predictions == references).mean()) if len(references) else float("nan"),
            "precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean()),
            "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                 "support": int(support[i])} for i, name in enumerate(self.class_names)},
            # Dense up to DENSE_MATRIX_MAX classes; beyond, only the non-zero cells (1,000 classes: 1 M numbers).
            "confusion_matrix": matrix.tolist() if len(labels) <= DENSE_MATRIX_MAX else None,
            "confusion_nonzero": None if len(labels) <= DENSE_MATRIX_MAX else np.argwhere(matrix).tolist(),
            "confused_pairs": confused_pairs(matrix, self.class_names),
            "n": int(len(references)),
        }


DENSE_MATRIX_MAX = 100
MANY_CLASSES = 30  # above, the card lists the most confused pairs and links the per-class table (per_class.csv)
CONFUSED_PAIRS = 15


def confused_pairs(matrix: np.ndarray, class_names: list[str], top: int = CONFUSED_PAIRS) -> list[dict]:
    """The ``top`` off-diagonal cells by count: which true class is most often taken for which."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    cells = np.argwhere(off)
    order = sorted(cells.tolist(), key=lambda c: (-off[c[0], c[1]], c[0], c[1]))[:top]
    totals = matrix.sum(1)
    return [{"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j]),
             "share_of_true": round(float(off[i, j] / max(totals[i], 1)), 4)} for i, j in order]


def save_per_class(report: dict, trained_on: dict[str, int], path) -> None:
    """Every class's training images, validation images, precision, recall and F1, as CSV (linked from the card)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "trained_on", "validation_images", "precision", "recall", "f1"])
        for name, m in report["per_class"].items():
            writer.writerow([name, trained_on[name], m["support"], f"{m['precision']:.4f}", f"{m['recall']:.4f}",
                             f"{m['f1']:.4f}"])


def classification_report(predictions, references, class_names: list[str]) -> dict:
    return ClassificationReport(class_names).compute(predictions=predictions, references=references)


SMALL_VALIDATION = 500  # below this many images, accuracy and macro F1 carry a 90 % interval


def accuracy_interval(correct: int, n: int) -> list[float]:
    """Exact (Clopper-Pearson) 90 % interval of a share: 2 of 2 right gives 0.224-1, where a bootstrap of
    those 2 images would give 1-1 (resampling a perfect sample never shows an error)."""
    from scipy.stats import binomtest

    found = binomtest(correct, n).proportion_ci(confidence_level=0.9, method="exact")
    return [round(float(found.low), 4), round(float(found.high), 4)]


def intervals(predictions: torch.Tensor, references: torch.Tensor) -> dict[str, list[float]]:
    """90 % intervals: accuracy's exact binomial one; macro F1's by bootstrap (images resampled with
    replacement), which has no closed form."""
    from sklearn.metrics import f1_score

    def macro_f1(p: torch.Tensor, r: torch.Tensor) -> float:
        return float(f1_score(r.numpy(), p.numpy(), average="macro", zero_division=0))

    return {"accuracy": accuracy_interval(int((predictions == references).sum()), len(references)),
            "f1": [round(v, 4) for v in bootstrap_interval(predictions, references, macro_f1)]}


def evaluate_validation(head, features, labels, validation, tta: bool, class_names: list[str]) -> dict:
    """The headline is what users get: one plain forward per image (no test-time augmentation). A validation
    split under ``SMALL_VALIDATION`` images also gets 90 % intervals (``interval_90``)."""
    probs = predict_proba(head, features, tta=False)
    predictions, references = probs.argmax(-1).tolist(), labels.tolist()
    leak = validation["leak"] if "leak" in validation.column_names else [False] * len(validation)
    files = validation["file"] if "file" in validation.column_names else list(range(len(validation)))
    clean = [i for i, is_leak in enumerate(leak) if not is_leak]
    full = classification_report(predictions, references, class_names)
    if len(references) < SMALL_VALIDATION:
        full["interval_90"] = intervals(torch.tensor(predictions), torch.tensor(references))
    return {
        "validation": full,
        "validation_leak_free": classification_report([predictions[i] for i in clean],
                                                      [references[i] for i in clean], class_names),
        "validation_flip_tta": (classification_report(predict_proba(head, features, tta=True).argmax(-1).tolist(),
                                                      references, class_names) if tta else None),
        "misclassified": [{"file": files[i], "label": class_names[references[i]],
                           "predicted": class_names[predictions[i]], "confidence": round(probs[i].max().item(), 4)}
                          for i in range(len(predictions)) if predictions[i] != references[i]],
    }


def imbalance(counts: dict[str, int]) -> dict:
    """Largest / smallest class, and the classes below half the mean (reported, never silently fixed)."""
    mean = sum(counts.values()) / len(counts)
    return {"ratio": round(max(counts.values()) / max(min(counts.values()), 1), 2),
            "smallest": min(counts, key=counts.get), "largest": max(counts, key=counts.get),
            "below_half_the_mean": sorted(c for c, n in counts.items() if n < mean / 2)}


def class_balance(train_labels, validation_labels, class_names: list[str]) -> dict:
    """Images per class in train and validation, and train's imbalance (``imbalance``)."""
    train, validation = ({name: int(n) for name, n in zip(class_names, np.bincount(
        np.asarray(labels, dtype=int), minlength=len(class_names)), strict=True)}
        for labels in (train_labels, validation_labels))
    return {"train": train, "validation": validation, **imbalance(train)}


def save_confusion_matrix(matrix: list[list[int]], class_names: list[str], path, title: str) -> None:
    """Rows normalised to recall (readable with unequal classes); the figure grows with the class count,
    and numbers and tick labels are left out where they would overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    side = min(max(3.2, 0.35 * n + 1.5), 24)
    figure, axis = plt.subplots(figsize=(side + 0.6, side), dpi=120 if n <= 30 else 80)
    shown = axis.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:  # beyond that the numbers overlap; the colour carries the share
        for i in range(n):
            for j in range(n):
                axis.text(j, i, f"{share[i, j]:.2f}\n({int(counts[i, j])})" if n <= 6 else f"{share[i, j]:.2f}",
                          ha="center", va="center", fontsize=8 if n <= 10 else 5,
                          color="white" if share[i, j] > 0.5 else "black")
    ticks = range(n) if n <= 60 else range(0, n, -(-n // 60))  # at most ~60 labels per axis
    axis.set_xticks(list(ticks), [class_names[t] for t in ticks], rotation=90 if n > 6 else 0,
                    fontsize=8 if n <= 30 else 5)
    axis.set_yticks(list(ticks), [class_names[t] for t in ticks], fontsize=8 if n <= 30 else 5)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true (each row sums to 1)")
    axis.set_title(title, fontsize=9)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
