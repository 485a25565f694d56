"""Loading the dataset for training: from the Hub or a local folder, checked, split and transformed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Image, load_dataset, load_from_disk
from datasets.data_files import EmptyDatasetError

from ...errors import UserError, hub_errors
from ..recipe import DataRecipe
from .augment import batch_transform, build_transform
from .corrections import take_in
from .images import grouped_validation, leaked, near_duplicate_groups, split_fingerprints
from .provenance import DataRecord, dataset_commit, validation_fingerprint


def load_splits(source: str, validation_fraction: float = 0.2, seed: int = 42,
                revision: str | None = None) -> DatasetDict:
    """A Hub dataset id, a ``save_to_disk`` folder, or an image folder (checked by training.dataset).

    A dataset with a train split but no validation split (as ``imagefolder`` pushes a single folder)
    gets a seeded, stratified ``validation_fraction`` of train as validation.
    """
    path = Path(source)
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        for split in json.loads((path / "dataset_dict.json").read_text()).get("splits", []):
            state = path / split / "state.json"
            if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
                # datasets itself fails on such a folder (IndexError), so say what is wrong first.
                raise UserError(f"dataset {source}: the {split!r} split is empty")
        dataset = load_from_disk(str(path))
    elif path.is_dir():
        from .folder import FolderRecipe, build_dataset

        dataset, _ = build_dataset(FolderRecipe(data_dir=str(path), validation_fraction=validation_fraction,
                                                seed=seed))
    else:
        try:
            with hub_errors(f"loading dataset {source}"):
                dataset = load_dataset(source, revision=revision)
        except EmptyDatasetError:
            raise UserError(f"dataset {source}: no data files (an empty repo?); push the images first") from None
    if not isinstance(dataset, DatasetDict):
        dataset = DatasetDict({"train": dataset})
    check_columns(dataset, source)
    if "validation" not in dataset and "train" in dataset:
        train, validation = validation_split(dataset["train"], validation_fraction, seed, source)
        dataset = DatasetDict({**dataset, "train": train, "validation": validation})
    check_splits(dataset, source)
    return dataset


def measured_validation(source: str, run: dict, where: str) -> Dataset:
    """The validation split a run was measured on: a made one comes from the run's own arguments (``run``: the
    ``args`` of its run.json, found at ``where``), never from defaults."""
    missing = [name for name in ("validation_fraction", "seed") if name not in run]
    if missing:
        raise UserError(f"{where} has no {' or '.join(missing)}: the split the model was measured on cannot be "
                        "made again; retrain the model with this version")
    return load_splits(source, run["validation_fraction"], run["seed"], run.get("dataset_revision"))["validation"]


def check_columns(dataset: DatasetDict, source: str) -> None:
    """Every split needs an ``image`` column (Image) and a ``label`` column (ClassLabel): one line if not."""
    for split, rows in dataset.items():
        features = rows.features
        if isinstance(features.get("image"), Image) and isinstance(features.get("label"), ClassLabel):
            continue
        found = ", ".join(f"{name} ({type(kind).__name__})" for name, kind in features.items())
        raise UserError(f"dataset {source}: split {split!r} needs columns 'image' (Image) and 'label' (ClassLabel); "
                        f"it has {found or 'none'}")


def check_splits(dataset: DatasetDict, source: str) -> None:
    for split in ("train", "validation"):
        if split not in dataset:
            raise UserError(f"dataset {source}: no {split!r} split (has {', '.join(dataset) or 'none'})")
        if len(dataset[split]) == 0:
            raise UserError(f"dataset {source}: the {split!r} split is empty")


def validation_split(train: Dataset, fraction: float, seed: int, source: str) -> tuple[Dataset, Dataset]:
    """A seeded, stratified ``fraction`` of a dataset's only split as validation, made as for an image folder
    (images.grouped_validation: near duplicates on one side) and with its ``leak`` column, so every source is
    measured by one rule; a class of one image cannot be split (one line naming every such class)."""
    labels = np.asarray(train["label"])
    counts = np.bincount(labels, minlength=train.features["label"].num_classes)
    single = [train.features["label"].int2str(c) for c, n in enumerate(counts) if n < 2]
    if single:
        raise UserError(f"dataset {source}: {len(single)} class(es) with fewer than 2 images, so none can be both "
                        f"trained on and measured: {', '.join(map(repr, single[:20]))}"
                        f"{' …' if len(single) > 20 else ''}; add images or remove those classes")
    prints = split_fingerprints(train)
    chosen = grouped_validation(labels.tolist(), prints.near, fraction, seed)
    rest, part = train.select(np.flatnonzero(~chosen)), train.select(np.flatnonzero(chosen))
    leaks = leaked(prints.near[chosen], prints.near[~chosen])
    if "leak" in part.column_names:
        part = part.remove_columns("leak")
    return rest, part.add_column("leak", leaks.tolist())


def stratified_part(rows: Dataset, labels: np.ndarray, counts: np.ndarray, fraction: float, seed: int,
                    minimum: int) -> tuple[Dataset, Dataset]:
    """(rest, part): ``datasets``' stratified ``fraction`` when every class has ``minimum`` rows and the part gets
    one of each; otherwise ``max(1, round(fraction x n))`` seeded rows of each class of ``minimum`` or more (never a
    whole class) and none of the smaller ones."""
    size = int(np.ceil(fraction * len(labels)))
    if counts.min() >= minimum and min(size, len(labels) - size) >= len(counts):
        parts = rows.train_test_split(test_size=fraction, stratify_by_column="label", seed=seed)
        if len(set(parts["test"]["label"])) == len(counts):
            return parts["train"], parts["test"]
    rng = np.random.default_rng(seed)
    taken = set()
    for c, n in enumerate(counts):
        if n >= minimum:
            take = min(max(1, round(fraction * n)), n - 1)
            taken.update(rng.choice(np.flatnonzero(labels == c), take, replace=False).tolist())
    return rows.select([i for i in range(len(labels)) if i not in taken]), rows.select(sorted(taken))


def holdout_minimum(fraction: float) -> int:
    """The training images a class needs to give the holdout one: one image must not be more than ``fraction`` of
    the class (and 2 must stay for the cross-fitting folds). 10 at the default 0.1."""
    return max(3, math.ceil(1 / fraction - 1e-9))


def holdout_split(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset, list[str]]:
    """(train, holdout, the classes the holdout has no image of): a stratified slice of train for model selection
    (``stratified_part``: classes under ``holdout_minimum(fraction)`` images give none); validation is never looked
    at for that. The classes left out are still held out for selection and calibration, by the out-of-fold heads
    (head/linear.py), which cost a small folder no training images.
    """
    labels = np.asarray(train["label"])
    counts = np.bincount(labels, minlength=train.features["label"].num_classes)
    kept, held = stratified_part(train, labels, counts, fraction, seed, holdout_minimum(fraction))
    missing = sorted(set(range(len(counts))) - set(held["label"]))
    return kept, held, [train.features["label"].int2str(c) for c in missing]


def make_loader(dataset: Dataset, variant: str, data_config: dict, train: bool, batch_size: int,
                channels: int = 3, num_workers: int = 0, shuffle: bool | None = None) -> torch.utils.data.DataLoader:
    """Batches of ``pixel_values``/``labels``; shuffled when training unless ``shuffle`` says otherwise."""
    transform = build_transform(variant, data_config, train=train, channels=channels)
    view = dataset.select_columns(["image", "label"]).with_transform(batch_transform(transform))
    return torch.utils.data.DataLoader(view, batch_size=batch_size, shuffle=train if shuffle is None else shuffle,
                                       num_workers=num_workers,
                                       collate_fn=collate, drop_last=False)


def collate(rows: list[dict]) -> dict:
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["label"] for r in rows])}


@dataclass
class TrainingData:
    """The splits as trained on: train (with any accepted corrections), holdout, validation."""

    train: Dataset
    holdout: Dataset
    validation: Dataset
    class_names: list[str]
    files: list[str]  # train's source files, for the mislabel report
    feedback: dict | None
    neither: list  # visitors' "neither" images: OOD examples for choosing the method
    groups: np.ndarray  # a near-duplicate group id per train image: the cross-fitting folds keep groups whole
    holdout_missing: list[str]  # classes with no holdout image (too few in train)
    record: DataRecord  # which data, at which commits


def training_data(recipe: DataRecipe) -> TrainingData:
    """The splits to train on: validation as published, holdout from train, then any accepted corrections."""
    dataset = load_splits(recipe.dataset_id, recipe.validation_fraction, recipe.seed, recipe.revision)
    train_split, validation = dataset["train"], dataset["validation"]
    if "leak" in validation.column_names and all(validation["leak"]):
        raise UserError(f"dataset {recipe.dataset_id}: all {len(validation)} validation images duplicate training "
                        "images (exact or near, by pHash), so no figure would be measured on new images: give the "
                        "validation split pictures of its own")
    if recipe.max_train_samples:
        train_split = train_split.shuffle(seed=recipe.seed).select(range(min(recipe.max_train_samples,
                                                                             len(train_split))))
    train_split, holdout, holdout_missing = holdout_split(train_split, recipe.holdout_fraction, recipe.seed)
    files = (list(train_split["file"]) if "file" in train_split.column_names
             else [f"train/{i}" for i in range(len(train_split))])
    feedback, neither, feedback_revision = None, [], None
    validation_prints = split_fingerprints(validation)  # validation decoded once: its fingerprint, and corrections'
    if recipe.feedback_dataset:  # after the holdout split: corrections join train only
        feedback_revision = dataset_commit(recipe.feedback_dataset)  # its newest corrections, at a recorded commit
        train_split, neither, feedback = take_in(recipe.feedback_dataset, train_split, validation_prints,
                                                 feedback_revision)
        files += [f"feedback/{i}" for i in range(feedback["added_to_train"])]
    record = DataRecord(recipe.dataset_id, recipe.revision, recipe.feedback_dataset, feedback_revision,
                        {"train": len(train_split), "holdout": len(holdout), "validation": len(validation)},
                        validation_fingerprint(validation_prints.exact, validation["label"]))
    return TrainingData(train_split, holdout, validation, train_split.features["label"].names, files, feedback,
                        neither, duplicate_groups(train_split), holdout_missing, record)


def duplicate_groups(split: Dataset) -> np.ndarray:
    """A near-duplicate group id per image of ``split`` (pHash, as the dataset check), whatever the labels."""
    return near_duplicate_groups(split_fingerprints(split).near)


