"""The seed's augmentation study, reproduced honestly.

    python -m training.study --dataset_id you/leaves --seeds 0 1 2 --variants none base grayscale noise

The seed compared base / grayscale / noise augmentation on one small CNN (64x64, Adam, batch 32,
10 epochs) and called base best, but its base run had crashed. Here every variant, plus ``none``,
runs with several seeds on the same data, and the frozen backbone is measured at its native size
with ``none`` and the CNN's best variant. Accuracy is the validation split's, after the last
epoch (nothing is selected on validation). Writes ``study.json`` and ``study.png``.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .cli import CommaList, Renamed, SeedCount, check_choice, parse, require
from .pipeline.data.augment import SMALL_CNN_CONFIG, VARIANTS, build_transform
from .pipeline.data.splits import load_splits
from .pipeline.features.extractor import keep_freed_memory
from .pipeline.features.model import DEFAULT_BACKBONE, small_cnn
from .pipeline.features.runtime import RUNTIMES
from .pipeline.features.tuning import STAGE_CHOICES
from .train import TrainArguments, train

DEPRECATED = (Renamed("dataset", "dataset_id"), SeedCount("seeds"), CommaList("variants"))


@dataclass
class StudyArguments:
    dataset_id: str = field(metadata={"help": "Hub dataset id or local folder"})
    backbone: str = field(default=DEFAULT_BACKBONE, metadata={"help": "frozen backbone"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "one run per seed"})
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={
        "help": f"augmentations the small CNN is trained with, of {' '.join(VARIANTS)}"})
    backbone_runs: bool = field(default=True, metadata={"help": "also train the frozen backbone (none and best)"})
    runtime: str = field(default="auto", metadata={
        "help": "what runs the frozen backbone: torch, onnxruntime or auto (the fastest, measured here)"})
    unfreeze_last_stages: str = field(default="0", metadata={
        "help": "tune the backbone's last N stages (1 or 2) before the head; 0: frozen; auto: measured on the "
                "train holdout (training.train --help)"})
    output_dir: str = "outputs/study"

    def __post_init__(self) -> None:
        for variant in self.variants:
            check_choice("variants", variant, VARIANTS)
        check_choice("runtime", self.runtime, RUNTIMES)
        check_choice("unfreeze_last_stages", self.unfreeze_last_stages, STAGE_CHOICES)
        require(len(self.variants) >= 2 and len(self.seeds) >= 1, "--variants needs two or more, --seeds one or more")


class ImageList(torch.utils.data.Dataset):
    """Images decoded once and kept in memory; the random transform still runs per item and epoch."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def small_cnn_accuracy(train_images, train_labels, val_images, val_labels, variant: str, seed: int,
                       args: StudyArguments) -> float:
    set_seed(seed)
    channels = 1 if variant == "grayscale" else 3  # the seed's grayscale CNN has one input channel
    model = small_cnn(in_chans=channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    loader = torch.utils.data.DataLoader(
        ImageList(train_images, train_labels, build_transform(variant, SMALL_CNN_CONFIG, True, channels)),
        batch_size=args.batch_size, shuffle=True)
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    evaluate = build_transform(variant, SMALL_CNN_CONFIG, False, channels)
    with torch.inference_mode():
        x = torch.stack([evaluate(im) for im in val_images])
        return (model(x).argmax(-1) == torch.tensor(val_labels)).float().mean().item()


def row(model: str, augmentation: str, seeds: list[int], accuracies: list[float]) -> dict:
    return {"model": model, "augmentation": augmentation, "seeds": seeds, "accuracies": accuracies,
            "mean": statistics.mean(accuracies), "std": statistics.pstdev(accuracies)}


def run_study(args: StudyArguments) -> dict:
    started = time.time()
    keep_freed_memory()
    dataset = load_splits(args.dataset_id)
    train_images = [im.convert("RGB") for im in dataset["train"]["image"]]
    val_images = [im.convert("RGB") for im in dataset["validation"]["image"]]
    train_labels, val_labels = dataset["train"]["label"], dataset["validation"]["label"]
    seeds = list(args.seeds)
    rows = []
    for variant in tqdm(args.variants, desc="small CNN variants"):
        accuracies = [small_cnn_accuracy(train_images, train_labels, val_images, val_labels, variant, s, args)
                      for s in seeds]
        rows.append(row("small CNN 64x64", variant, seeds, accuracies))
    best = max(rows, key=lambda r: r["mean"])
    if args.backbone_runs:
        for variant in dict.fromkeys(["none", best["augmentation"]]):
            accuracies = []
            for s in seeds:
                output = Path(args.output_dir) / f"backbone_{variant}_{s}"
                result = train(TrainArguments(dataset_id=args.dataset_id, backbone=args.backbone, augmentation=variant,
                                              seed=s, output_dir=str(output), runtime=args.runtime,
                                              unfreeze_last_stages=args.unfreeze_last_stages))
                accuracies.append(result["validation"]["accuracy"])
            rows.append(row(f"frozen {args.backbone.removeprefix('hf-hub:')}", variant, seeds, accuracies))
    cnn = sorted((r for r in rows if r["model"].startswith("small")), key=lambda r: -r["mean"])
    summary = (f"On the small CNN, `{cnn[0]['augmentation']}` won with {cnn[0]['mean']:.3f} ± {cnn[0]['std']:.3f} "
               f"over {len(seeds)} seeds, ahead of `{cnn[1]['augmentation']}` by "
               f"{cnn[0]['mean'] - cnn[1]['mean']:+.3f} (last: `{cnn[-1]['augmentation']}`, {cnn[-1]['mean']:.3f}). "
               + ("The gap is within one standard deviation. " if cnn[0]["mean"] - cnn[1]["mean"] < cnn[0]["std"]
                  else ""))
    if args.backbone_runs:
        frozen = [r for r in rows if r["model"].startswith("frozen")]
        summary += "The frozen backbone: " + "; ".join(
            f"`{r['augmentation']}` {r['mean']:.3f} ± {r['std']:.3f}" for r in frozen) + "."
    return {"rows": rows, "summary": summary, "args": asdict(args), "seconds": round(time.time() - started, 1)}


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = study["rows"]
    figure, axis = plt.subplots(figsize=(7, 3.2), dpi=120)
    labels = [f"{r['model'].split()[0]} {r['model'].split()[1]}\n{r['augmentation']}" for r in rows]
    axis.bar(range(len(rows)), [r["mean"] for r in rows], yerr=[r["std"] for r in rows], capsize=4,
             color=["#8aa" if r["model"].startswith("small") else "#468" for r in rows])
    axis.set_xticks(range(len(rows)), labels, fontsize=7)
    axis.set_ylim(0.5, 1.0)
    axis.set_ylabel("validation accuracy")
    axis.set_title(f"mean ± std over {len(rows[0]['seeds'])} seeds", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    args = parse(StudyArguments, __doc__, deprecated=DEPRECATED)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    study = run_study(args)
    (output_dir / "study.json").write_text(json.dumps(study, indent=2))
    plot(study, output_dir / "study.png")
    for r in study["rows"]:
        print(f"{r['model']:<45} {r['augmentation']:<10} {r['mean']:.3f} ± {r['std']:.3f}")
    print(study["summary"])
    print(f"{study['seconds']} s; wrote {output_dir / 'study.json'} and study.png")


if __name__ == "__main__":
    from .cli import run

    run(main)
