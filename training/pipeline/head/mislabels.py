"""Which training images are probably mislabelled? Confident learning (Northcutt et al. 2021) via cleanlab.

It needs, for every training image, class probabilities from a model that never saw that image:
the out-of-fold heads of training/pipeline/head/linear.py give exactly that, on the cached features, for free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..features.bank import FeatureBank, SplitFeatures
from ..recipe import HeadRecipe
from .linear import OutOfFold, fit_plain_head

SHOWN = 20  # suspects listed in the report and the card


def out_of_fold_probabilities(logits: torch.Tensor, image_index: torch.Tensor, images: int) -> np.ndarray:
    """(images, C): the softmax of each image's out-of-fold logits, averaged over its views."""
    probs = torch.zeros(images, logits.shape[1])
    counts = torch.zeros(images, 1)
    probs.index_add_(0, image_index, logits.softmax(-1))
    counts.index_add_(0, image_index, torch.ones(len(image_index), 1))
    return (probs / counts.clamp(min=1)).numpy()


def find_suspects(probs: np.ndarray, labels: np.ndarray, files: list[str], class_names: list[str],
                  scored: np.ndarray | None = None, shown: int = SHOWN) -> dict:
    """The ``shown`` images with the lowest label quality, and how many confident learning flags in all.

    ``scored``: the images that have out-of-fold probabilities (default: all); the others (classes too small to
    hold an image out) cannot be judged and are left out.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    scored = np.arange(len(labels)) if scored is None else np.asarray(scored)
    labels, probs = labels[scored], probs[scored]
    if len(labels) == 0 or len(set(labels.tolist())) < 2:
        return {"flagged": 0, "flagged_indices": [], "suspects": [], "scored_images": int(len(scored)),
                "method": "not run: too few images held out of fold"}
    present = np.unique(labels)  # cleanlab wants every column's class among the labels: judge within those
    remap = np.full(len(class_names), -1)
    remap[present] = np.arange(len(present))
    within = probs if len(present) == len(class_names) else (
        probs[:, present] / np.maximum(probs[:, present].sum(1, keepdims=True), 1e-12))
    flagged = set(scored[find_label_issues(remap[labels], within, filter_by="prune_by_noise_rate")].tolist())
    quality = get_label_quality_scores(remap[labels], within, method="self_confidence")
    suspects = [{"index": int(scored[i]), "file": files[scored[i]], "label": class_names[labels[i]],
                 "suggested": class_names[int(probs[i].argmax())], "label_quality": round(float(quality[i]), 4),
                 "flagged": int(scored[i]) in flagged} for i in np.argsort(quality, kind="stable")[:shown]]
    return {"flagged": len(flagged), "flagged_indices": sorted(flagged), "suspects": suspects,
            "scored_images": int(len(scored)),
            "method": "cleanlab find_label_issues (prune_by_noise_rate) on out-of-fold probabilities; "
                      "ranked by self-confidence"}


def suspects_of(held_out: OutOfFold, labels, files: list[str], class_names: list[str]) -> dict:
    """The suspects among train (``labels``, ``files``), judged on the out-of-fold heads' probabilities."""
    held_images = held_out.rows % held_out.bank.images
    return find_suspects(out_of_fold_probabilities(held_out.logits(), held_images, len(labels)), np.asarray(labels),
                         files, class_names, scored=held_images.unique().numpy())


def suspects_and_rows(held_out: OutOfFold, data, bank: FeatureBank, validation: SplitFeatures, accelerator,
                      recipe: HeadRecipe, linear) -> tuple[dict, torch.Tensor]:
    """(the suspects among ``data.train``, the bank rows the head trains on): every row, or with
    ``recipe.drop_suspects`` the rows of the images not flagged, and the head (``linear``, untrained) trained on
    both, side by side on validation."""
    mislabels = suspects_of(held_out, data.train["label"], data.files, data.class_names)
    if not recipe.drop_suspects:
        return mislabels, torch.arange(len(bank))
    rows = kept_rows(mislabels["flagged_indices"], bank)
    mislabels["comparison"] = compare_dropping(linear, bank, rows, validation, accelerator, recipe)
    return mislabels, rows


def kept_rows(flagged: list[int], bank: FeatureBank) -> torch.Tensor:
    """The bank's rows (row r shows image r % images) of every image not flagged, all its views."""
    marked = torch.zeros(bank.images, dtype=torch.bool)
    marked[torch.tensor(flagged, dtype=torch.long)] = True
    return (~marked[torch.arange(len(bank)) % bank.images]).nonzero().squeeze(1)


def compare_dropping(linear, bank: FeatureBank, keep: torch.Tensor, validation: SplitFeatures, accelerator,
                     recipe: HeadRecipe) -> dict:
    """Validation accuracy of the head recipe trained with and without the flagged images, side by side."""
    accuracy = {}
    for name, rows in (("kept", torch.arange(len(bank))), ("dropped", keep)):
        head = fit_plain_head(linear, bank, rows, accelerator, recipe, seed=recipe.seed)
        with torch.no_grad():
            accuracy[name] = float((head(validation.plain).argmax(-1) == validation.labels).float().mean())
    return {"validation_accuracy_kept": accuracy["kept"], "validation_accuracy_dropped": accuracy["dropped"],
            "recipe": f"{recipe.epochs} head epochs, last epoch, no test-time augmentation, all validation"}


def pictured(suspects: list[dict]) -> list[dict]:
    """The suspects whose picture may be shown: none of the visitors' corrections (``feedback/<row>``), which
    the card lists by row number only."""
    return [s for s in suspects if not str(s["file"]).startswith("feedback/")]


def save_thumbnails(images: list, suspects: list[dict], path: Path, columns: int = 5) -> None:
    """A grid of the suspects with their given and suggested labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(suspects) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), dpi=80, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, suspect, image in zip(axes.flat, suspects, images, strict=False):
        axis.imshow(image.convert("RGB"))
        axis.set_title(f"{Path(suspect['file']).name}\n{suspect['label']} → {suspect['suggested']}?", fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
