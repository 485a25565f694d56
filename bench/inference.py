"""Space inference at batch 1: predict alone vs predict + each CAM method, fp32 vs bf16.

    python -m bench.inference [--repeat N] [--quick] [--model_dir outputs/demo/alien-vs-predator/train/model]

Also a full-backward Grad-CAM (pytorch-grad-cam on the whole network, input gradients on), the
usual way, for the overhead ratio; with ``--model_dir`` (a trained model), the top-1 agreement of
bf16 with fp32 on the validation split; and the peak RSS of a real Space process with ResNet50
(``bench.space_process``, in a fresh process: this one has imported pytorch-grad-cam).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from bench.common import LITE0, ROOT, SHARED, machine, p50, p95, table, timed
from space import image_io, inference  # noqa: E402


def full_backward_grad_cam(model, image, classifier) -> None:
    x = classifier.transform(image).unsqueeze(0).requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(True)
    GradCAM(model=model, target_layers=[model.conv_head if hasattr(model, "conv_head") else model.layer4])(
        input_tensor=x, targets=[ClassifierOutputTarget(0)])
    for p in model.parameters():
        p.requires_grad_(False)


def bench_model(name: str, model, image, repeat: int) -> list[list]:
    rows = []
    for precision in ("no", "bf16"):
        classifier = inference.Classifier(model, precision=precision)
        alone = timed(lambda c=classifier: c.predict(image, None), repeat)
        rows.append([name, precision, "predict alone", f"{p50(alone):.1f}", f"{p95(alone):.1f}", "1.00"])
        for method in inference.CAM_METHODS:
            t = timed(lambda c=classifier, m=method: inference.overlay(image, c.predict(image, m).cam), repeat)
            rows.append([name, precision, f"+ {method} (+ overlay)", f"{p50(t):.1f}", f"{p95(t):.1f}",
                         f"{p50(t) / p50(alone):.2f}"])
        if precision == "no":
            t = timed(lambda c=classifier: full_backward_grad_cam(model, image, c), max(3, repeat // 4))
            rows.append([name, precision, "Grad-CAM, full backward (usual)", f"{p50(t):.1f}", f"{p95(t):.1f}",
                         f"{p50(t) / p50(alone):.2f}"])
    return rows


def bf16_agreement(model_dir: str) -> str:
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True)
    fp32, bf16 = inference.Classifier(model, "no"), inference.Classifier(model, "bf16")
    files = sorted((SHARED / "data" / "alien-vs-predator" / "validation").glob("*/*.jpg"))
    agree, worst = 0, 0.0
    for f in files:
        image = image_io.load_upload(f)
        a, b = fp32.predict(image, None).confidences, bf16.predict(image, None).confidences
        agree += max(a, key=a.get) == max(b, key=b.get)
        worst = max(worst, max(abs(a[k] - b[k]) for k in a))
    return f"bf16 vs fp32 top-1 agreement on validation: {agree}/{len(files)}; max probability difference {worst:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model_dir", default=None, help="a trained model folder for the bf16 agreement check")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    torch.manual_seed(0)
    image = image_io.load_upload(SHARED / "data" / "alien-vs-predator" / "validation" / "alien" / "3.jpg")
    models = {"resnet50 @224": timm.create_model("resnet50", pretrained=False, num_classes=2)}
    if not args.quick:
        models["lite0 @224"] = timm.create_model(LITE0, pretrained=True, num_classes=2)
    rows = []
    for name, model in models.items():
        rows += bench_model(name, model, image, repeat)
    print(f"batch-1 latency in ms (p50, p95 over {repeat} runs), {image.size[0]}×{image.size[1]} image; {machine()}")
    print(table(rows, ["model", "precision", "what", "p50 ms", "p95 ms", "× predict"]))
    if args.model_dir:
        print(bf16_agreement(args.model_dir))
    space = subprocess.run([sys.executable, "-m", "bench.space_process"], cwd=ROOT, capture_output=True,
                           text=True, check=True)
    print(space.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
