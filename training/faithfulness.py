"""How faithful is each heatmap? Deletion and insertion AUC (Petsiuk et al. 2018, "RISE").

    python -m training.faithfulness --output_dir outputs/train --dataset_id you/leaves

Deletion: remove the pixels a map ranks highest first (set to the mean colour), in ``STEPS`` equal
chunks, and follow the model's probability for its predicted class: a faithful map makes it fall
fast (low AUC). Insertion: start from a blurred image and put the top-ranked pixels back: it should
rise fast (high AUC). A random map is the baseline. Measured on the saved model (calibrated
probabilities), on leak-free validation images; the method with the best insertion - deletion
becomes the model's default (``cam_method`` in config.json, which the Space reads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageFilter

from space.cam import CAM_METHODS, overlay

from .cli import Renamed, parse
from .errors import UserError
from .pipeline.data.splits import measured_validation
from .pipeline.export.torch_classifier import TorchClassifier
from .pipeline.features.extractor import keep_freed_memory
from .pipeline.features.model import set_cam_method

STEPS = 10
RANDOM = "random (baseline)"
BLUR_RADIUS = 10  # px at the model's input size: insertion starts from an image with no detail left


@dataclass
class FaithfulnessArguments:
    output_dir: str = field(metadata={"help": "a training run's folder (with model/)"})
    dataset_id: str = field(metadata={"help": "Hub dataset id or folder the model was trained on"})
    images: int = field(default=40, metadata={"help": "leak-free validation images, balanced across classes"})
    seed: int = 0


def curves(model, image, transform, cam: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """The target's probability as the top-ranked pixels are deleted / inserted, ``STEPS + 1`` points each."""
    pixels = torch.from_numpy(transform(image))
    blurred = torch.from_numpy(transform(image.filter(ImageFilter.GaussianBlur(
        BLUR_RADIUS * max(image.size) / pixels.shape[-1]))))
    ranking = F.interpolate(torch.from_numpy(cam)[None, None].float(), size=pixels.shape[-2:], mode="bilinear",
                            align_corners=False).flatten().argsort(descending=True)
    total = len(ranking)
    deleted, inserted = [], []
    for step in range(STEPS + 1):
        shown = torch.zeros(total, dtype=torch.bool)
        shown[ranking[: total * step // STEPS]] = True
        shown = shown.view(1, *pixels.shape[-2:])
        deleted.append(torch.where(shown, torch.zeros_like(pixels), pixels))  # 0 = the mean colour after Normalize
        inserted.append(torch.where(shown, pixels, blurred))
    with torch.inference_mode():
        batch = torch.stack(deleted + inserted).contiguous(memory_format=torch.channels_last)
        probs = model(batch).softmax(-1)[:, target].numpy()
    return probs[: STEPS + 1], probs[STEPS + 1:]


def auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1 / STEPS))


def pick_images(validation, count: int, seed: int) -> list[int]:
    """``count`` leak-free validation rows (fewer if there are fewer), spread over the classes as evenly as they
    go: the first of each class's seeded order, then the second, ...; where a round has more classes than places
    left, a seeded choice of them (1,000 classes, 40 images: 40 classes, one image each)."""
    rng = np.random.default_rng(seed)
    leak = validation["leak"] if "leak" in validation.column_names else [False] * len(validation)
    labels = np.asarray(validation["label"])
    queues = [rng.permutation([i for i in np.flatnonzero(labels == c) if not leak[i]]).tolist()
              for c in sorted(set(labels.tolist()))]
    chosen: list[int] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        this_round = [q[depth] for q in queues if depth < len(q)]
        left = count - len(chosen)
        if len(this_round) > left:
            this_round = np.random.default_rng(seed + 1).choice(this_round, left, replace=False).tolist()
        chosen += this_round
        if len(chosen) >= count:
            break
    return sorted(int(i) for i in chosen)


