"""Shared helpers for the benchmarks: timing, the machine, and the real images."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
LITE0 = f"local-dir:{SHARED / 'weights' / 'tf_efficientnet_lite0.in1k'}"
LITE0_HUB = "hf-hub:timm/tf_efficientnet_lite0.in1k"  # the same weights, mirrored to the Hub by `make demo`


def machine() -> str:
    sys.path.insert(0, str(ROOT))
    from training.pipeline.export.runinfo import run_info

    info = run_info()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k in ("torch", "timm", "gradio"))
    return f"{info['machine']['cpu']}, {info['machine']['cores']} cores; {versions}"


def real_images(n: int | None = None):
    """Training images of the shared data, decoded once (upright RGB)."""
    from training.pipeline.data.folder import FolderRecipe, build_dataset

    dataset, _ = build_dataset(FolderRecipe(data_dir=str(SHARED / "data" / "alien-vs-predator")))
    train = dataset["train"] if n is None else dataset["train"].select(range(n))
    return train


def timed(fn, repeat: int, warmup: int = 2) -> list[float]:
    """Wall times in ms of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def p50(times: list[float]) -> float:
    return statistics.median(times)


def p95(times: list[float]) -> float:
    return sorted(times)[max(0, int(round(0.95 * len(times))) - 1)]


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
