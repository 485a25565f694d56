"""results.json: one versioned record per run, written once by training and read through ``load_results``.

The card, the retraining gate, ``training.publish_space`` and ``training.retrain`` read it; the gate also reads
older mains' files, so ``load_results`` brings any earlier version to this one (what an older run did not measure
is None, never a made-up figure).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

SCHEMA_VERSION = 2  # 1: every file written before the version was recorded (2026-12-07)


class Results(TypedDict, total=False):
    """The record's top level (the nested reports are documented where they are made)."""

    schema_version: int
    validation: dict  # metrics.evaluate_validation: the headline, one plain forward per image
    validation_leak_free: dict  # the rows that duplicate no training image
    validation_flip_tta: dict | None  # a row of its own, never the headline
    misclassified: list[dict]
    calibration: dict  # trust.calibrate
    ood: dict  # trust.fit_ood, with the OOD set described
    mislabels: dict  # mislabels.find_suspects (and the drop's comparison)
    feedback: dict | None  # corrections.take_in
    class_balance: dict
    best_epoch: int
    holdout_accuracy: float | None
    holdout_loss: float
    train_images: int
    holdout_images: int
    bank_size: int
    seconds: float
    runtime: str
    mixed_precision: str
    precision_probe_images_per_s: dict
    torch_compile: bool
    feature_seconds: float
    stages: dict  # unfreeze.stage_banks' report ({"requested": "0", "chosen": 0} when frozen)
    peak_rss_mib: float
    num_processes: int
    data_config: dict
    data: dict  # provenance.DataRecord
    head: dict | None  # converged.HeadChoice
    selected_on: str
    holdout_missing: list[str]
    holdout_minimum: int
    not_measured: list[str]


@dataclass(frozen=True)
class HeadFacts:
    """How the final head was chosen (head.best_head's state and converged.compete's choice)."""

    best_epoch: int
    holdout_accuracy: float | None
    holdout_loss: float
    selected_on: str
    bank_size: int  # rows trained on (fewer when suspects are dropped)
    choice: dict

    @classmethod
    def of(cls, state: dict, bank_size: int, choice: dict) -> HeadFacts:
        return cls(state["best_epoch"], state["best_holdout"], state["best_holdout_loss"],
                   state.get("selected_on", "holdout"), bank_size, choice)


def assemble(evaluated: dict, trust: tuple[dict, dict], mislabels: dict, data, head: HeadFacts, run: dict,
             holdout_minimum: int) -> Results:
    """The run's record: ``evaluated`` (validation's reports), ``trust`` (calibration, "neither"), the mislabel
    report, ``data`` (pipeline.data.TrainingData), the head's facts and ``run`` (time, runtime, memory)."""
    from ..evaluate.coverage import unmeasured
    from ..evaluate.metrics import class_balance

    calibration, ood = trust
    results: Results = {"schema_version": SCHEMA_VERSION, **evaluated}
    results.update(calibration=calibration, ood=ood, mislabels=mislabels, feedback=data.feedback,
                   class_balance=class_balance(data.train["label"], data.validation["label"], data.class_names))
    results.update(best_epoch=head.best_epoch, holdout_accuracy=head.holdout_accuracy, holdout_loss=head.holdout_loss,
                   train_images=len(data.train), holdout_images=len(data.holdout), bank_size=head.bank_size, **run)
    results.update(data=asdict(data.record), head=head.choice, selected_on=head.selected_on,
                   holdout_missing=data.holdout_missing, holdout_minimum=holdout_minimum)
    results["not_measured"] = unmeasured(results)
    return results


def load_results(source: Path | str | dict[str, Any] | None) -> Results | None:
    """A run's results (a results.json path or its parsed content) as this version's record; None stays None."""
    if source is None:
        return None
    results = dict(source) if isinstance(source, dict) else json.loads(Path(source).read_text())
    if results.get("schema_version", 1) > SCHEMA_VERSION:
        from ...errors import UserError

        raise UserError(f"results.json has schema_version {results['schema_version']}, newer than this code's "
                        f"{SCHEMA_VERSION}: update the project")
    if results.get("schema_version", 1) == 1:
        results = upgrade_from_1(results)
    return results


def upgrade_from_1(results: dict) -> Results:
    """Files from before the version: keys added since are None (or empty), so readers need no fallbacks."""
    results = {**results, "schema_version": SCHEMA_VERSION}
    if "validation" in results:
        results.setdefault("validation_leak_free", results["validation"])  # the oldest runs had no leak column
    for key in ("calibration", "data", "stages"):
        results[key] = results.get(key) or {}
    ood = dict(results.get("ood") or {})
    ood["methods"] = ood.get("methods") or {}
    validation = dict(ood.get("validation") or {})
    if validation.get("neither") is None and ood.get("validation_accepted") is not None:  # before the three answers
        validation["neither"] = 1 - ood["validation_accepted"]
    ood["validation"] = validation
    results["ood"] = ood
    for key in ("head", "feedback", "validation_flip_tta"):
        results.setdefault(key, None)
    results.setdefault("misclassified", [])
    return results
