"""The offline end-to-end job behind ``make demo``, against whatever Hub HF_ENDPOINT names.

    python -m training.demo --data_dir path/to/leaves --name leaves --title "Leaves" [@more.args]


1. mirror ``../shared/weights/<name>`` to the Hub as ``timm/<name>`` (so ``hf-hub:`` ids work offline),
2. check, build and push the dataset with its card,
3. train the frozen-backbone model from the Hub dataset (calibrated, with its "neither" score), measure
   its heatmaps' faithfulness, push it with its card, and check the card's headline with the
   transformers pipeline on the pushed repo,
4. publish the Gradio Space that serves it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi

from .cli import check_choice, parse
from .errors import UserError, hub_errors
from .pipeline.data.folder import FolderRecipe, build_dataset, leak_summary
from .pipeline.features.model import DEFAULT_BACKBONE
from .pipeline.features.runtime import RUNTIMES
from .pipeline.features.tuning import STAGE_CHOICES
from .publish_space import SpaceArguments, publish_space
from .publishing.dataset_card import CardText, push_dataset
from .train import TrainArguments, release


@dataclass
class DemoArguments:
    data_dir: str = field(metadata={"help": "the image folder (training.dataset's layouts)"})
    weights_dir: str = field(default="../shared/weights", metadata={"help": "timm Hub-layout folders to mirror"})
    namespace: str = field(default="demo", metadata={"help": "namespace for the dataset, model and Space repos"})
    name: str | None = field(default=None, metadata={
        "help": "repo names: <name> (dataset, Space), <name>-classifier, <name>-feedback (default: the folder's)"})
    title: str | None = field(default=None, metadata={"help": "title of the cards and the Space"})
    description: str | None = field(default=None, metadata={"help": "what the images are (markdown, one line)"})
    license: str = field(default="unknown", metadata={"help": "Hub licence id of the images"})
    citation: str | None = field(default=None, metadata={"help": "BibTeX of the images' source (one line)"})
    backbone: str = field(default=DEFAULT_BACKBONE,
                          metadata={"help": "resnet50.tv_in1k on a connected machine"})
    runtime: str = field(default="auto", metadata={
        "help": "what runs the frozen backbone: torch, onnxruntime or auto (the fastest, measured here)"})
    unfreeze_last_stages: str = field(default="0", metadata={
        "help": "tune the backbone's last N stages (1 or 2) before the head; 0: frozen; auto: measured on the "
                "train holdout (training.train --help)"})
    output_dir: str = field(default="outputs/demo", metadata={"help": "the run goes to <output_dir>/<name>"})

    def __post_init__(self) -> None:
        check_choice("runtime", self.runtime, RUNTIMES)
        check_choice("unfreeze_last_stages", self.unfreeze_last_stages, STAGE_CHOICES)
    study_dir: str = field(default="outputs/study", metadata={"help": "put this study in the card, if present"})


def mirror_weights(weights_dir: Path) -> list[str]:
    """Upload each ``<weights_dir>/<name>`` folder as the model repo ``timm/<name>`` (skipped if present)."""
    if not weights_dir.is_dir():
        raise UserError(f"{weights_dir}: no such folder of pretrained weights")
    api, mirrored = HfApi(), []
    for folder in sorted(p for p in weights_dir.iterdir() if (p / "model.safetensors").is_file()):
        repo_id = f"timm/{folder.name}"
        with hub_errors(f"mirroring {folder} to {repo_id}"):
            api.create_repo(repo_id, exist_ok=True)
            if "model.safetensors" not in api.list_repo_files(repo_id):
                api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Mirror of the shared weights")
        mirrored.append(repo_id)
    return mirrored


def pipeline_accuracy(model_id: str, dataset_id: str) -> float:
    """Validation accuracy of ``pipeline("image-classification")`` on the pushed repo: what a user gets."""
    from datasets import load_dataset
    from transformers import pipeline

    validation = load_dataset(dataset_id, split="validation")
    names = validation.features["label"].names
    classifier = pipeline("image-classification", model=model_id)
    outputs = classifier([image.convert("RGB") for image in validation["image"]], top_k=1, batch_size=16)
    return sum(out[0]["label"] == names[label] for out, label in zip(outputs, validation["label"], strict=True)) \
        / len(validation)


def span(interval: dict | None, name: str) -> str:
    """`` (90 % interval a-b)`` for a small validation split, else nothing."""
    return f" (90 % interval {interval[name][0]:.3f}-{interval[name][1]:.3f})" if interval else ""


def figures(results: dict, faithfulness: dict, on_the_hub: float) -> str:
    """The demo's figures, as a user gets them: validation, calibration, "neither", the heatmaps' faithfulness."""
    full, clean = results["validation"], results["validation_leak_free"]
    calibration, ood = results["calibration"], results["ood"]
    used, answered = ood["methods"][ood["method"]], ood["validation"]
    interval = full.get("interval_90")
    return (f"      validation accuracy {full['accuracy']:.4f}{span(interval, 'accuracy')} (all {full['n']}), "
            f"{clean['accuracy']:.4f} (leak-free {clean['n']}); macro F1 {full['f1']:.4f}{span(interval, 'f1')}; "
            f"pipeline on the pushed repo: {on_the_hub:.4f}\n"
            f"      calibration: T {calibration['temperature']:.3f}, ECE {calibration['validation_before']['ece']:.4f} "
            f"-> {calibration['validation_after']['ece']:.4f} (90 % interval "
            f"{'-'.join(f'{e:.3f}' for e in calibration['validation_after']['ece_interval_90'])}), "
            f"NLL {calibration['validation_before']['nll']:.4f} -> {calibration['validation_after']['nll']:.4f}\n"
            f"      neither ({ood['method']}): validation {answered['sure']:.1%} sure, {answered['unsure']:.1%} "
            f"unsure, {answered['neither']:.1%} neither; OOD test half: AUROC {used['auroc_test']:.4f}, "
            f"{used['ood_test']['neither']:.1%} neither, {used['ood_test']['unsure']:.1%} unsure "
            f"(of {ood['ood_images']} OOD images)\n"
            f"      heatmaps: most faithful {faithfulness['best']} (deletion "
            f"{faithfulness['methods'][faithfulness['best']]['deletion_mean']:.3f}, insertion "
            f"{faithfulness['methods'][faithfulness['best']]['insertion_mean']:.3f})")


def main() -> None:
    args = parse(DemoArguments, __doc__)
    name = args.name or Path(args.data_dir).resolve().name
    output_dir, clock = Path(args.output_dir) / name, time.time()
    dataset_id = f"{args.namespace}/{name}"
    model_id, space_id, browser_id = f"{dataset_id}-classifier", dataset_id, f"{dataset_id}-browser"

    def step(text: str) -> None:
        nonlocal clock
        print(f"{text}  [{time.time() - clock:.0f} s]", flush=True)
        clock = time.time()

    step(f"[1/4] weights mirrored: {', '.join(mirror_weights(Path(args.weights_dir)))}")
    dataset, report = build_dataset(FolderRecipe(data_dir=args.data_dir))
    push_dataset(dataset, report, dataset_id, output_dir / "dataset",
                 text=CardText(args.title, args.description, args.license, args.citation))
    step(f"[2/4] dataset pushed: {dataset_id} ({len(report['class_names'])} classes; "
          f"{', '.join(f'{s} {len(d)}' for s, d in dataset.items())}); "
          f"{leak_summary(report)}")
    train_args = TrainArguments(dataset_id=dataset_id, backbone=args.backbone, output_dir=str(output_dir / "train"),
                                study_dir=args.study_dir, model_id=model_id, runtime=args.runtime,
                                unfreeze_last_stages=args.unfreeze_last_stages,
                                title=f"{args.title} classifier" if args.title else None)
    released = release(train_args, study_dir=Path(args.study_dir))
    results = released.results
    step(f"[3/4] model pushed: {model_id}; {args.backbone}, seed {train_args.seed}\n"
          + figures(results, released.faithfulness, pipeline_accuracy(model_id, dataset_id)))
    for line in results["not_measured"]:
        print(f"      not measured: {line}")
    publish_space(SpaceArguments(space_id=space_id, model_id=model_id, dataset_id=dataset_id, title=args.title,
                                 description=args.description, feedback_dataset=f"{dataset_id}-feedback",
                                 static_space_id=browser_id))
    step(f"[4/4] Space published: {space_id} — run it with `make space NAME={name}` (http://127.0.0.1:7860); "
          f"visitors' corrections go to {dataset_id}-feedback (private)")
    print(f"      the model in the browser: {browser_id} (static Space), open "
          f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co').rstrip('/')}/static-spaces/{browser_id}/index.html"
          " on the local Hub")
    print(f"\ndataset {dataset_id}\nmodel   {model_id}\nspace   {space_id}\nbrowser {browser_id}")


if __name__ == "__main__":
    from .cli import run

    run(main)
