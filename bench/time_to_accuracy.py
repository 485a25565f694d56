"""Time to accuracy: wall time from the Hub dataset to >= 0.97 validation accuracy, ours vs a plain loop.

    python -m bench.time_to_accuracy [--dataset_id demo/alien-vs-predator] [--backbone ID] [--quick]

Needs the dataset on the Hub that HF_ENDPOINT names (``make demo`` puts it there; ``make bench``
runs every benchmark). Each side runs in a fresh process of its own with an empty Hugging Face cache,
one after the other, timed from its start (imports, dataset and weights downloaded from the Hub, model
load), so wall time and peak RSS are its own:

- ours: ``python -m training.train`` with its defaults. It looks at validation once, at the end.
- baseline: the deepsense/Keras-style loop. Plain fp32 eager NCHW with autograd on, the frozen
  backbone called every step, ``base`` augmentation on the fly each epoch, AdamW (lr 1e-3) on the new
  head, batch 32, and validation after every epoch, stopping at the first epoch that reaches the
  target. Same images, crop and augmentation as ours: only the loop differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import LITE0_HUB, ROOT, machine, table
from training.pipeline.export.runinfo import peak_rss_mib

TARGET = 0.97


def baseline(args: argparse.Namespace) -> None:
    """The plain loop, in this process; prints one JSON line per epoch."""
    import torch

    from bench.train_throughput import plain_loop
    from training.pipeline.data.splits import load_splits, make_loader
    from training.pipeline.features.model import build_model, data_config

    torch.manual_seed(args.seed)
    dataset = load_splits(args.dataset_id)
    train = dataset["train"]
    if args.max_train_samples:
        train = train.shuffle(seed=args.seed).select(range(args.max_train_samples))
    model = build_model(args.backbone, len(train.features["label"].names), pretrained=True, freeze=True).eval()
    config = data_config(model, crop_pct=1.0)
    train_loader = make_loader(train, "base", config, True, 32)
    validation_loader = make_loader(dataset["validation"], "none", config, False, 32)
    optimizer = torch.optim.AdamW(model.get_classifier().parameters(), lr=1e-3)
    for epoch in range(args.max_epochs):
        plain_loop(model, train_loader, optimizer)
        correct = 0
        with torch.no_grad():
            for batch in validation_loader:
                correct += (model(batch["pixel_values"]).argmax(-1) == batch["labels"]).sum().item()
        accuracy = correct / len(dataset["validation"])
        print(json.dumps({"epoch": epoch, "seconds": time.time() - args.started, "accuracy": accuracy,
                          "peak_rss_mib": peak_rss_mib()}), flush=True)
        if accuracy >= TARGET:
            break


def run(command: list[str]) -> tuple[float, str]:
    """Run ``python command`` with an empty Hugging Face cache, so that it downloads from the Hub."""
    with tempfile.TemporaryDirectory() as hf_home:
        started = time.time()
        result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "HF_HOME": hf_home})
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.time() - started, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_id", default="demo/alien-vs-predator")
    parser.add_argument("--backbone", default=LITE0_HUB)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max_epochs", type=int, default=10, help="the baseline's budget")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 32 images, 1 baseline epoch")
    parser.add_argument("--role", choices=["compare", "baseline"], default="compare", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.max_epochs, args.max_train_samples = 1, 32
    if args.role == "baseline":
        return baseline(args)

    common = ["--dataset_id", args.dataset_id, "--backbone", args.backbone, "--seed", str(args.seed)]
    if args.max_train_samples:
        common += ["--max_train_samples", str(args.max_train_samples)]
    with tempfile.TemporaryDirectory() as output_dir:
        quick = ["--augmented_views", "1", "--epochs", "2"] if args.quick else []
        ours_seconds, _ = run(["-m", "training.train", *common, *quick, "--output_dir", output_dir])
        ours = json.loads((Path(output_dir) / "results.json").read_text())
    _, out = run(["-m", "bench.time_to_accuracy", "--role", "baseline", *common, "--max_epochs",
                  str(args.max_epochs), "--started", str(time.time())])
    epochs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    accuracy = ours["validation"]["accuracy"]
    reached = next((e for e in epochs if e["accuracy"] >= TARGET), None)
    best = max(epochs, key=lambda e: e["accuracy"])
    rows = [["ours (training.train defaults)", f"{accuracy:.3f}",
             f"{ours_seconds:.0f}" if accuracy >= TARGET else "not reached", f"{ours_seconds:.0f}",
             ours["peak_rss_mib"]],
            [f"plain fp32 loop, {len(epochs)} epochs", f"{best['accuracy']:.3f} (epoch {best['epoch'] + 1})",
             f"{reached['seconds']:.0f}" if reached else "not reached", f"{epochs[-1]['seconds']:.0f}",
             max(e["peak_rss_mib"] for e in epochs)]]
    print(f"time to validation accuracy >= {TARGET} from the Hub dataset {args.dataset_id}; "
          f"{args.backbone.split('/')[-1]}, seed {args.seed}; {machine()}")
    print(table(rows, ["loop", "validation accuracy", f"s to >= {TARGET}", "s in all", "peak RSS MiB"]))
    print(f"ours: {ours['mixed_precision']} (measured img/s {ours['precision_probe_images_per_s']}), "
          f"compiled {ours['torch_compile']}; backbone passes {ours['feature_seconds']} s")
    print("baseline accuracy per epoch:", ", ".join(f"{e['accuracy']:.3f}" for e in epochs))
    print(f"ours reaches the baseline's best accuracy ({best['accuracy']:.3f}) in {ours_seconds:.0f} s, the "
          f"baseline in {best['seconds']:.0f} s: {best['seconds'] / ours_seconds:.1f}x faster"
          if accuracy >= best["accuracy"] else "ours ends below the baseline's best accuracy")


if __name__ == "__main__":
    main()
