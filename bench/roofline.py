"""How close the frozen backbone's forward comes to this CPU's matmul limit.

    python -m bench.roofline [--backbone resnet50] [--quick]

Measures bf16 and fp32 matmul GFLOP/s, counts the backbone's FLOPs per image with
``torch.utils.flop_counter``, times the forward (batch 32, channels_last, bf16 weights) and prints
it as a fraction of the bf16 limit, all in one run.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine, table


def matmul_gflops(dtype: torch.dtype, size: int, repeat: int) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * size**3 * repeat / (time.perf_counter() - start) / 1e9


def forward_images_per_second(model, dtype: torch.dtype, batch: int, size: int, repeat: int) -> float:
    x = torch.randn(batch, 3, size, size, dtype=dtype).contiguous(memory_format=torch.channels_last)
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
    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        copy = model.to(dtype).to(memory_format=torch.channels_last)
        ips = forward_images_per_second(copy, dtype, batch, size, repeat)
        achieved = ips * gflop_per_image
        rows.append([name, f"{limits[name]:.0f}", f"{ips:.1f}", f"{achieved:.0f}",
                     f"{100 * achieved / max(limits.values()):.0f} %", f"{100 * achieved / limits[name]:.0f} %"])
    print(f"{args.backbone} @{size}, batch {batch}: {gflop_per_image:.2f} GFLOP/image; {machine()}")
    print(table(rows, ["precision", "matmul GFLOP/s", "forward img/s", "forward GFLOP/s", "of best matmul",
                       "of own limit"]))


if __name__ == "__main__":
    main()
