"""Push a checked DatasetDict, its report, an augmentation grid and the rendered card to the Hub."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict
from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi

from ..errors import hub_errors
from ..pipeline.data.augment import NOISE_SIGMA, save_augmentation_grid

TEMPLATE = Path(__file__).resolve().parents[2] / "dataset_card" / "template.md"
GRID_CONFIG = {"input_size": (3, 160, 160), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0,
               "interpolation": "bicubic"}
GRID_CLASSES = 8  # rows of the augmentation grid stay readable up to here; more classes: the first 8


@dataclass
class CardText:
    """The words a card can't find in the data: title, what the images are, their licence, a citation."""

    title: str | None = None
    description: str | None = None
    license: str = "unknown"
    citation: str | None = None

    def title_for(self, repo_id: str) -> str:
        return self.title or repo_id.split("/")[-1].replace("-", " ").replace("_", " ").capitalize()


def size_category(total: int) -> str:
    """The Hub's ``size_categories`` bucket."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if total < limit:
            return name
    return "n>1M"


def render_card(report: dict, repo_id: str, base_data: dict | None = None, text: CardText | None = None
                ) -> DatasetCard:
    """The card from the template; keeps the ``dataset_info``/``configs`` YAML that ``datasets`` wrote."""
    text = text or CardText()
    total = sum(sum(c.values()) for c in report["counts"].values())
    data = dict(base_data or {})
    data.update({
        "license": text.license, "pretty_name": text.title_for(repo_id),
        "task_categories": ["image-classification"], "size_categories": [size_category(total)],
        "tags": ["image-classification", "transfer-learning", "duplicates-checked"],
    })
    return DatasetCard.from_template(DatasetCardData(**data), template_path=str(TEMPLATE), repo_id=repo_id,
                                     noise_sigma=NOISE_SIGMA, text=text, title=text.title_for(repo_id), **report)


def push_dataset(dataset: DatasetDict, report: dict, repo_id: str, output_dir: Path, private: bool = False,
                 text: CardText | None = None) -> str:
    api = HfApi()
    labels = dataset["train"]["label"]
    shown = range(min(len(report["class_names"]), GRID_CLASSES))
    firsts = [i for c in shown for i in [j for j, v in enumerate(labels) if v == c][:3]]
    picks = dataset["train"].select(firsts)["image"]
    grid = save_augmentation_grid(picks, GRID_CONFIG, output_dir / "augmentation_grid.png")
    title = (text or CardText()).title_for(repo_id)
    with hub_errors(f"pushing dataset {repo_id}"):
        dataset.push_to_hub(repo_id, private=private, commit_message=f"Upload checked {title} splits")
        pushed = DatasetCard.load(repo_id, repo_type="dataset")  # holds the YAML that datasets just wrote
        card = render_card(report, repo_id, pushed.data.to_dict(), text)
        operations = [
            CommitOperationAdd("README.md", str(card).encode()),
            CommitOperationAdd("report.json", json.dumps(report, indent=2).encode()),
            CommitOperationAdd("augmentation_grid.png", str(grid)),
        ]
        info = api.create_commit(repo_id, operations, repo_type="dataset",
                                 commit_message="Dataset card, check report and augmentation samples")
    return info.commit_url
