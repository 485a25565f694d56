"""Trust across seeds: accuracy, ECE (with its bootstrap 90 % interval) and the share of each answer
("sure", "unsure", "neither") on validation and on the OOD set's test half, one row per seed.

    python -m bench.trust_seeds --dataset_id demo/alien-vs-predator --seeds 42 1 2 --stages 0 auto 1

Each seed is a full default training run (``training.train``'s defaults, as ``make demo`` trains),
not pushed. A rate claimed in the card must hold on every row, not on one lucky run. ``--stages``: one
row per seed and ``--unfreeze_last_stages`` setting (with the depth auto chose, and the run's seconds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import LITE0_HUB, machine


def row(seed: int, results: dict) -> str:
    calibration, ood = results["calibration"]["validation_after"], results["ood"]
    answered, ood_test = ood["validation"], ood["methods"][ood["method"]]["ood_test"]
    low, high = calibration["ece_interval_90"]
    stages = results.get("stages", {"requested": "0", "chosen": 0})
    return (f"| {seed} | {stages['requested']} → {stages['chosen']} | {results['seconds']:.0f} | "
            f"{results['validation']['accuracy']:.3f} | {results['validation_leak_free']['accuracy']:.3f} | "
            f"{calibration['ece']:.4f} ({low:.3f}–{high:.3f}) | {ood['method']} | "
            f"{100 * answered['sure']:.1f} / {100 * answered['unsure']:.1f} / {100 * answered['neither']:.1f} | "
            f"{100 * ood_test['neither']:.1f} / {100 * ood_test['unsure']:.1f} / {100 * ood_test['sure']:.1f} | "
            f"{ood['methods'][ood['method']]['auroc_test']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_id", default="demo/alien-vs-predator")
    parser.add_argument("--backbone", default=LITE0_HUB)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--stages", nargs="+", default=["0"], help="--unfreeze_last_stages settings, a row each")
    parser.add_argument("--output_dir", default="outputs/bench/trust_seeds")
    args = parser.parse_args()
    from training.train import TrainArguments, train

    print(f"machine: {machine()}")
    lines = ["| seed | stages (asked → chosen) | seconds | accuracy (all) | leak-free | ECE (90 % interval) | method | "
             "validation % sure / unsure / "
             "neither | OOD test half % neither / unsure / sure | OOD AUROC |", "| --- " * 10 + "|"]
    for seed in args.seeds:
        for stages in args.stages:
            output_dir = Path(args.output_dir) / (f"seed-{seed}" + ("" if stages == "0" else f"-stages-{stages}"))
            results = train(TrainArguments(dataset_id=args.dataset_id, backbone=args.backbone, seed=seed,
                                           output_dir=str(output_dir), unfreeze_last_stages=stages))
            (output_dir / "row.json").write_text(json.dumps({"seed": seed, "row": row(seed, results)}))
            lines.append(row(seed, results))
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
