"""Publish ``space/`` as a Gradio Space on the Hub, with its YAML filled in and example images.

    python -m training.publish_space --space_id demo/alien-vs-predator --model_id demo/alien-vs-predator-classifier \
        --dataset_id demo/alien-vs-predator
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Image, load_dataset
from huggingface_hub import HfApi, SpaceCard, hf_hub_download

from .errors import hub_errors

SPACE_DIR = Path(__file__).resolve().parent.parent / "space"
SPACE_FILES = ("app.py", "image_io.py", "inference.py", "cam.py", "ood.py", "feedback.py", "requirements.txt",
               "README.md")


@dataclass
class SpaceArguments:
    space_id: str = field(metadata={"help": "Space repo id to create or update"})
    model_id: str = field(metadata={"help": "model repo the Space loads"})
    dataset_id: str = field(metadata={"help": "dataset repo the examples come from"})
    examples_per_class: int = 3
    private: bool = False
    feedback_dataset: str | None = field(default=None, metadata={
        "help": "collect visitors' corrections in this (private) dataset repo; the Space needs HF_TOKEN to write"})


def pick_examples(model_id: str, dataset_id: str, per_class: int) -> list[tuple[str, bytes]]:
    """A few validation images of each class, plus the first one the model got wrong (if any)."""
    results = json.loads(Path(hf_hub_download(model_id, "results.json")).read_text())
    wrong = [m["file"] for m in results.get("misclassified", [])][:1]
    validation = load_dataset(dataset_id, split="validation").cast_column("image", Image(decode=False))
    names = validation.features["label"].names
    chosen, counts = [], dict.fromkeys(range(len(names)), 0)
    for row in validation:
        if row["file"] in wrong or (counts[row["label"]] < per_class and not row["leak"]):
            counts[row["label"]] += 1
            chosen.append((row["file"], row["image"]["bytes"]))
    return chosen


def publish_space(args: SpaceArguments) -> str:
    api = HfApi()
    with hub_errors(f"publishing Space {args.space_id}"), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in SPACE_FILES:
            shutil.copy(SPACE_DIR / name, folder / name)
        card = SpaceCard.load(folder / "README.md")
        card.data.models, card.data.datasets = [args.model_id], [args.dataset_id]
        card.save(folder / "README.md")
        if args.feedback_dataset:
            api.create_repo(args.feedback_dataset, repo_type="dataset", private=True, exist_ok=True)
            (folder / "feedback.json").write_text(json.dumps({"dataset_id": args.feedback_dataset}))
        (folder / "examples").mkdir()
        for file, data in pick_examples(args.model_id, args.dataset_id, args.examples_per_class):
            (folder / "examples" / file.replace("/", "_").removeprefix("validation_")).write_bytes(data)
        api.create_repo(args.space_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
        info = api.upload_folder(repo_id=args.space_id, repo_type="space", folder_path=folder,
                                 commit_message=f"Space for {args.model_id}", delete_patterns=["examples/*"])
    return info.commit_url


def main() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(SpaceArguments).parse_args_into_dataclasses()
    print(f"published Space {args.space_id}: {publish_space(args)}")


if __name__ == "__main__":
    from .errors import run_cli

    run_cli(main)
