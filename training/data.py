"""Loading the dataset for training: from the Hub or a local folder, checked, split and transformed."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk

from .augment import batch_transform, build_transform
from .errors import UserError, hub_errors


def load_splits(source: str) -> DatasetDict:
    """A Hub dataset id, a ``save_to_disk`` folder, or an image folder (checked by training.dataset)."""
    path = Path(source)
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        for split in json.loads((path / "dataset_dict.json").read_text()).get("splits", []):
            state = path / split / "state.json"
            if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
                # datasets itself fails on such a folder (IndexError), so say what is wrong first.
                raise UserError(f"dataset {source}: the {split!r} split is empty")
        dataset = load_from_disk(str(path))
    elif path.is_dir() and (path / "train").is_dir():
        from .dataset import DatasetArguments, build_dataset

        dataset, _ = build_dataset(DatasetArguments(data_dir=str(path)))
    else:
        with hub_errors(f"loading dataset {source}"):
            dataset = load_dataset(source)
    check_splits(dataset, source)
    return dataset


def check_splits(dataset: DatasetDict, source: str) -> None:
    for split in ("train", "validation"):
        if split not in dataset:
            raise UserError(f"dataset {source}: no {split!r} split (has {', '.join(dataset) or 'none'})")
        if len(dataset[split]) == 0:
            raise UserError(f"dataset {source}: the {split!r} split is empty")
        features = dataset[split].features
        if not isinstance(features.get("label"), ClassLabel):
            raise UserError(f"dataset {source}: split {split!r} needs a 'label' column of type ClassLabel "
                            f"(found {features.get('label')!r})")
        if "image" not in features:
            raise UserError(f"dataset {source}: split {split!r} has no 'image' column")


def holdout_split(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A stratified slice of train for model selection; validation is never looked at for that."""
    parts = train.train_test_split(test_size=fraction, stratify_by_column="label", seed=seed)
    return parts["train"], parts["test"]


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
