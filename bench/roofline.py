"""How close the frozen backbone's forward comes to this CPU's matmul limit.

    python -m bench.roofline [--backbone resnet50] [--quick]

Measures bf16 and fp32 matmul GFLOP/s, counts the backbone's FLOPs per image with
``torch.utils.flop_counter``, times the feature extractor of training (batch 32, channels_last)
in each precision, eager and compiled, and prints each as a fraction of the best matmul limit, all
in one run. The first row uses glibc's default allocator; the rest keep freed memory, as training does.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine, table
from training.pipeline.features.extractor import feature_extractor, keep_freed_memory


def matmul_gflops(dtype: torch.dtype, size: int, repeat: int) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * size**3 * repeat / (time.perf_counter() - start) / 1e9


def forward_images_per_second(model, batch: int, size: int, repeat: int) -> float:
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        start = time.perf_counter()
        for _ in range(repeat):
            model(x)
    return batch * repeat / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size, batch, repeat = (64, 4, 1) if args.quick else (224, 32, 3)
    model = timm.create_model(args.backbone, pretrained=False, num_classes=2).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    gflop_per_image = counter.get_total_flops() / 1e9
    limits = {name: matmul_gflops(dtype, 512 if args.quick else 2048, 2 if args.quick else 10)
              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    variants = [("fp32", "eager, default allocator", False), ("fp32", "eager", False), ("bf16", "eager", False),
                ("fp32", "compiled", True), ("bf16", "compiled", True)]
    if args.quick:  # one compilation in the smoke run
        variants = variants[:4]
    rows = []
    for precision, how, compiled in variants:
        if how == "eager":
            keep_freed_memory()  # from here on, as in training
        extractor = feature_extractor(model, "bf16" if precision == "bf16" else "no", compiled)
        ips = forward_images_per_second(extractor, batch, size, repeat)
        achieved = ips * gflop_per_image
        rows.append([precision, how, f"{limits[precision]:.0f}", f"{ips:.1f}", f"{achieved:.0f}",
                     f"{100 * achieved / max(limits.values()):.0f} %", f"{100 * achieved / limits[precision]:.0f} %"])
    print(f"{args.backbone} @{size}, batch {batch}: {gflop_per_image:.2f} GFLOP/image; {machine()}")
    print(table(rows, ["precision", "forward", "matmul GFLOP/s", "forward img/s", "forward GFLOP/s", "of best matmul",
                       "of own limit"]))


if __name__ == "__main__":
    main()