def measure(args: FaithfulnessArguments) -> dict:
    output_dir = Path(args.output_dir)
    keep_freed_memory()  # each step is a batch of 2 x (STEPS + 1) images: without it, page faults dominate
    # The Space's own preprocessing, head and CAM, on the timm model (eval, frozen, channels_last).
    classifier = TorchClassifier(str(output_dir / "model"))
    model, transform = classifier.model, classifier.transform
    run_json = output_dir / "run.json"
    if not run_json.is_file():
        raise UserError(f"{run_json} not found: --output_dir must be a training run's (model/ and run.json)")
    validation = measured_validation(args.dataset_id, json.loads(run_json.read_text())["args"], str(run_json))
    rows = pick_images(validation, args.images, args.seed)
    generator = np.random.default_rng(args.seed)
    scores: dict[str, dict[str, list]] = {m: {"deletion": [], "insertion": [], "del_curve": [], "ins_curve": []}
                                          for m in (*CAM_METHODS, RANDOM)}
    for row in rows:
        image = validation[row]["image"].convert("RGB")
        logits, _, feature_map = classifier.forward(transform(image)[None])
        target = int(logits.argmax())
        maps = {m: classifier.cam(feature_map[0], target, m) for m in CAM_METHODS}
        maps[RANDOM] = generator.random(maps["CAM"].shape)
        done: list[tuple[np.ndarray, tuple]] = []
        for method, cam in maps.items():
            result = next((r for m, r in done if np.array_equal(m.argsort(None), cam.argsort(None))), None)
            result = result or curves(model, image, transform, cam, target)  # same ranking, same curves
            done.append((cam, result))
            for name, curve in zip(("del", "ins"), result, strict=True):
                scores[method][f"{name}_curve"].append(curve)
            scores[method]["deletion"].append(auc(result[0]))
            scores[method]["insertion"].append(auc(result[1]))
    table = {m: {"deletion_mean": float(np.mean(s["deletion"])), "deletion_std": float(np.std(s["deletion"])),
                 "insertion_mean": float(np.mean(s["insertion"])), "insertion_std": float(np.std(s["insertion"])),
                 "deletion_curve": np.mean(s["del_curve"], 0).round(4).tolist(),
                 "insertion_curve": np.mean(s["ins_curve"], 0).round(4).tolist()} for m, s in scores.items()}
    best = max(CAM_METHODS, key=lambda m: table[m]["insertion_mean"] - table[m]["deletion_mean"])
    result = {"images": len(rows), "steps": STEPS, "methods": table, "best": best,
              "split": "validation, leak-free", "seed": args.seed}
    (output_dir / "faithfulness.json").write_text(json.dumps(result, indent=2))
    save_figure(result, validation[rows[0]]["image"].convert("RGB"), classifier, output_dir / "faithfulness.png")
    return result


def save_figure(result: dict, image, classifier: TorchClassifier, path: Path) -> None:
    """Top: one validation image under every method; bottom: mean deletion and insertion curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logits, _, feature_map = classifier.forward(classifier.transform(image)[None])
    target = int(logits.argmax())
    figure = plt.figure(figsize=(2.2 * len(CAM_METHODS), 5.4), dpi=100)
    for i, method in enumerate(CAM_METHODS):
        axis = figure.add_subplot(2, len(CAM_METHODS), i + 1)
        axis.imshow(overlay(image, classifier.cam(feature_map[0], target, method), 0.5))
        axis.set_title(method, fontsize=9)
        axis.axis("off")
    steps = np.linspace(0, 1, result["steps"] + 1)
    for j, kind in enumerate(("deletion", "insertion")):
        axis = figure.add_subplot(2, 2, 3 + j)
        for method, row in result["methods"].items():
            axis.plot(steps, row[f"{kind}_curve"], label=f"{method} ({row[f'{kind}_mean']:.3f})",
                      linestyle="--" if method == RANDOM else "-")
        axis.set_xlabel(f"share of pixels {'removed' if kind == 'deletion' else 'restored'}")
        axis.set_ylabel("probability of the predicted class")
        axis.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} is better)", fontsize=9)
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    args = parse(FaithfulnessArguments, __doc__, deprecated=(Renamed("dataset", "dataset_id"),))
    result = measure(args)
    set_cam_method(Path(args.output_dir) / "model", result["best"])
    for method, row in result["methods"].items():
        print(f"{method:18s} deletion {row['deletion_mean']:.3f} ± {row['deletion_std']:.3f}   "
              f"insertion {row['insertion_mean']:.3f} ± {row['insertion_std']:.3f}")
    print(f"most faithful: {result['best']} (the model's default CAM method now)")


if __name__ == "__main__":
    from .cli import run

    run(main)
