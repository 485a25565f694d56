"""One-command retraining behind a regression gate: dataset from the Hub -> train -> pull request -> merge.

    python -m training.retrain --dataset_id demo/alien-vs-predator --model_id demo/alien-vs-predator-classifier \
        --space_id demo/alien-vs-predator [--feedback_dataset demo/alien-vs-predator-feedback] \
        [--force | --no_merge] [--epochs 12 --seed 1 ...]

Training settings come from the model repo's ``run.json`` (the last run's arguments), the dataset's
commit included, so the candidate is measured on main's validation split; any ``TrainArguments`` flag given
here overrides them (``--dataset_revision main``: the dataset's newest commit; the gate then refuses to
compare figures measured on another validation split). The candidate is pushed as a pull request on
the model repo whose description compares it with ``main`` (training/publishing/gate.py); it is merged, and
the Space refreshed, only when every rule of the gate passes: leak-free accuracy not worse, ECE and the
validation "neither" rate within their limits or not worse, OOD AUROC not down by more than 0.01.
Otherwise the pull request stays open and the command exits 2. ``--force`` merges anyway;
``--no_merge`` leaves the decision to a person. A new repo gets its first model on ``main`` directly.
Training, faithfulness, card and push are the one path every pushed model takes (``training.train.release``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

from .cli import flags_of, parse, unknown_message
from .errors import UserError, hub_errors
from .pipeline.export.results import load_results
from .publish_space import SpaceArguments, publish_space
from .publishing.gate import (
    GATE_METRIC,
    MAX_ECE,
    MAX_NEITHER,
    comparison_table,
    decide,
    failures,
    metrics,
    other_split,
)
from .train import DEPRECATED, TrainArguments, release

REPLACED = {"dataset", "dataset_id", "model_id", "push_to_hub", "output_dir", "resume"}  # set by this command


def current_run(model_id: str) -> tuple[dict, dict | None]:
    """The saved arguments and results of the model repo's main revision (({}, None) for a new repo)."""
    try:
        with hub_errors(f"reading {model_id}"):
            run = json.loads(Path(hf_hub_download(model_id, "run.json")).read_text())["args"]
            results = load_results(hf_hub_download(model_id, "results.json"))
        return run, results
    except UserError as e:
        if isinstance(e.__cause__, (EntryNotFoundError, RepositoryNotFoundError)):
            return {}, None
        raise


def training_arguments(saved: dict, overrides: list[str], dataset_id: str, model_id: str,
                       output_dir: str) -> TrainArguments:
    known = {f.name for f in fields(TrainArguments)} - REPLACED
    argv = [f"--{k}={v}" for k, v in saved.items() if k in known and v is not None]
    argv += overrides  # later flags win
    argv += [f"--dataset_id={dataset_id}", f"--output_dir={output_dir}", f"--model_id={model_id}", "--push_to_hub",
             "--resume=false"]
    try:
        args = parse(TrainArguments, None, argv=argv, deprecated=DEPRECATED)
    except SystemExit:
        raise UserError(f"bad training override in {' '.join(overrides)}") from None
    return args


def check_flags(overrides: list[str], own: argparse.ArgumentParser) -> None:
    """A misspelled flag is named, with the closest of retrain's and training's flags, before any Hub call (the
    training parser alone would only see it after main's run.json is read, and suggest its own flags)."""
    from transformers import HfArgumentParser

    known = [*flags_of(own, HfArgumentParser(TrainArguments)), *(f"--{d.old}" for d in DEPRECATED)]
    unknown = [arg for arg in overrides if arg.startswith("--") and arg.split("=", 1)[0] not in known]
    if unknown:
        raise UserError(unknown_message(unknown, known))


