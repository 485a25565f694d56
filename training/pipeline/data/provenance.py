"""Which data a model learned from and was measured on: the dataset's commit, the feedback dataset's, the row
counts and a fingerprint of the validation split, so that figures are compared only on the same split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from ...errors import hub_errors


def dataset_commit(source: str, revision: str | None = None) -> str | None:
    """The commit a Hub dataset's ``revision`` (default: main) is at now; None for a local folder."""
    if Path(source).exists():
        return None
    with hub_errors(f"reading dataset {source}" + (f" at {revision}" if revision else "")):
        return HfApi().dataset_info(source, revision=revision).sha


def validation_fingerprint(exact: list[str], labels: list[int]) -> str:
    """16 hex digits over every validation image's pixels (``exact``: ``images.split_fingerprints``, row order)
    and label, in no particular order: equal for the same split whatever its repo, its row order or the images'
    file format."""
    rows = sorted(f"{pixels}:{label}" for pixels, label in zip(exact, labels, strict=True))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataRecord:
    """What results.json, run.json and the card say about the data."""

    dataset_id: str
    dataset_revision: str | None  # None: a local folder
    feedback_dataset: str | None
    feedback_revision: str | None
    rows: dict[str, int]  # train (after corrections), holdout, validation
    validation_fingerprint: str
