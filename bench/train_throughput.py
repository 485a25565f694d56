"""Training throughput on a frozen backbone: our step (torch fp32, bf16, compiled; ONNX Runtime) vs a plain
fp32 eager NCHW PyTorch loop.

    python -m bench.train_throughput [--backbone NAME] [--images N] [--quick]

Both loops see the same images, augmentation ("base", decoded and transformed on the fly) and
batch size, and train the same new head; measured side by side in one process (the baseline first,
with glibc's default allocator; then ours, after ``keep_freed_memory``). Data loading alone is
timed too, to show whether it is the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from bench.common import LITE0, machine, real_images, table
from training.pipeline.data.splits import make_loader
from training.pipeline.features.extractor import feature_extractor, keep_freed_memory
from training.pipeline.features.model import build_model, data_config
from training.pipeline.features.runtime import OnnxPooledFeatures


def plain_loop(model, loader, optimizer: torch.optim.Optimizer | None = None) -> float:
    """One epoch of what the deepsense/Keras-style notebooks do: fp32, NCHW, autograd on, the whole
    model called; AdamW (lr 1e-3) on the head unless ``optimizer`` is given. Returns images/s."""
    optimizer = optimizer or torch.optim.AdamW(model.get_classifier().parameters(), lr=1e-3)
    count, start = 0, time.perf_counter()
    for batch in loader:
        loss = F.cross_entropy(model(batch["pixel_values"]), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        count += len(batch["labels"])
    return count / (time.perf_counter() - start)


def our_loop(model, loader, precision: str, compiled: bool = False, extractor=None) -> float:
    """The training step of training.train: backbone under inference_mode, channels_last, in ``precision``
    (compiled or not, one warm-up batch first), or ``extractor`` (ONNX Runtime); the head in fp32."""
    extractor = extractor or feature_extractor(model, precision, compiled)
    with torch.inference_mode():
        extractor(next(iter(loader))["pixel_values"])  # compiles, if compiled
    head = model.get_classifier()
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    count, start = 0, time.perf_counter()
    for batch in loader:
        with torch.inference_mode():
            features = extractor(batch["pixel_values"])
        loss = F.cross_entropy(head(features.clone()), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        count += len(batch["labels"])
    return count / (time.perf_counter() - start)


def loading_only(loader) -> float:
    count, start = 0, time.perf_counter()
    for batch in loader:
        count += len(batch["labels"])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default=LITE0)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a smoke run on a few images")
    args = parser.parse_args()
    images = 32 if args.quick else args.images
    dataset = real_images(images)
    model = build_model(args.backbone, 2, pretrained=args.backbone.startswith("local-dir:"))
    model.eval()
    loader = make_loader(dataset, "base", data_config(model, crop_pct=1.0), True, args.batch_size)
    torch.manual_seed(0)
    loading = loading_only(loader)
    warmup = make_loader(dataset.select(range(min(len(dataset), args.batch_size))), "base", data_config(model, 1.0),
                         True, args.batch_size)
    plain_loop(model, warmup)
    plain = plain_loop(model, loader)  # first: glibc's default allocator, as in a plain script
    keep_freed_memory()  # from here on, as training.train does
    our_loop(model, warmup, "no")
    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxPooledFeatures(model, data_config(model, 1.0)["input_size"], Path(tmp) / "backbone.onnx",
                                  Accelerator(cpu=True))
    ours = {"ours, fp32 (inference_mode + channels_last + allocator)": our_loop(model, loader, "no"),
            "ours, bf16 weights": our_loop(model, loader, "bf16"),
            f"ours, onnxruntime fp32 ({onnx.threads} threads)": our_loop(model, loader, "no", extractor=onnx)}
    if not args.quick:  # the smoke run compiles nothing (tests/test_extractor.py checks the compiled path)
        ours["ours, fp32, compiled (the default here)"] = our_loop(model, loader, "no", compiled=True)
        ours["ours, bf16 weights, compiled"] = our_loop(model, loader, "bf16", compiled=True)
    rows = [["plain fp32 eager NCHW loop (baseline)", f"{plain:.1f}", "1.00"],
            *[[name, f"{speed:.1f}", f"{speed / plain:.2f}"] for name, speed in ours.items()],
            ["data loading alone (decode + base augmentation)", f"{loading:.1f}", f"{loading / plain:.2f}"]]
    best = max(ours, key=ours.get)
    print(f"training step on a frozen {args.backbone.split('/')[-1]}, {images} real images, batch "
          f"{args.batch_size}, with data loading; {machine()}")
    print(table(rows, ["loop", "images/s", "× baseline"]))
    print(f"best: {best}, {ours[best] / plain:.2f}x the baseline; data loading takes "
          f"{100 * ours[best] / loading:.0f} % of its step's time")


if __name__ == "__main__":
    main()
