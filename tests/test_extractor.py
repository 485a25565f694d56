"""The frozen backbone as a feature extractor: compiled features match eager ones, precision choice."""

import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator

from tests.conftest import ROOT
from training.errors import UserError
from training.pipeline.features.extractor import choose_precision, compile_pays, cpu_has_bf16, feature_extractor
from training.pipeline.features.model import build_model


@pytest.fixture(scope="module")
def lite0_random():
    torch.manual_seed(0)
    return build_model("tf_efficientnet_lite0", num_classes=2, pretrained=False).eval()


@pytest.mark.slow
def test_compiled_features_match_eager_and_pad_short_batches(lite0_random):
    torch.manual_seed(1)
    batches = [torch.randn(4, 3, 96, 96), torch.randn(3, 3, 96, 96)]  # a short last batch
    eager = feature_extractor(lite0_random, "no")
    compiled = feature_extractor(lite0_random, "no", compiled=True)
    with torch.inference_mode():
        expected = [eager(b) for b in batches]
        got = [compiled(b) for b in batches]
    assert [g.shape for g in got] == [(4, 1280), (3, 1280)]
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in got)
    for e, g in zip(expected, got, strict=True):  # BatchNorm folded into the convolutions: rounding only
        assert torch.allclose(e, g, rtol=1e-3, atol=1e-3), (e - g).abs().max()
    # the saved model is untouched: fp32, contiguous, still a plain timm model
    assert next(lite0_random.parameters()).dtype == torch.float32
    assert lite0_random.conv_stem.weight.is_contiguous()


def test_a_failing_compilation_falls_back_to_eager(lite0_random):
    extractor = feature_extractor(lite0_random, "no", compiled=True)

    def broken(pixels):
        raise RuntimeError("inductor: no working C++ compiler found")

    extractor.run = broken
    pixels = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), pytest.warns(UserWarning, match="torch.compile failed .*no working C"):
        features = extractor(pixels)
    with torch.inference_mode():
        assert torch.equal(features, feature_extractor(lite0_random, "no")(pixels))
    assert not extractor.compiled


def test_bf16_extractor_is_close_to_fp32(lite0_random):
    pixels = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        fp32 = feature_extractor(lite0_random, "no")(pixels)
        bf16 = feature_extractor(lite0_random, "bf16")(pixels)
    assert bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min() > 0.98


def test_auto_precision_is_measured(lite0_random):
    accelerator = Accelerator(cpu=True)
    precision, speeds = choose_precision("auto", lite0_random, (3, 64, 64), accelerator)
    if cpu_has_bf16():
        assert set(speeds) == {"no", "bf16"} and all(v > 0 for v in speeds.values())
        assert precision == ("bf16" if speeds["bf16"] >= 1.15 * speeds["no"] else "no")
    else:
        assert (precision, speeds) == ("no", {})
    assert choose_precision("fp16", lite0_random, (3, 64, 64), accelerator) == ("fp16", {})
    with pytest.raises(UserError, match="--mixed_precision must be one of auto, bf16, fp16, no, got 'fp8'"):
        choose_precision("fp8", lite0_random, (3, 64, 64), accelerator)


def test_compile_only_when_it_pays():
    assert compile_pays("auto", 5000) and not compile_pays("auto", 500)
    assert compile_pays("yes", 1) and not compile_pays("no", 10**6)
    with pytest.raises(UserError, match="--torch_compile must be auto, yes or no, got 'maybe'"):
        compile_pays("maybe", 10)


@pytest.mark.slow
def test_keep_freed_memory_stops_the_page_faults():
    # In a child process: the setting is process-wide and stays.
    probe = """
import resource, sys, torch
from training.pipeline.features.extractor import keep_freed_memory
def faults_per_round():
    for _ in range(2):  # warm: the heap grows to fit the block (alignment may take a second try)
        torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # 64 MiB, like a batch's activations
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
default = faults_per_round()
kept = keep_freed_memory()
print(default, kept, faults_per_round())
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    default, kept, after = result.stdout.split()
    assert kept == "True"
    assert float(default) > 10_000  # 64 MiB = 16,384 pages, faulted in again on every allocation
    assert float(after) < float(default) / 4  # steady state: none; at most a rare heap extension


def _real_pixels(count: int) -> torch.Tensor:
    from PIL import Image

    from space.preprocess import EvalTransform
    from tests.conftest import DATA_DIR

    transform = EvalTransform({"input_size": (3, 224, 224), "crop_pct": 1.0, "interpolation": "bicubic",
                               "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})
    files = sorted((DATA_DIR / "train").glob("*/*.jpg"))[::40][:count]
    return torch.stack([torch.from_numpy(transform(Image.open(f))) for f in files])


def test_onnxruntime_features_equal_torch_features(tmp_path):
    from tests.conftest import WEIGHTS_DIR
    from training.pipeline.features.runtime import OnnxPooledFeatures

    model = build_model(f"local-dir:{WEIGHTS_DIR / 'tf_efficientnet_lite0.in1k'}", 2).eval()  # ImageNet weights
    onnx = OnnxPooledFeatures(model, (3, 224, 224), tmp_path / "backbone.onnx", Accelerator(cpu=True))
    pixels = _real_pixels(10)
    with torch.inference_mode():
        expected = feature_extractor(model, "no")(pixels)
        got = torch.cat([onnx(pixels[:7]), onnx(pixels[7:])])  # dynamic batch, a short last one
    assert got.shape == expected.shape == (10, 1280) and got.dtype == torch.float32
    assert (got - expected).abs().max() <= 1e-4
    assert expected.std(0).mean() > 0.05  # real features: the comparison means something
    assert all(not p.requires_grad for n, p in model.named_parameters() if not n.startswith("classifier"))


def test_auto_runtime_is_measured_and_explicit_choices_are_kept(lite0_random, tmp_path):
    from training.pipeline.features.runtime import choose_runtime

    accelerator = Accelerator(cpu=True)
    runtime, precision, speeds = choose_runtime("auto", "auto", lite0_random, (3, 96, 96), accelerator,
                                                tmp_path / "a.onnx")
    assert {"torch fp32", "onnxruntime"} <= set(speeds) and all(v > 0 for v in speeds.values())
    assert ("torch bf16" in speeds) == cpu_has_bf16()
    fastest_fp32 = max(("torch fp32", "onnxruntime"), key=speeds.get)
    assert (runtime, precision) in (("torch", "bf16"), (fastest_fp32.split()[0], "no"))
    assert choose_runtime("onnxruntime", "auto", lite0_random, (3, 96, 96), accelerator, tmp_path / "b.onnx") == \
        ("onnxruntime", "no", {})
    assert choose_runtime("torch", "no", lite0_random, (3, 96, 96), accelerator, tmp_path / "c.onnx") == \
        ("torch", "no", {})
    with pytest.raises(UserError, match="--runtime onnxruntime runs fp32"):
        choose_runtime("onnxruntime", "bf16", lite0_random, (3, 96, 96), accelerator, tmp_path / "d.onnx")