def parser() -> argparse.ArgumentParser:
    """retrain's own flags; any other flag is a training override (training_arguments)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_id", required=True)
    parser.add_argument("--model_id", required=True)
    parser.add_argument("--space_id", default=None, help="refresh this Space when the candidate is merged")
    parser.add_argument("--static_space_id", default=None,
                        help="and this static Space (the browser page), pinned to the merged commit")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--force", action="store_true", help="merge even if the candidate is worse")
    decision.add_argument("--no_merge", action="store_true", help="open the pull request, leave merging to a person")
    parser.add_argument("--output_dir", default="outputs/retrain")
    parser.add_argument("--study_dir", default="outputs/study", help="include this study in the card, if present")
    parser.add_argument("--max_ece", type=float, default=MAX_ECE, help="gate: ECE at most this, or not worse")
    parser.add_argument("--max_neither", type=float, default=MAX_NEITHER,
                        help="gate: share of validation answered neither at most this, or not worse")
    return parser


def main() -> None:
    own = parser()
    known, overrides = own.parse_known_args()
    check_flags(overrides, own)
    saved, current = current_run(known.model_id)
    if saved.get("dataset_id") != known.dataset_id:  # main's commit belongs to main's dataset
        saved.pop("dataset_revision", None)
    args = training_arguments(saved, overrides, known.dataset_id, known.model_id, known.output_dir)
    limits = {"max_ece": known.max_ece, "max_neither": known.max_neither}

    def describe(results: dict) -> tuple[str, str]:
        new, before = metrics(results)[GATE_METRIC], metrics(current).get(GATE_METRIC)
        return (f"Retrain: {GATE_METRIC} {new:.4f} (main: {'none' if before is None else f'{before:.4f}'}), "
                f"validation accuracy {results['validation']['accuracy']:.4f}, seed {args.seed}"), \
            comparison_table(current, results, results.get("feedback"), **limits)

    released = release(args, study_dir=Path(known.study_dir), create_pr=current is not None, describe=describe)
    results = released.results
    print_feedback(results.get("feedback"))
    print(comparison_table(current, results, results.get("feedback"), **limits))
    failed = failures(current, results, **limits)
    action = decide(current is None, failed, known.force, known.no_merge)
    mismatch = None if current is None else other_split(current, results)
    if land(action, released.commit, known, failed, mismatch) and known.space_id:
        refreshed = publish_space(SpaceArguments(known.space_id, known.model_id, known.dataset_id,
                                                 static_space_id=known.static_space_id))
        print(f"refreshed Space {known.space_id}: {refreshed}")


def print_feedback(feedback: dict | None) -> None:
    if feedback:
        print(f"feedback {feedback['dataset']}: {feedback['received']} received, {feedback['added']} added, "
              f"{feedback['refused']} refused")
        for row in feedback["refused_rows"]:
            print(f"  refused row {row['row']}: {row['why']}")


def land(action: str, info, known: argparse.Namespace, failed: list, mismatch: str | None) -> bool:
    """Carry out the gate's ``action`` on the pushed commit ``info``; True when the candidate is on main."""
    if mismatch and action == "merge" and not known.force:
        raise UserError(f"not merged: {mismatch}; pull request #{info.pr_num} stays open ({info.pr_url}); "
                        "--force merges it anyway")
    if action == "first":
        print(f"pushed the first model of {known.model_id}: {info.commit_url}")
    elif action == "review":
        print(f"pull request #{info.pr_num} opened for review, not merged: {info.pr_url}")
        return False
    elif action == "merge":
        with hub_errors(f"merging pull request #{info.pr_num} on {known.model_id}"):
            HfApi().merge_pull_request(known.model_id, info.pr_num, comment="Merged by training.retrain: "
                                       + ("every rule of the gate passes." if not failed else "--force."))
        print(f"merged pull request #{info.pr_num} into {known.model_id}: {info.pr_url}")
    else:
        worse = "; ".join(f"{r.name} {r.candidate:.4f} fails '{r.rule}' (main {r.main:.4f})" for r in failed)
        raise UserError(f"not merged: {worse} on {known.model_id}; pull request #{info.pr_num} stays open "
                        f"({info.pr_url}); --force merges it anyway")
    return True


if __name__ == "__main__":
    from .cli import run

    run(main)
