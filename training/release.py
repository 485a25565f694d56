"""The one path from training arguments to a published model, shared by every command that pushes one.

    train (features, head, calibration, "neither" limits)  ->  faithfulness (cam_method)
        ->  model card  ->  push (to main, or as a pull request)

``training.train --push_to_hub``, ``training.demo`` and ``training.retrain`` all call ``release``, so
every pushed model has the same files, the same card sections and a ``cam_method`` in its config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from huggingface_hub import CommitInfo

from .faithfulness import FaithfulnessArguments
from .faithfulness import measure as measure_faithfulness
from .publishing.model_card import push_model
from .train import TrainArguments, train


@dataclass
class Released:
    results: dict
    faithfulness: dict | None  # None in the processes other than the main one
    commit: CommitInfo | None  # None when nothing was pushed (not the main process)


def release(args: TrainArguments, study_dir: Path | None = None, create_pr: bool = False,
            describe: Callable[[dict], tuple[str | None, str | None]] | None = None) -> Released:
    """Train with ``args``, measure the heatmaps' faithfulness and push to ``args.model_id`` with the card.

    ``describe(results)`` gives the commit message and description (the gate's table for a pull request).
    Under several processes only the main one measures and pushes.
    """
    results = train(args)
    if not PartialState().is_main_process:
        return Released(results, None, None)
    faithfulness = measure_faithfulness(FaithfulnessArguments(output_dir=args.output_dir, dataset_id=args.dataset_id))
    message, description = describe(results) if describe else (None, None)
    commit = push_model(Path(args.output_dir), args.model_id, args, args.private, study_dir=study_dir,
                        message=message, create_pr=create_pr, description=description)
    return Released(results, faithfulness, commit)
