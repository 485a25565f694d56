"""Temperature scaling (Guo et al. 2017): one scalar, fitted on held-out train images, folded into the head.

Dividing the logits by T changes no argmax, so accuracy is untouched; only the confidences move.
Folding T into the head's weight and bias means timm, the transformers pipeline and the Space all
give the calibrated probabilities without knowing about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ECE_BINS = 15
BOOTSTRAP_SAMPLES = 1000
# A holdout where every image is right pushes T towards 0 (ever more confident); bound it.
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T in ``TEMPERATURE_RANGE`` minimising the NLL of softmax(logits / T).

    A bounded 1-D search on log T (the NLL is convex in 1/T, so it has one minimum): unbounded
    LBFGS overflows on separable logits, where the NLL keeps falling as T goes to 0.
    """
    from scipy.optimize import minimize_scalar

    logits, labels = logits.detach().double(), labels.detach()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / np.exp(log_t), labels))

    bounds = tuple(np.log(TEMPERATURE_RANGE))
    found = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-4})
    return float(np.clip(np.exp(found.x), *TEMPERATURE_RANGE))


SHRINKAGES = tuple(i / 10 for i in range(11))  # log T x lambda: 0 keeps T = 1, 1 keeps the fitted T
SHRINK_PARTS = 5


@dataclass(frozen=True)
class Temperature:
    value: float  # what is folded into the head: fitted ** shrinkage
    fitted: float  # the NLL-minimising T on every held-out image
    shrinkage: float  # lambda: the share of log T kept, cross-validated over the held-out images
    images: int  # held-out images it was fitted on
    pinned: bool = True  # False: the NLL was as low at an edge of TEMPERATURE_RANGE (nothing to fit)


def shrunk_temperature(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, seed: int = 0
                       ) -> Temperature:
    """T fitted on held-out predictions, kept nearer 1 when those images cannot pin it down.

    ``images``: an id per row (an image's views share it). The images are split into ``SHRINK_PARTS`` seeded
    parts; T is fitted without each part and judged on it, for each ``lambda`` of ``SHRINKAGES`` (T ** lambda).
    The lambda with the lowest held-out NLL over all parts is kept (ties: the larger). Many images agree on T
    and keep lambda = 1; a few that disagree pull it towards 0, i.e. T towards 1. Fewer than 2 images, or a fit
    at the edge of ``TEMPERATURE_RANGE``: T = 1.
    Train data only: the rule never sees validation.
    """
    ids, row_image = images.unique(return_inverse=True)
    if len(ids) < 2:
        return Temperature(1.0, 1.0, 0.0, len(ids))
    fitted = fit_temperature(logits, labels)
    def nll(t: float) -> float:
        return float(F.cross_entropy(logits.double() / t, labels))

    if min(nll(edge) for edge in TEMPERATURE_RANGE) <= nll(fitted) + 1e-9:
        # The NLL is as low at an edge of the range (e.g. every held-out image right with a wide margin: it falls
        # until it is flat at 0): the images do not pin T down, and the edge would be this code's choice, not theirs.
        return Temperature(1.0, fitted, 0.0, len(ids), pinned=False)
    generator = torch.Generator().manual_seed(seed)
    part_of_image = torch.randperm(len(ids), generator=generator) % min(SHRINK_PARTS, len(ids))
    part = part_of_image[row_image]
    nll = torch.zeros(len(SHRINKAGES), dtype=torch.float64)
    for k in part.unique().tolist():
        inside = part == k
        t = fit_temperature(logits[~inside], labels[~inside])
        for i, lam in enumerate(SHRINKAGES):
            nll[i] += F.cross_entropy(logits[inside].double() / t ** lam, labels[inside], reduction="sum")
    best = max(i for i in range(len(SHRINKAGES)) if nll[i] <= nll.min() + 1e-9)
    lam = SHRINKAGES[best]
    return Temperature(float(fitted ** lam), fitted, lam, len(ids))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| x bin share."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return float(ece)


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, interval: bool = False) -> dict:
    """NLL and ECE; with ``interval`` also ECE's bootstrap 90 % interval (ECE on few images is noisy)."""
    probs = logits.softmax(-1)
    report = {"nll": float(F.cross_entropy(logits, labels)), "ece": expected_calibration_error(probs, labels)}
    if interval:
        report["ece_interval_90"] = bootstrap_interval(probs, labels, expected_calibration_error)
    return report


def bootstrap_interval(probs: torch.Tensor, labels: torch.Tensor, statistic, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = 0) -> list[float]:
    """The 5th and 95th percentiles of ``statistic(probs, labels)`` over images resampled with replacement."""
    generator = torch.Generator().manual_seed(seed)
    values = [statistic(probs[i], labels[i])
              for i in torch.randint(len(labels), (samples, len(labels)), generator=generator)]
    return [float(np.percentile(values, 5)), float(np.percentile(values, 95))]


@torch.no_grad()
def fold_temperature(linear: nn.Linear, temperature: float) -> nn.Linear:
    """logits / T as a plain linear layer: W / T, b / T."""
    linear.weight /= temperature
    if linear.bias is not None:
        linear.bias /= temperature
    return linear


def save_reliability_diagram(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, path: Path,
                             title: str, bins: int = ECE_BINS) -> None:
    """Accuracy against confidence per bin, before and after scaling, with the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0, 1, bins + 1)
    figure, axis = plt.subplots(figsize=(4.2, 3.6), dpi=120)
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for probs, name, colour in ((before, "before", "tab:orange"), (after, "after", "tab:blue")):
        confidence, predicted = probs.max(-1)
        correct = (predicted == labels).float().numpy()
        confidence = confidence.numpy()
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
        xs = [confidence[which == b].mean() for b in range(bins) if (which == b).any()]
        ys = [correct[which == b].mean() for b in range(bins) if (which == b).any()]
        ece = expected_calibration_error(probs, labels, bins)
        axis.plot(xs, ys, marker="o", color=colour, label=f"{name} scaling (ECE {ece:.3f})")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
