"""One-command retraining: dataset from the Hub -> train -> new model revision, card and Space.

    python -m training.retrain --dataset_id demo/alien-vs-predator --model_id demo/alien-vs-predator-classifier \
        --space_id demo/alien-vs-predator [--force] [--epochs 12 --seed 1 ...]

Training settings come from the model repo's ``run.json`` (the last run's arguments); any
``TrainArguments`` flag given here overrides them. A model whose validation accuracy is below
the current revision's is not pushed unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

from .errors import UserError, hub_errors
from .publish_model import push_model
from .publish_space import SpaceArguments, publish_space
from .train import TrainArguments, train


def current_run(model_id: str) -> tuple[dict, float | None]:
    """The saved arguments and validation accuracy of the model repo's main revision (empty if new)."""
    try:
        with hub_errors(f"reading {model_id}"):
            run = json.loads(Path(hf_hub_download(model_id, "run.json")).read_text())["args"]
            results = json.loads(Path(hf_hub_download(model_id, "results.json")).read_text())
        return run, results["validation"]["accuracy"]
    except UserError as e:
        if isinstance(e.__cause__, (EntryNotFoundError, RepositoryNotFoundError)):
            return {}, None
        raise


def training_arguments(saved: dict, overrides: list[str], dataset_id: str, model_id: str,
                       output_dir: str) -> TrainArguments:
    from transformers import HfArgumentParser

    known = {f.name for f in fields(TrainArguments)}
    argv = [f"--{k}={v}" for k, v in saved.items() if k in known and v is not None]
    argv += overrides  # later flags win
    argv += [f"--dataset={dataset_id}", f"--output_dir={output_dir}", f"--push_to_hub={model_id}", "--resume=false"]
    try:
        (args,) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses(args=argv)
    except SystemExit:
        raise UserError(f"bad training override in {' '.join(overrides)}") from None
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_id", required=True)
    parser.add_argument("--model_id", required=True)
    parser.add_argument("--space_id", default=None, help="also refresh this Space")
    parser.add_argument("--force", action="store_true", help="push even if validation accuracy drops")
    parser.add_argument("--output_dir", default="outputs/retrain")
    parser.add_argument("--study_dir", default="outputs/study", help="include this study in the card, if present")
    known, overrides = parser.parse_known_args()
    saved, current = current_run(known.model_id)
    args = training_arguments(saved, overrides, known.dataset_id, known.model_id, known.output_dir)
    results = train(args)
    new = results["validation"]["accuracy"]
    print(f"new model: validation accuracy {new:.4f} (leak-free {results['validation_leak_free']['accuracy']:.4f}); "
          f"current: {'none' if current is None else f'{current:.4f}'}")
    if current is not None and new < current and not known.force:
        raise UserError(f"not pushed: validation accuracy {new:.4f} is below the current model's {current:.4f} "
                        f"on {known.model_id}; use --force to push it anyway")
    output_dir = Path(args.output_dir)
    message = (f"Retrain: validation accuracy {new:.4f} (was {'none' if current is None else f'{current:.4f}'}), "
               f"leak-free {results['validation_leak_free']['accuracy']:.4f}, seed {args.seed}")
    url = push_model(output_dir, known.model_id, args, study_dir=Path(known.study_dir), message=message)
    print(f"pushed {known.model_id}: {url}")
    if known.space_id:
        print(f"refreshed Space {known.space_id}: "
              f"{publish_space(SpaceArguments(known.space_id, known.model_id, known.dataset_id))}")
    print(f"{known.model_id} now has {len(HfApi().list_repo_commits(known.model_id))} commits")


if __name__ == "__main__":
    from .errors import run_cli

    run_cli(main)
