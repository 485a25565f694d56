"""Visitors' corrections (the Space's feedback dataset) taken into the next training run.

Each correction is checked like any dataset image (decoded by content, RGB, EXIF), refused if its
label is unknown, if it duplicates (exactly or nearly) a validation image — validation must never
leak — or if it repeats a training image or an earlier correction. Class corrections join train
(never the holdout or validation); "neither" corrections become out-of-distribution examples for
choosing the OOD method, not a class.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, concatenate_datasets, load_dataset
from datasets.data_files import EmptyDatasetError

from space.ood import NEITHER

from ...errors import hub_errors
from .images import NEAR_DUPLICATE_BITS as NEAR
from .images import BadImageError, SplitPrints, decode_image, fingerprint, split_fingerprints


def take_in(feedback_id: str, train: Dataset, validation: SplitPrints, revision: str | None = None
            ) -> tuple[Dataset, list, dict]:
    """(train with the accepted class corrections, "neither" images, report with counts and reasons);
    ``validation``: the validation split's fingerprints (a correction may not copy a validation image)."""
    try:
        with hub_errors(f"loading feedback dataset {feedback_id}"):
            rows = load_dataset(feedback_id, split="train", revision=revision)
    except EmptyDatasetError:  # the Space made the repo, nobody has sent a correction yet
        rows = []
    names = train.features["label"].names
    check = CorrectionCheck(names, validation, split_fingerprints(train))
    added, neither, refused, refused_files = [], [], Counter(), []
    for i, row in enumerate(rows):
        image, label, why = check(i, row)
        if why:
            refused[why[0]] += 1
            refused_files.append({"row": i, "why": why[1]})
        else:
            (neither if label == NEITHER else added).append((image, label))
    if added:
        features = Features({"image": Image(), "label": ClassLabel(names=names)})
        extra = Dataset.from_dict({"image": [img for img, _ in added], "label": [names.index(lb) for _, lb in added]},
                                  features=features)
        train = concatenate_datasets([train.select_columns(["image", "label"]).cast(features), extra])
    report = {"dataset": feedback_id, "received": len(rows), "added": len(added) + len(neither),
              "added_to_train": len(added), "neither": len(neither),
              "refused": sum(refused.values()), "reasons": dict(refused), "refused_rows": refused_files}
    return train, [img for img, _ in neither], report


class CorrectionCheck:
    """One correction at a time: (image, label, None) when accepted, else (None, label, (reason, detail)). An
    accepted one joins what later ones may not repeat."""

    def __init__(self, names: list[str], validation: SplitPrints, train: SplitPrints):
        self.names = names
        self.val_pixels, self.val_hashes, self.val_files = set(validation.exact), validation.near, validation.files
        self.seen_pixels, self.seen_hashes = set(train.exact), train.near

    def __call__(self, i: int, row: dict):
        label = row.get("label")
        if label not in (*self.names, NEITHER):
            return None, label, ("unknown label", f"unknown label {label!r}")
        try:
            buffer = io.BytesIO()
            row["image"].save(buffer, format="PNG")
            image, _ = decode_image(buffer.getvalue(), f"feedback row {i}")
        except (BadImageError, AttributeError, OSError) as e:
            return None, label, ("unreadable", str(e))
        exact, near = fingerprint(image)
        distance = (self.val_hashes != near).sum(-1) if len(self.val_hashes) else np.array([])
        if exact in self.val_pixels or (distance <= NEAR).any():
            match = self.val_files[int(distance.argmin())] if len(distance) else "?"
            return None, label, ("duplicates a validation image", f"duplicates validation image {match}")
        seen = self.seen_hashes
        if exact in self.seen_pixels or (len(seen) and ((seen != near).sum(-1) <= NEAR).any()):
            return None, label, ("already in train", "duplicates a training image or an earlier correction")
        self.seen_pixels.add(exact)
        self.seen_hashes = np.vstack([seen, near[None]])
        return image, label, None
