"""Batch prediction with a published model: images in, one CSV row each out.

    python -m training.predict --model_id you/leaves-classifier photos/ extra.jpg "more/*.png" \
        --output predictions.csv

Each row: the file, the label (a class name or "neither"), the verdict ("sure", "unsure": looks most
like the label but unlike the training pictures, or "neither"), every class's calibrated probability,
the OOD score and its two limits, and an error (an unreadable file gets its row and never stops the run).
It scores with the Space's own Classifier and OOD code, through the fast frozen-backbone extractor.
"""

from __future__ import annotations

import csv
import glob
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .cli import check_choice, parse
from .errors import UserError, hub_errors
from .pipeline.data.images import BadImageError, is_hidden, read_image
from .pipeline.features.extractor import feature_extractor, forward_speed, keep_freed_memory

PROBE_FROM = 200  # images: below, the probe (and loading the torch model) costs more than it can save
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass
class PredictArguments:
    model_id: str = field(metadata={"help": "model repo id on the Hub"})
    output: str = field(default="predictions.csv")
    revision: str | None = field(default=None, metadata={"help": "model commit or branch (default: main)"})
    batch_size: int = 32
    mixed_precision: Literal["no", "bf16"] = field(default="no", metadata={"help": "no: fp32 (torch runtime)"})
    runtime: Literal["auto", "torch", "onnxruntime"] = field(default="auto", metadata={
        "help": f"onnxruntime: the repo's onnx/model.onnx (fp32, no torch model loaded); auto: from {PROBE_FROM} "
                "images on, the faster of torch and onnxruntime in fp32 on a short probe here; below, onnxruntime "
                "(it starts faster)"})

    def __post_init__(self) -> None:
        check_choice("mixed_precision", self.mixed_precision, ("no", "bf16"))
        check_choice("runtime", self.runtime, ("auto", "torch", "onnxruntime"))
        if self.runtime == "onnxruntime" and self.mixed_precision != "no":
            raise UserError("--runtime onnxruntime runs fp32: drop --mixed_precision bf16")


def expand(paths: list[str]) -> list[Path]:
    """Files, folders (recursively, image suffixes, hidden files skipped) and globs -> a sorted list, no repeats."""
    found: dict[Path, None] = {}
    for pattern in paths:
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))] or [Path(pattern)]
        for path in matches:
            if path.is_dir():
                found.update((p, None) for p in sorted(path.rglob("*"))
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p))
            else:
                found[path] = None  # a missing or odd file still gets its row (with the error)
    return list(found)


def load_backbone(args: PredictArguments, images: int) -> tuple[object, Callable, str, dict[str, float]]:
    """(classifier, pixels -> pooled features, runtime, probe images/s): the runtime asked for, or measured."""
    from space.inference import Classifier

    from .pipeline.export.torch_classifier import TorchClassifier

    candidates: dict[str, tuple[object, Callable]] = {}
    with hub_errors(f"loading model {args.model_id}"):
        if args.runtime != "torch" and args.mixed_precision == "no":
            try:
                onnx = Classifier(args.model_id, revision=args.revision)
                candidates["onnxruntime"] = (onnx, lambda x: torch.from_numpy(onnx.forward(x.numpy())[1]))
            except FileNotFoundError as e:  # a model pushed before the ONNX export
                if args.runtime == "onnxruntime":
                    raise UserError(str(e)) from None
        if args.runtime == "torch" or not candidates or (args.runtime == "auto" and images >= PROBE_FROM):
            timm_side = TorchClassifier(args.model_id, revision=args.revision)
            # fp32 unless bf16 is asked for: the answers stay the ones the card and the Space give
            name = f"torch {'fp32' if args.mixed_precision == 'no' else args.mixed_precision}"
            candidates[name] = (timm_side, feature_extractor(timm_side.model, args.mixed_precision))
    if len(candidates) == 1:
        (name, (classifier, extract)), = candidates.items()
        return classifier, extract, name, {}
    speeds = {name: round(forward_speed(extract, (3, *candidates[name][0].transform.input_size)), 1)
              for name, (_, extract) in candidates.items()}
    name = max(speeds, key=speeds.get)
    return *candidates[name], name, speeds


def predict_files(classifier, extractor: Callable, files: list[Path], batch_size: int) -> list[dict]:
    """One dict per file, in order; decoding errors become rows, never exceptions."""
    rows: list[dict] = []
    progress = tqdm(total=len(files), desc="images", unit="img")
    for start in range(0, len(files), batch_size):
        decoded, pixels = [], []
        for path in files[start:start + batch_size]:
            row = {"file": str(path), "label": "", "error": ""}
            try:
                image, _, _ = read_image(path)
                pixels.append(classifier.transform(image))
                decoded.append(row)
            except BadImageError as e:
                row["error"] = str(e)
            rows.append(row)
        if decoded:
            with torch.inference_mode():
                pooled = extractor(torch.from_numpy(np.stack(pixels)))
            for row, prediction in zip(decoded, classifier.decide(pooled), strict=True):  # the Space's own verdict
                row.update(label=prediction.label, verdict=prediction.verdict)
                row.update({f"p_{name}": round(p, 6) for name, p in prediction.confidences.items()})
                if prediction.ood_score is not None:
                    row.update(ood_score=round(prediction.ood_score, 6), threshold=prediction.threshold,
                               unsure_threshold=classifier.ood.get("unsure_threshold", ""))
        progress.update(len(files[start:start + batch_size]))
    progress.close()
    return rows


def write_csv(rows: list[dict], labels: list[str], path: Path) -> None:
    columns = ["file", "label", "verdict", *(f"p_{name}" for name in labels), "ood_score", "unsure_threshold",
               "threshold", "error"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    args = parse(PredictArguments, __doc__, positional=("paths", "image files, folders (searched recursively), globs"))
    files = expand(args.paths)
    if not files:
        raise UserError(f"no images found in {' '.join(args.paths)}")
    keep_freed_memory()
    classifier, extractor, runtime, probe = load_backbone(args, len(files))
    print(f"runtime: {runtime}" + (f" (measured img/s: {probe})" if probe else ""))
    started = time.perf_counter()
    rows = predict_files(classifier, extractor, files, args.batch_size)
    seconds = time.perf_counter() - started
    write_csv(rows, classifier.labels, Path(args.output))
    failed = sum(bool(r["error"]) for r in rows)
    answers = ", ".join(f"{sum(r.get('verdict') == v for r in rows)} {v}" for v in ("sure", "unsure", "neither"))
    print(f"{len(rows)} images -> {args.output} ({answers}; {failed} unreadable) in {seconds:.1f} s, "
          f"{len(rows) / seconds:.1f} img/s (decoding included); model {args.model_id} @ "
          f"{(classifier.revision or '')[:12]}")


if __name__ == "__main__":
    from .cli import run

    run(main)
