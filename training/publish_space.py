"""Publish ``space/`` as a Gradio Space on the Hub, with its YAML and texts filled in and example images.

    python -m training.publish_space --space_id you/leaves --model_id you/leaves-classifier --dataset_id you/leaves \
        --title "Which leaf?"
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Image
from huggingface_hub import HfApi, SpaceCard, hf_hub_download

from space.texts import TITLE_CHARACTERS, page_title

from .cli import parse
from .errors import UserError, hub_errors
from .pipeline.data.splits import measured_validation
from .pipeline.export.results import load_results
from .publishing.static_space import publish_static_space
from .publishing.visibility import check_images_may_go, is_private

SPACE_DIR = Path(__file__).resolve().parents[1] / "space"
# The Space repo: app.py (space/launcher.py), README.md and requirements.txt at its root, the package in space/.
ROOT_FILES = {"launcher.py": "app.py", "README.md": "README.md", "requirements.txt": "requirements.txt"}
PACKAGE_FILES = ("__init__.py", "app.py", "image_io.py", "inference.py", "preprocess.py", "cam.py", "ood.py",
                 "feedback.py", "texts.py")


@dataclass
class SpaceArguments:
    space_id: str = field(metadata={"help": "Space repo id to create or update"})
    model_id: str = field(metadata={"help": "model repo the Space loads"})
    dataset_id: str = field(metadata={"help": "dataset repo the examples come from"})
    max_examples: int = field(default=12, metadata={"help": "example images: one per class up to this many, "
                                                            "plus one the model got wrong"})
    title: str | None = field(default=None, metadata={"help": "the page's title (default: from the class names)"})
    description: str | None = field(default=None, metadata={"help": "one line under the title (markdown)"})
    private: bool = False
    allow_private_images: bool = field(default=False, metadata={
        "help": "let example images of a private dataset go into a public Space"})
    feedback_dataset: str | None = field(default=None, metadata={
        "help": "collect visitors' corrections in this (private) dataset repo; the Space needs HF_TOKEN to write"})
    static_space_id: str | None = field(default=None, metadata={
        "help": "also publish the browser page (web/: the model runs in the visitor's browser) as this static Space"})


def pick_examples(model_id: str, dataset_id: str, cap: int) -> list[tuple[str, bytes]]:
    """One leak-free validation image per class (the first ``cap`` classes), plus the first one the model got
    wrong, as (file name, bytes)."""
    results = load_results(hf_hub_download(model_id, "results.json"))
    run = json.loads(Path(hf_hub_download(model_id, "run.json")).read_text())["args"]
    wrong = {m["file"] for m in results.get("misclassified", [])[:1]}
    # The validation split the model was measured on (made from train, as in training, when the dataset has none).
    validation = measured_validation(dataset_id, run, f"{model_id}'s run.json")
    validation = validation.cast_column("image", Image(decode=False))
    columns = validation.column_names
    files = validation["file"] if "file" in columns else [f"validation/{i}" for i in range(len(validation))]
    leaks = validation["leak"] if "leak" in columns else [False] * len(validation)
    names = validation.features["label"].names
    wanted, chosen = set(range(min(cap, len(names)))), []
    for i, label in enumerate(validation["label"]):
        file = str(files[i])
        if file in wrong or (label in wanted and not leaks[i]):
            wanted.discard(label)
            image = validation[i]["image"]
            data = image["bytes"] or Path(image["path"]).read_bytes()
            suffix = Path(image.get("path") or "").suffix or ".png"
            name = f"{names[label]}_{Path(file).stem}{'_misclassified' if file in wrong else ''}{suffix}"
            chosen.append((name.replace("/", "_"), data))
    return chosen


def published_text(api: HfApi, space_id: str) -> dict:
    """The title and description an existing Space was published with ({} for a new Space)."""
    if not api.repo_exists(space_id, repo_type="space") or not api.file_exists(space_id, "space.json",
                                                                               repo_type="space"):
        return {}
    return json.loads(Path(hf_hub_download(space_id, "space.json", repo_type="space")).read_text())


def publish_space(args: SpaceArguments) -> str:
    if args.feedback_dataset == args.dataset_id:
        raise UserError(f"the feedback dataset {args.feedback_dataset} is the training dataset: visitors' pictures "
                        "would be published with it; name another (for example <dataset>-feedback)")
    check_images_may_go(args.dataset_id, args.space_id, "space", args.private, "the Space's example images",
                        args.allow_private_images)
    api = HfApi()
    if args.feedback_dataset:
        with hub_errors(f"making the feedback dataset {args.feedback_dataset}"):
            api.create_repo(args.feedback_dataset, repo_type="dataset", private=True, exist_ok=True)
        if not is_private(args.feedback_dataset, "dataset"):  # exist_ok keeps an existing repo's visibility
            raise UserError(f"the feedback dataset {args.feedback_dataset} is public: visitors' pictures must stay "
                            "private; make it private or name another")
    with hub_errors(f"publishing Space {args.space_id}"), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, published in ROOT_FILES.items():
            shutil.copy(SPACE_DIR / name, folder / published)
        (folder / "space").mkdir()
        for name in PACKAGE_FILES:
            shutil.copy(SPACE_DIR / name, folder / "space" / name)
        previous = published_text(api, args.space_id)  # a refresh keeps the texts it was published with
        given_title, description = args.title or previous.get("title"), args.description or previous.get("description")
        examples = pick_examples(args.model_id, args.dataset_id, args.max_examples)
        labels = json.loads(Path(hf_hub_download(args.model_id, "config.json")).read_text())["label_names"]
        card = SpaceCard.load(folder / "README.md")
        card.data.models, card.data.datasets = [args.model_id], [args.dataset_id]
        title = given_title or page_title(labels)
        card.data.title = title[:TITLE_CHARACTERS]
        card.data.short_description = (f"{' or '.join(labels) if len(labels) <= 3 else f'{len(labels)} classes'} "
                                       "— or neither? With a CAM heatmap")[:60]
        words = {"title": title, "description": description or "", "class_a": labels[0], "class_b": labels[1]}
        for key, value in words.items():
            card.text = card.text.replace("{{ " + key + " }}", value)
        card.save(folder / "README.md")
        (folder / "space.json").write_text(json.dumps({"title": title, "description": description}))
        if args.feedback_dataset:
            (folder / "feedback.json").write_text(json.dumps({"dataset_id": args.feedback_dataset}))
        (folder / "examples").mkdir()
        for name, data in examples:
            (folder / "examples" / name).write_bytes(data)
        api.create_repo(args.space_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
        info = api.upload_folder(repo_id=args.space_id, repo_type="space", folder_path=folder,
                                 commit_message=f"Space for {args.model_id}",
                                 delete_patterns=["examples/*", "space/*", "*.py"])  # also an older flat layout
    if args.static_space_id:
        publish_static_space(args.static_space_id, args.model_id, title, args.private)
    return info.commit_url


def main() -> None:
    args = parse(SpaceArguments, __doc__)
    print(f"published Space {args.space_id}: {publish_space(args)}")


if __name__ == "__main__":
    from .cli import run

    run(main)
