"""Image folder -> checked ``DatasetDict`` (Image + ClassLabel) -> the Hub, with a report and a card.

    python -m training.dataset --data_dir path/to/leaves --dataset_id you/leaves --push_to_hub \
        --title "Leaves" --license cc-by-4.0

Layouts, checks and the report: ``training/pipeline/folder.py`` (a seeded, stratified, leak-free
validation split for a single folder; every file decoded by content; exact and near duplicates).
"""

from __future__ import annotations

import json
from pathlib import Path

from .cli import RepoIdFlag, parse
from .pipeline.folder import DatasetArguments, build_dataset, leak_summary

DEPRECATED = (RepoIdFlag("push_to_hub", "dataset_id"),)


def main() -> None:
    args = parse(DatasetArguments, __doc__, deprecated=DEPRECATED)
    dataset, report = build_dataset(args)
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
