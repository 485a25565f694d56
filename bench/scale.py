"""Cost vs work: forward throughput at batch 1..128, feature-pass time with the data replicated
1x/4x/16x (should be linear), the head's training from the on-disk feature bank at 1x/4x/16x
(peak RSS should stay flat, epoch time linear; beside it, the same bank held in memory), and a
paper estimate for 1 M images on bigger hardware.

    python -m bench.scale [--quick] [--bank_only | --stages_only]

``--stages_only``: one ``--unfreeze_last_stages`` tuning epoch from the on-disk fp16 prefix bank at
1x/4x/16x (peak RSS should stay flat, time linear).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from datasets import concatenate_datasets

from bench.common import LITE0, machine, real_images, table
from training.pipeline.data.splits import make_loader
from training.pipeline.export.runinfo import peak_rss_mib
from training.pipeline.features.bank import split_features
from training.pipeline.features.extractor import feature_extractor, keep_freed_memory
from training.pipeline.features.model import build_model, data_config

A100_BF16_TFLOPS = 312  # dense peak from NVIDIA's data sheet
A100_EFFICIENCY = 0.1  # assumed for a depthwise-heavy convnet (memory-bound); an optimistic guess, not measured
LITE0_GFLOP = 0.8  # per image at 224 (2 x 0.4 GMAC); `python -m bench.roofline --backbone tf_efficientnet_lite0`
BANK_ROWS = 5_000  # 1x: the shared data's train split (625 images) x 8 views
BANK_DIM = 1280  # Lite0's pooled features


def head_epoch(rows: int, mode: str, folder: Path) -> dict:
    """One head epoch over a synthetic bank of ``rows`` rows, kept on disk (as training does) or in memory
    (as it did); run in a fresh process so that its peak RSS is its own."""
    from training.pipeline.features.bank import FeatureBank, NpyRowWriter, bank_loader

    classes = 2
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (rows,), generator=generator)
    writer = NpyRowWriter(folder / "view_000.npy", rows)
    for start in range(0, rows, 4096):  # written as computed, as training does
        writer.append(torch.randn(min(4096, rows - start), BANK_DIM, generator=generator).numpy())
    writer.close()
    bank = FeatureBank([folder / "view_000.npy"], labels)
    index = torch.arange(rows)
    if mode == "memory":
        features = bank.rows(index)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, labels), batch_size=64,
                                             shuffle=True, drop_last=True)
    else:
        loader = bank_loader(bank, index, 64)
    mean, std = bank.mean_std(index)
    head = torch.nn.Linear(BANK_DIM, classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    start = time.perf_counter()
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(head((x - mean) / std), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"rows": rows, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}


def stage_epoch(rows: int, folder: Path) -> dict:
    """One ``--unfreeze_last_stages 1`` tuning epoch of Lite0 over a synthetic fp16 prefix bank of ``rows`` rows
    (the last stage's input, 192 x 7 x 7), kept on disk as training keeps it; in a fresh process."""
    from training.pipeline.features.bank import FeatureBank, NpyRowWriter
    from training.pipeline.features.tuning import Suffix, TuningRecipe, activation_shape, tune_stages
    from training.pipeline.head.linear import StandardizedHead
    from training.pipeline.recipe import HeadRecipe, StageRecipe

    model = build_model("tf_efficientnet_lite0", 2, pretrained=False)
    shape = activation_shape(model, 1, (3, 224, 224))
    generator = torch.Generator().manual_seed(0)
    writer = NpyRowWriter(folder / "view_000.npy", rows, "<f2")
    for start in range(0, rows, 1024):
        writer.append(torch.randn(min(1024, rows - start), torch.Size(shape).numel(), generator=generator).numpy())
    writer.close()
    bank = FeatureBank([folder / "view_000.npy"], torch.randint(0, 2, (rows,), generator=generator))
    probe = StandardizedHead(torch.nn.Linear(BANK_DIM, 2), torch.zeros(BANK_DIM), torch.ones(BANK_DIM))
    recipe = TuningRecipe(StageRecipe("1", epochs=1), HeadRecipe(batch_size=64))
    start = time.perf_counter()
    tune_stages(Suffix(model, 1, shape), probe, bank, torch.arange(rows), None, recipe, 0, folder / "tuned.safetensors")
    return {"rows": rows, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib(),
            "bank_mib": (folder / "view_000.npy").stat().st_size / 2**20}


def stage_table(factors: tuple[int, ...], base_rows: int) -> None:
    results = []
    for factor in factors:
        with tempfile.TemporaryDirectory() as folder:
            out = subprocess.run([sys.executable, "-m", "bench.scale", "--child", str(base_rows * factor), "stages",
                                  folder], capture_output=True, text=True, check=True)
        results.append((factor, json.loads(out.stdout.splitlines()[-1])))
    first = results[0][1]
    print("one --unfreeze_last_stages 1 tuning epoch (Lite0's last stage + conv_head, fp32, batch 64) from the "
          f"fp16 prefix bank on disk; each row a fresh process; {machine()}")
    print(table([[f"{f}x", r["rows"], f"{r['bank_mib']:.0f}", r["peak_rss_mib"],
                  f"{r['peak_rss_mib'] / first['peak_rss_mib']:.2f}", f"{r['seconds']:.1f}",
                  f"{r['seconds'] / (first['seconds'] * f):.2f}"] for f, r in results],
                ["replicated", "rows", "bank MiB", "peak RSS MiB", "÷ 1x", "epoch s", "÷ linear"]))


def bank_table(factors: tuple[int, ...], base_rows: int) -> None:
    results = {}
    for mode in ("disk", "memory"):
        for factor in factors:
            with tempfile.TemporaryDirectory() as folder:
                out = subprocess.run([sys.executable, "-m", "bench.scale", "--child", str(base_rows * factor), mode,
                                      folder],
                                     capture_output=True, text=True, check=True)
            results[mode, factor] = json.loads(out.stdout.splitlines()[-1])
    rows, first = [], results["disk", factors[0]]
    for factor in factors:
        disk, memory = results["disk", factor], results["memory", factor]
        rows.append([f"{factor}x", disk["rows"], f"{disk['rows'] * BANK_DIM * 4 / 2**20:.0f}",
                     disk["peak_rss_mib"], f"{disk['peak_rss_mib'] / first['peak_rss_mib']:.2f}",
                     f"{disk['seconds']:.2f}", f"{disk['seconds'] / (first['seconds'] * factor):.2f}",
                     memory["peak_rss_mib"], f"{memory['seconds']:.2f}"])
    print(f"head epoch from the feature bank (D = {BANK_DIM}, batch 64; each row a fresh process):")
    print(table(rows, ["replicated", "rows", "bank MiB", "disk: peak RSS MiB", "÷ 1x", "epoch s", "÷ linear",
                       "memory: peak RSS MiB", "epoch s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bank_only", action="store_true", help="only the feature-bank table")
    parser.add_argument("--stages_only", action="store_true", help="only the stage-tuning table")
    parser.add_argument("--stage_rows", type=int, default=BANK_ROWS, help="1x of the stage-tuning table, in rows")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rows, mode, folder = args.child
        run = stage_epoch(int(rows), Path(folder)) if mode == "stages" else head_epoch(int(rows), mode, Path(folder))
        print(json.dumps(run))
        return
    if args.stages_only:
        stage_table((1, 4) if args.quick else (1, 4, 16), 500 if args.quick else args.stage_rows)
        return
    bank_table((1, 4), 1000) if args.quick else bank_table((1, 4, 16), BANK_ROWS)
    if args.bank_only:
        return
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
        split_features(extractor, loader, accelerator)
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
