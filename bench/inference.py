"""The Space's inference at batch 1: ONNX Runtime (what the Space runs) against torch, side by side.

    python -m bench.inference [--repeat N] [--quick] [--model_dir outputs/demo/alien-vs-predator/train/model]

Per model: predict alone and predict + each CAM method (+ overlay), with the Space's Classifier on
ONNX Runtime and the same Classifier on the timm model in torch (fp32, bf16), in one run. The CAM is
the numpy closed form in every row; the usual full-backward Grad-CAM (pytorch-grad-cam through the
whole network) is timed for the ratio. With ``--model_dir`` (a trained model with ``onnx/``), the
top-1 agreement of ONNX and of torch bf16 with torch fp32 on the validation split. The Space process
as a whole (cold start, peak RSS) is ``bench.space_start``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from bench.common import LITE0, SHARED, machine, p50, p95, table, timed
from space import image_io, inference  # noqa: E402
from training.pipeline.export.onnx_export import export_onnx
from training.pipeline.export.torch_classifier import TorchClassifier
from training.pipeline.features.model import save_model


def full_backward_grad_cam(model, pixels: torch.Tensor) -> None:
    x = pixels.clone().requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(True)
    GradCAM(model=model, target_layers=[model.conv_head if hasattr(model, "conv_head") else model.layer4])(
        input_tensor=x, targets=[ClassifierOutputTarget(0)])
    for p in model.parameters():
        p.requires_grad_(False)


def exported(model: torch.nn.Module, folder: Path) -> Path:
    """The model in the repo layout with onnx/model.onnx, as a pushed model has it."""
    save_model(model, ["alien", "predator"], folder, data_config=timm.data.resolve_data_config({}, model=model))
    export_onnx(folder)
    return folder


def runtimes(folder: Path) -> dict:
    return {"onnxruntime": inference.Classifier(folder), "torch fp32": TorchClassifier(str(folder), "no"),
            "torch bf16": TorchClassifier(str(folder), "bf16")}


def bench_model(name: str, folder: Path, image, repeat: int) -> list[list]:
    rows, reference = [], {}
    for runtime, classifier in runtimes(folder).items():
        alone = timed(lambda c=classifier: c.predict(image, None), repeat)
        reference.setdefault("alone", p50(alone))
        rows.append([name, runtime, "predict alone", f"{p50(alone):.1f}", f"{p95(alone):.1f}",
                     f"{p50(alone) / reference['alone']:.2f}"])
        for method in inference.CAM_METHODS:
            t = timed(lambda c=classifier, m=method: inference.overlay(image, c.predict(image, m).cam), repeat)
            reference.setdefault(method, p50(t))
            rows.append([name, runtime, f"+ {method} (+ overlay)", f"{p50(t):.1f}", f"{p95(t):.1f}",
                         f"{p50(t) / reference[method]:.2f}"])
        if runtime == "torch fp32":
            pixels = torch.from_numpy(classifier.transform(image)[None])
            t = timed(lambda c=classifier, x=pixels: full_backward_grad_cam(c.model, x), max(3, repeat // 4))
            rows.append([name, runtime, "Grad-CAM, full backward (usual)", f"{p50(t):.1f}", f"{p95(t):.1f}",
                         f"{p50(t) / reference['Grad-CAM']:.2f}"])
    return rows


def agreement(model_dir: str) -> str:
    """Top-1 agreement with torch fp32 on the validation split: ONNX Runtime and torch bf16."""
    classifiers = runtimes(Path(model_dir))
    files = sorted((SHARED / "data" / "alien-vs-predator" / "validation").glob("*/*.jpg"))
    agree, worst = {"onnxruntime": 0, "torch bf16": 0}, {"onnxruntime": 0.0, "torch bf16": 0.0}
    for f in files:
        image = image_io.load_upload(f)
        reference = classifiers["torch fp32"].predict(image, None).confidences
        for runtime in agree:
            answer = classifiers[runtime].predict(image, None).confidences
            agree[runtime] += max(answer, key=answer.get) == max(reference, key=reference.get)
            worst[runtime] = max(worst[runtime], max(abs(answer[k] - reference[k]) for k in answer))
    return "; ".join(f"{runtime} vs torch fp32 top-1 agreement on validation: {agree[runtime]}/{len(files)}, "
                     f"max probability difference {worst[runtime]:.2e}" for runtime in agree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model_dir", default=None, help="a trained model folder (with onnx/) for the agreement")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    torch.manual_seed(0)
    image = image_io.load_upload(SHARED / "data" / "alien-vs-predator" / "validation" / "alien" / "3.jpg")
    models = {"resnet50 @224": lambda: timm.create_model("resnet50", pretrained=False, num_classes=2)}
    if not args.quick:
        models["lite0 @224"] = lambda: timm.create_model(LITE0, pretrained=True, num_classes=2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make) in enumerate(models.items()):
            rows += bench_model(name, exported(make(), Path(tmp) / str(i)), image, repeat)
    print(f"batch-1 latency in ms (p50, p95 over {repeat} runs), {image.size[0]}×{image.size[1]} image; {machine()}; "
          "the last column: this row's p50 / the onnxruntime row's")
    print(table(rows, ["model", "runtime", "what", "p50 ms", "p95 ms", "× onnxruntime"]))
    if args.model_dir:
        print(agreement(args.model_dir))


if __name__ == "__main__":
    main()
