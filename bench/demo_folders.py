"""The small-folder table of issue #28: ``make demo`` on folders the project never saw, and the probe beside it.

    make hub && eval "$(make -s hub)"   # the local Hub's exports, as `make demo` uses them
    python -m bench.demo_folders [--folders tiles_2x5 tiles_3x8 ... tiles_1000x8] [--out /tmp/demo-folders]

Each folder is made by script (``bench/folders.py``), then ``training.demo`` runs on it exactly as
``make demo DATA_DIR=<folder> NAME=<name>`` does, one after another. Per folder: validation accuracy and
macro F1 with their 90 % intervals, ECE before and after scaling (and the temperature), the validation
shares said "unsure" and "neither", the demo's wall time, the training's own seconds and the demo
process's peak RSS; beside it, the logistic-regression probe (``bench.small_folders.probe``) on the very
splits the demo pushed. ``tiles_CxN`` is C generated classes of N images (the pipeline makes the
validation split); ``digits`` is sklearn's grey 8x8 digits, 10 per class to train, 12 to validate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine
from bench.folders import digits_folder, make_folder

FOLDERS = ("tiles_2x5", "tiles_3x8", "tiles_10x10", "tiles_50x6", "digits", "tiles_25x100", "tiles_100x100",
           "tiles_1000x8")


def build(root: Path, name: str) -> Path:
    if name == "digits":
        return digits_folder(root / name, per_class=10, validation_per_class=12)
    classes, per_class = (int(n) for n in name.removeprefix("tiles_").split("x"))
    return make_folder(root / name, classes, per_class)


def demo(folder: Path, name: str, output_dir: Path) -> dict:
    """``training.demo`` in its own process: wall seconds and that process's peak RSS (``wait4``)."""
    started = time.time()
    command = [sys.executable, "-m", "training.demo", "--data_dir", str(folder), "--name", name,
               "--output_dir", str(output_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{name}: make demo failed\n{output[-3000:]}")
    return {"demo_seconds": round(time.time() - started, 1), "demo_peak_rss_mib": usage.ru_maxrss // 1024,
            "printed": output}


def row(name: str, results: dict) -> dict:
    full, calibration, answered = results["validation"], results["calibration"], results["ood"]["validation"]
    interval = full.get("interval_90") or {}
    return {"folder": name, "classes": len(results["class_balance"]["train"]),
            "train": results["train_images"], "validation": full["n"],
            "accuracy": round(full["accuracy"], 4), "accuracy_90": interval.get("accuracy"),
            "f1": round(full["f1"], 4), "f1_90": interval.get("f1"),
            "ece_before": round(calibration["validation_before"]["ece"], 4),
            "ece_after": round(calibration["validation_after"]["ece"], 4),
            "ece_after_90": calibration["validation_after"].get("ece_interval_90"),
            "temperature": round(calibration["temperature"], 3),
            "unsure": answered["unsure"], "neither": answered["neither"],
            "train_seconds": results["seconds"], "not_measured": results["not_measured"],
            "head": results.get("head", {}).get("recipe"), "penalty": results.get("head", {}).get("penalty")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=FOLDERS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/demo-folders"))
    args = parser.parse_args()
    if "HF_ENDPOINT" not in os.environ:
        raise SystemExit("run with the local Hub's exports: eval \"$(make -s hub)\"")
    from bench.small_folders import probe

    print(machine(), flush=True)
    for name in args.folders:
        folder = build(args.out / "folders", name)
        ran = demo(folder, name, args.out / "outputs")
        results = json.loads((args.out / "outputs" / name / "train" / "results.json").read_text())
        baseline = probe(f"demo/{name}")  # the splits the demo pushed
        print(ran.pop("printed"), flush=True)
        print(json.dumps({**row(name, results), **ran, **baseline}), flush=True)


if __name__ == "__main__":
    main()
