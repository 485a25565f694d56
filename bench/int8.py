"""Static int8 for the ONNX model: does it keep the fp32 model's answers, and is it faster here?

    python -m bench.int8 --model_dir outputs/demo/alien-vs-predator/train/model

Quantizes ``onnx/model.onnx`` with ONNX Runtime's static quantization (QDQ, per-channel weights,
activations calibrated on training images only), then compares it with the fp32 graph on every
validation image (top-1 agreement, the largest probability gap, through the Space's own
preprocessing and calibrated head) and times both at batch 32 and batch 1, side by side. The
project ships int8 only if the top-1 agrees on at least 99.5 % of validation images.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.common import SHARED, machine, table, timed
from space.image_io import load_upload
from space.inference import ONNX_FILE, Classifier

AGREEMENT_NEEDED = 0.995


def calibration_reader(classifier: Classifier, files: list[Path]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixel_values": classifier.transform(load_upload(f))[None]} for f in files])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def images_per_second(classifier: Classifier, pixels: np.ndarray, repeat: int = 3) -> float:
    """Best of ``repeat`` after one warm-up."""
    return len(pixels) / (min(timed(lambda: classifier.forward(pixels), repeat, warmup=1)) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_dir", default="outputs/demo/alien-vs-predator/train/model")
    parser.add_argument("--calibration_images", type=int, default=64)
    args = parser.parse_args()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data = SHARED / "data" / "alien-vs-predator"
    fp32 = Classifier(args.model_dir)
    train = sorted((data / "train").glob("*/*.jpg"))
    calibration = train[:: max(1, len(train) // args.calibration_images)][: args.calibration_images]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copy_model(Path(args.model_dir), tmp)
        quant_pre_process(str(tmp / ONNX_FILE), str(tmp / "pre.onnx"))
        quantize_static(str(tmp / "pre.onnx"), str(tmp / ONNX_FILE), calibration_reader(fp32, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        int8 = Classifier(tmp)
        size = {"fp32": (Path(args.model_dir) / ONNX_FILE).stat().st_size, "int8": (tmp / ONNX_FILE).stat().st_size}
    files = sorted((data / "validation").glob("*/*.jpg"))
    pixels = np.stack([fp32.transform(load_upload(f)) for f in files])
    answers = {}
    for name, classifier in (("fp32", fp32), ("int8", int8)):
        pooled = np.concatenate([classifier.forward(pixels[i:i + 25])[1] for i in range(0, len(pixels), 25)])
        answers[name] = np.array([list(p.confidences.values()) for p in fp32.decide(pooled)])
    agree = float((answers["fp32"].argmax(1) == answers["int8"].argmax(1)).mean())
    truth = np.array([fp32.labels.index(f.parent.name) for f in files])
    rows = []
    for name, classifier in (("fp32", fp32), ("int8", int8)):
        rows.append([name, f"{size[name] / 2**20:.1f}", f"{images_per_second(classifier, pixels[:32]):.1f}",
                     f"{images_per_second(classifier, pixels[:1], repeat=10):.1f}",
                     f"{(answers[name].argmax(1) == truth).mean():.3f}"])
    print(f"static int8 (QDQ, per-channel, {len(calibration)} training images to calibrate) vs fp32; {machine()}")
    print(table(rows, ["graph", "MB", "img/s batch 32", "img/s batch 1", "validation accuracy"]))
    gap = float(np.abs(answers["fp32"] - answers["int8"]).max())
    verdict = "ships" if agree >= AGREEMENT_NEEDED else "does not ship"
    print(f"top-1 agreement with fp32 on {len(files)} validation images: {agree:.3f} (needed {AGREEMENT_NEEDED}); "
          f"largest probability gap {gap:.3f}: int8 {verdict}")


def copy_model(source: Path, target: Path) -> None:
    for name in ("config.json", "model.safetensors", "ood.safetensors", ONNX_FILE):
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, target / name)


if __name__ == "__main__":
    main()
