"""Cost vs work: forward throughput at batch 1..128, feature-pass time with the data replicated
1x/4x/16x (should be linear), peak RSS, and a paper estimate for 1 M images on bigger hardware.

    python -m bench.scale [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator
from datasets import concatenate_datasets

from bench.common import LITE0, machine, real_images, table
from training.data import make_loader
from training.extractor import feature_extractor, keep_freed_memory
from training.model import build_model, data_config
from training.runinfo import peak_rss_mib
from training.train import backbone_features

A100_BF16_TFLOPS = 312  # dense peak from NVIDIA's data sheet
A100_EFFICIENCY = 0.1  # assumed for a depthwise-heavy convnet (memory-bound); an optimistic guess, not measured
LITE0_GFLOP = 0.8  # per image at 224 (2 x 0.4 GMAC); `python -m bench.roofline --backbone tf_efficientnet_lite0`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()  # as training.train does
    model = build_model(LITE0, 2, pretrained=True)
    extractor = feature_extractor(model, "no")
    batches = (1, 4) if args.quick else (1, 2, 4, 8, 16, 32, 64, 128)
    rows = []
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            extractor(x)
            repeat = max(1, 64 // batch) if not args.quick else 1
            start = time.perf_counter()
            for _ in range(repeat):
                extractor(x)
            rows.append([batch, f"{batch * repeat / (time.perf_counter() - start):.1f}"])
    print(f"EfficientNet-Lite0 forward, fp32 eager, channels_last; {machine()}")
    print(table(rows, ["batch", "img/s"]))

    base = real_images(8 if args.quick else 48)
    config = data_config(model, crop_pct=1.0)
    accelerator, timing = Accelerator(), []
    extractor = feature_extractor(model, "no", compiled=not args.quick)  # the training default here
    with torch.inference_mode():
        extractor(torch.randn(32, 3, 224, 224))  # compiles once, outside the timing
    for factor in (1, 4) if args.quick else (1, 4, 16):
        data = concatenate_datasets([base] * factor)
        loader = make_loader(data, "base", config, True, 32)
        start = time.perf_counter()
        backbone_features(extractor, loader, accelerator)
        timing.append((factor, len(data), time.perf_counter() - start))
    per_image = timing[0][2] / timing[0][1]
    print("feature passes (decode + base augmentation + compiled fp32 forward), batch 32:")
    print(table([[f"{f}x", n, f"{s:.1f}", f"{s / (per_image * n):.2f}"] for f, n, s in timing],
                ["replicated", "images", "seconds", "÷ linear"]))
    rate = timing[-1][1] / timing[-1][2]
    print(f"peak RSS of this process: {peak_rss_mib()} MiB")
    views = 8  # the training default: plain + mirror + 6 augmented passes
    gpu_rate = A100_BF16_TFLOPS * 1e12 * A100_EFFICIENCY / (LITE0_GFLOP * 1e9)
    print(f"paper estimate, 1 M images x {views} views through frozen Lite0: here {1e6 * views / rate / 3600:.1f} h "
          f"at {rate:.0f} img/s; one A100 (assuming {A100_EFFICIENCY:.0%} of its bf16 peak) "
          f"~{1e6 * views / gpu_rate / 60:.1f} min if fed {gpu_rate:.0f} img/s "
          f"(JPEG decode + augment measured ~260 img/s per core, so ~{gpu_rate / 260:.0f} cores per GPU); "
          f"8 GPUs with accelerate launch --multi_gpu: ~{1e6 * views / gpu_rate / 60 / 8:.1f} min, "
          f"the head's training on cached features is negligible.")


if __name__ == "__main__":
    main()
