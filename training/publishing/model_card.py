"""Push a saved model (``pipeline/model.save_model``) with its model card and the run's evidence."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData

from ..errors import hub_errors
from ..pipeline.evaluate.metrics import MANY_CLASSES
from ..pipeline.export.outputs import EVIDENCE, IMAGE_EVIDENCE, STUDY_FILES, UPLOADED
from ..pipeline.export.results import Results, load_results
from .visibility import check_images_may_go

TEMPLATE = Path(__file__).resolve().parents[2] / "model_card" / "template.md"


def base_model_id(backbone: str) -> str | None:
    """The Hub id the backbone's weights came from (``hf-hub:timm/x`` -> ``timm/x``; ``resnet50.tv_in1k`` ->
    ``timm/resnet50.tv_in1k``)."""
    if backbone.startswith("hf-hub:"):
        return backbone.removeprefix("hf-hub:").split("@")[0]
    if backbone.startswith(("local-dir:", "/", ".")):
        return None
    return f"timm/{backbone}" if "." in backbone else None


def render_card(results: Results, args, repo_id: str, study: dict | None = None,
                faithfulness: dict | None = None, onnx: dict | None = None) -> ModelCard:
    full, clean = results["validation"], results["validation_leak_free"]
    dataset_id = args.dataset_id
    class_names = list(full["per_class"])

    def metric(kind: str, value: float, name: str, config: str) -> EvalResult:
        return EvalResult(task_type="image-classification", dataset_type=dataset_id,
                          dataset_name=dataset_id.rstrip("/").split("/")[-1],
                          dataset_split="validation", dataset_config=config, metric_type=kind,
                          metric_value=round(value, 4), metric_name=name)

    eval_results = [
        metric("accuracy", full["accuracy"], f"Accuracy (all {full['n']})", "all"),
        metric("f1", full["f1"], f"F1 macro (all {full['n']})", "all"),
        metric("accuracy", clean["accuracy"], f"Accuracy (leak-free {clean['n']})", "leak-free"),
        metric("f1", clean["f1"], f"F1 macro (leak-free {clean['n']})", "leak-free"),
    ]
    base = base_model_id(args.backbone)
    data = ModelCardData(
        library_name="timm", pipeline_tag="image-classification", license=args.license,
        datasets=[dataset_id], base_model=base, tags=["image-classification", "timm", "transfer-learning",
                                                      "tuned-last-stages" if results.get("stages", {}).get("chosen")
                                                      else "frozen-backbone"],
        model_name=repo_id.split("/")[-1], eval_results=eval_results,
    )
    title = args.title or repo_id.split("/")[-1]
    return ModelCard.from_template(data, template_path=str(TEMPLATE), repo_id=repo_id, results=results,
                                   title=title, class_names=class_names, onnx=onnx, many_classes=MANY_CLASSES,
                                   args=asdict(args), base_model=base, study=study, faithfulness=faithfulness,
                                   run=json.loads(Path(args.output_dir, "run.json").read_text()))


def push_model(output_dir: Path, repo_id: str, args, private: bool = False, study_dir: Path | None = None,
               message: str | None = None, create_pr: bool = False, description: str | None = None) -> CommitInfo:
    """Upload the saved model, its card and the run's evidence as one commit (on ``main``, or as a pull
    request with ``create_pr``); returns the commit's info (``commit_url``, ``pr_num``).

    ``study_dir`` holding ``study.json``/``study.png`` (from ``training.study``) adds the study to the card.
    """
    results = load_results(output_dir / "results.json")
    evidence = {name: output_dir / name for name in EVIDENCE}
    if study_dir is not None and (study_dir / "study.json").is_file():
        evidence.update({name: study_dir / name for name in STUDY_FILES})
    study = json.loads(evidence["study.json"].read_text()) if "study.json" in evidence else None
    faithfulness = (json.loads(evidence["faithfulness.json"].read_text())
                    if evidence["faithfulness.json"].is_file() else None)
    onnx = json.loads(evidence["onnx.json"].read_text()) if evidence["onnx.json"].is_file() else None
    card = render_card(results, args, repo_id, study, faithfulness, onnx)
    (output_dir / "model" / "README.md").write_text(str(card))
    for name, path in evidence.items():
        if path.is_file():
            (output_dir / "model" / name).write_bytes(path.read_bytes())
    full, clean = results["validation"], results["validation_leak_free"]
    message = message or (f"Train {args.backbone} head: validation accuracy {full['accuracy']:.4f} "
                          f"(leak-free {clean['accuracy']:.4f})")
    if any((output_dir / "model" / name).is_file() for name in IMAGE_EVIDENCE):
        check_images_may_go(args.dataset_id, repo_id, "model", private, f"the card's {' and '.join(IMAGE_EVIDENCE)}",
                            args.allow_private_images)
    api = HfApi()
    with hub_errors(f"pushing model {repo_id}"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=output_dir / "model", commit_message=message,
                                 commit_description=description, allow_patterns=list(UPLOADED), create_pr=create_pr)
