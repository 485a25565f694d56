"""Image folder -> checked ``DatasetDict`` (Image + ClassLabel) -> the Hub, with a report and a card.

    python -m training.dataset --data_dir path/to/leaves --dataset_id you/leaves --push_to_hub \
        --title "Leaves" --license cc-by-4.0

Layouts, checks and the report: ``training/pipeline/data/folder.py`` (a seeded, stratified, leak-free
validation split for a single folder; every file decoded by content; exact and near duplicates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .cli import RepoIdFlag, parse, require
from .pipeline.data.folder import FolderRecipe, build_dataset, leak_summary
from .pipeline.data.images import NEAR_DUPLICATE_BITS

DEPRECATED = (RepoIdFlag("push_to_hub", "dataset_id"),)


@dataclass
class DatasetArguments:
    data_dir: str = field(metadata={"help": "train/ and validation/ with a folder per class, or a folder per class"})
    dataset_id: str | None = field(default=None, metadata={"help": "dataset repo id (with --push_to_hub)"})
    push_to_hub: bool = field(default=False, metadata={"help": "push the dataset and its card to --dataset_id"})
    private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    validation_fraction: float = field(default=0.2, metadata={
        "help": "without a validation/ folder: the share of each class held out for validation"})
    seed: int = field(default=42, metadata={"help": "seed of that split"})
    title: str | None = field(default=None, metadata={"help": "the card's title (default: from the repo name)"})
    description: str | None = field(default=None, metadata={
        "help": "the card's opening paragraph: what the images are, where they come from (markdown)"})
    license: str = field(default="unknown", metadata={"help": "Hub licence id of the images, e.g. cc-by-4.0"})
    citation: str | None = field(default=None, metadata={"help": "BibTeX for the card's Citation section"})
    skip_bad_files: bool = field(default=False, metadata={"help": "leave out unreadable files (listed in the report)"})
    output_dir: str = field(default="outputs/dataset", metadata={"help": "where report.json and the grid go"})
    near_duplicate_threshold: int = field(default=NEAR_DUPLICATE_BITS,
                                          metadata={"help": "max pHash Hamming distance (of 64 bits)"})

    def __post_init__(self) -> None:
        require(not self.push_to_hub or bool(self.dataset_id), "--push_to_hub needs --dataset_id (the repo to push to)")
        require(0 < self.validation_fraction < 1,
                f"--validation_fraction must be between 0 and 1, got {self.validation_fraction}")

    def folder(self) -> FolderRecipe:
        return FolderRecipe(self.data_dir, self.validation_fraction, self.seed, self.near_duplicate_threshold,
                            self.skip_bad_files)



def main() -> None:
    args = parse(DatasetArguments, __doc__, deprecated=DEPRECATED)
    dataset, report = build_dataset(args.folder())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(f"built {', '.join(f'{s}: {len(d)}' for s, d in dataset.items())} ({len(report['class_names'])} classes, "
          f"largest/smallest {report['imbalance']['ratio']}); report: {output_dir / 'report.json'}")
    print(leak_summary(report))
    if args.push_to_hub:
        from .publishing.dataset_card import CardText, push_dataset

        text = CardText(args.title, args.description, args.license, args.citation)
        url = push_dataset(dataset, report, args.dataset_id, output_dir, private=args.private, text=text)
        print(f"pushed dataset {args.dataset_id}: {url}")


if __name__ == "__main__":
    from .cli import run

    run(main)
