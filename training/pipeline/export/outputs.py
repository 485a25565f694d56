"""What a run leaves in its output folder, named once: the model in timm's Hub layout and the evidence beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..evaluate.metrics import save_confusion_matrix, save_per_class
from ..features.model import save_model
from ..features.runtime import process_state
from ..head.mislabels import pictured, save_thumbnails
from .results import Results

MODEL_FILES = ("model.safetensors", "config.json", "ood.safetensors", "onnx/model.onnx", "README.md")
# Beside the model in the output folder, copied into the repo with it; the card reads them.
EVIDENCE = ("results.json", "run.json", "per_class.csv", "confusion_matrix.png", "reliability.png",
            "faithfulness.json", "faithfulness.png", "suspects.png", "onnx.json")
STUDY_FILES = ("study.json", "study.png")  # training.study's, when its folder is given
IMAGE_EVIDENCE = ("suspects.png", "faithfulness.png")  # pictures of the dataset's own images
UPLOADED = MODEL_FILES + EVIDENCE + STUDY_FILES
# Written by some runs only (or after training): a fresh run removes an older run's, so none is mistaken for its own.
STALE = ("metrics.jsonl", "faithfulness.json", "faithfulness.png", "suspects.png")


def prepare_output_dir(directory: Path, resume: bool) -> Path:
    """``directory``, made; a fresh run never mixes with an old one's checkpoints or evidence."""
    state = process_state()
    if not resume and state.is_main_process:
        shutil.rmtree(directory / "checkpoints", ignore_errors=True)
        for stale in STALE:
            (directory / stale).unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    return directory


def save_run(model: torch.nn.Module, results: Results, run: dict, data, output_dir: Path, data_config: dict,
             ood: tuple[dict, dict]) -> None:
    """The model (safetensors; config.json with the labels, timm's ``data_config``, the "neither" entry and the
    folded temperature), its "neither" statistics, results.json, run.json and the evidence; ``ood``: (the config
    entry, the statistics); ``data``: pipeline.data.TrainingData."""
    ood_config, ood_statistics = ood
    calibration = results["calibration"]
    extra = {"ood": ood_config, "calibration": {"temperature": calibration["temperature"],
                                                "fitted_on": calibration["fitted_on"], "folded_into_head": True}}
    save_model(model, data.class_names, output_dir / "model", data_config, extra)
    save_file(ood_statistics, output_dir / "model" / "ood.safetensors")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    (output_dir / "run.json").write_text(json.dumps(run, indent=2))
    save_per_class(results["validation"], results["class_balance"]["train"], output_dir / "per_class.csv")
    (output_dir / "confusion_matrix.png").unlink(missing_ok=True)
    if results["validation"]["confusion_matrix"] is not None:  # beyond DENSE_MATRIX_MAX classes, a picture says nothing
        save_confusion_matrix(results["validation"]["confusion_matrix"], data.class_names,
                              output_dir / "confusion_matrix.png",
                              f"validation, accuracy {results['validation']['accuracy']:.3f}")
    shown = pictured(results["mislabels"]["suspects"])  # never a visitor's correction: those are listed by row only
    save_thumbnails([data.train[s["index"]]["image"] for s in shown], shown, output_dir / "suspects.png")
