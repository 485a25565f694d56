"""Push a checked DatasetDict, its report, an augmentation grid and the rendered card to the Hub."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import DatasetDict
from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi

from .augment import NOISE_SIGMA, save_augmentation_grid
from .errors import hub_errors

TEMPLATE = Path(__file__).resolve().parent.parent / "dataset_card" / "template.md"
GRID_CONFIG = {"input_size": (3, 160, 160), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0,
               "interpolation": "bicubic"}


def render_card(report: dict, repo_id: str, base_data: dict | None = None) -> DatasetCard:
    """The card from the template; keeps the ``dataset_info``/``configs`` YAML that ``datasets`` wrote."""
    total = sum(sum(c.values()) for c in report["counts"].values())
    data = dict(base_data or {})
    data.update({
        "license": "unknown", "pretty_name": "Alien vs. Predator images",
        "task_categories": ["image-classification"], "size_categories": ["n<1K" if total < 1000 else "1K<n<10K"],
        "tags": ["image-classification", "transfer-learning", "duplicates-checked"],
    })
    return DatasetCard.from_template(DatasetCardData(**data), template_path=str(TEMPLATE), repo_id=repo_id,
                                     noise_sigma=NOISE_SIGMA, **report)


def push_dataset(dataset: DatasetDict, report: dict, repo_id: str, output_dir: Path, private: bool = False) -> str:
    api = HfApi()
    labels = dataset["train"]["label"]
    firsts = [i for c in range(len(report["class_names"])) for i in [j for j, v in enumerate(labels) if v == c][:3]]
    picks = dataset["train"].select(firsts)["image"]
    grid = save_augmentation_grid(picks, GRID_CONFIG, output_dir / "augmentation_grid.png")
    with hub_errors(f"pushing dataset {repo_id}"):
        dataset.push_to_hub(repo_id, private=private, commit_message="Upload checked Alien vs. Predator splits")
        pushed = DatasetCard.load(repo_id, repo_type="dataset")  # holds the YAML that datasets just wrote
        card = render_card(report, repo_id, pushed.data.to_dict())
        operations = [
            CommitOperationAdd("README.md", str(card).encode()),
            CommitOperationAdd("report.json", json.dumps(report, indent=2).encode()),
            CommitOperationAdd("augmentation_grid.png", str(grid)),
        ]
        info = api.create_commit(repo_id, operations, repo_type="dataset",
                                 commit_message="Dataset card, check report and augmentation samples")
    return info.commit_url
