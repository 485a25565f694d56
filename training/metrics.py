"""Classification metrics as an ``evaluate`` module (works offline and gathers across processes).

``evaluate.load("accuracy")`` fetches a script from the Hub at run time, which an offline machine
(or the local Hub) cannot serve; a ``Metric`` subclass defined here keeps evaluate's API —
``add_batch``/``compute`` and multi-process gathering — without that download.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


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
        return {
            "accuracy": float((predictions == references).mean()) if len(references) else float("nan"),
            "precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean()),
            "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                 "support": int(support[i])} for i, name in enumerate(self.class_names)},
            "confusion_matrix": confusion_matrix(references, predictions, labels=labels).tolist(),
            "n": int(len(references)),
        }


def classification_report(predictions, references, class_names: list[str]) -> dict:
    return ClassificationReport(class_names).compute(predictions=predictions, references=references)


def save_confusion_matrix(matrix: list[list[int]], class_names: list[str], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(3.6, 3.2), dpi=120)
    axis.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center", color="black" if i != j else "white")
    axis.set_xticks(range(len(class_names)), class_names)
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
