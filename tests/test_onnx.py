"""ONNX: numpy preprocessing = timm's, numpy CAM = autograd's, the export's parity gate, the card's snippet."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from space.cam import CAM_METHODS, class_activation_map
from space.image_io import to_rgb
from space.inference import Classifier
from space.preprocess import EvalTransform
from tests.conftest import DATA_DIR
from tests.reference_cam import torch_cam
from training.errors import UserError
from training.pipeline.export import onnx_export
from training.pipeline.export.torch_classifier import TorchClassifier
from training.pipeline.features.model import save_model

MODES = ("RGB", "L", "LA", "RGBA", "P", "CMYK", "1", "I;16", "I", "F")
SIZES = ((300, 200), (17, 251), (224, 224), (225, 223), (640, 480), (50, 40), (1, 9))


def _image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return image.convert("L").convert(mode) if mode in ("I;16", "I", "F") else image.convert(mode)


@pytest.mark.parametrize("overrides", [{}, {"crop_pct": 0.875, "interpolation": "bilinear"},
                                       {"crop_mode": "squash", "crop_pct": 0.9}, {"crop_pct": 1.15},
                                       {"input_size": (3, 97, 97), "crop_pct": 0.95, "interpolation": "lanczos"}])
def test_numpy_preprocessing_equals_timm_eval_transform_bit_for_bit(overrides):
    cfg = {**timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg, **overrides}
    reference = timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=cfg))
    ours = EvalTransform(cfg)
    for i, (mode, size) in enumerate((m, s) for m in MODES for s in SIZES):
        image = _image(mode, size, i)
        expected = reference(to_rgb(image))
        assert torch.equal(torch.from_numpy(ours(image)), expected), (mode, size)


def test_unsupported_preprocessing_is_named():
    cfg = timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    with pytest.raises(ValueError, match="crop_mode 'border'"):
        EvalTransform({**cfg, "crop_mode": "border"})


def _separating_head(model: torch.nn.Module) -> torch.nn.Module:
    """A head whose answers vary across photos (a random one gives nearly the same probabilities to all)."""
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(torch.stack([transform(i) for i in _photos(8)])),
                                    pre_logits=True)
        head = model.get_classifier()
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(2))
                          / pooled.std(0).clamp(min=1e-3) / pooled.shape[1] ** 0.5)
        head.bias.copy_(-head.weight @ pooled.mean(0))
    return model


@pytest.fixture(scope="module")
def random_models() -> dict[str, torch.nn.Module]:
    models = {}
    for arch in ("tf_efficientnet_lite0", "resnet18"):
        torch.manual_seed(0)
        models[arch] = _separating_head(timm.create_model(arch, pretrained=False, num_classes=3).eval())
    return models


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "resnet18"])
def test_numpy_cam_equals_autograd_through_the_timm_head(arch, random_models):
    model = random_models[arch]
    with torch.no_grad():
        feature_map = model.forward_features(torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1)))
    for image in range(2):
        for target in range(3):
            weight = model.get_classifier().weight[target].detach().numpy()
            for method in CAM_METHODS:
                expected = torch_cam(model, feature_map[image:image + 1], target, method)
                ours = class_activation_map(feature_map[image].numpy(), weight, method)
                assert np.abs(ours - expected).max() <= 1e-4, (method, target)


@pytest.fixture(scope="module")
def exported(random_models, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    model = random_models["tf_efficientnet_lite0"]
    save_model(model, ["a", "b", "c"], run / "model", data_config=timm.data.resolve_data_config({}, model=model))
    return run


def _photos(count: int) -> list[Image.Image]:
    files = sorted((DATA_DIR / "validation").glob("*/*.jpg"))[:count]
    return [to_rgb(Image.open(f)) for f in files]


def test_onnx_parity_on_a_random_model(exported):
    report = onnx_export.export_and_check(exported, iter(_photos(12)), "12 validation photos")
    assert report["passed"] and report["images"] == report["same_top1"] == 12
    assert report["max_probability_gap"] <= 1e-4 and report["opset"] == onnx_export.OPSET
    assert json.loads((exported / "onnx.json").read_text()) == report
    onnx_side, torch_side = Classifier(exported / "model"), TorchClassifier(str(exported / "model"))
    pixels = np.stack([onnx_side.transform(image) for image in _photos(4)])
    for ours, theirs in zip(onnx_side.forward(pixels), torch_side.forward(pixels), strict=True):
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-3 * max(1, np.abs(theirs).max())
    probabilities = np.array([list(p.confidences.values()) for p in onnx_side.decide(onnx_side.forward(pixels)[1])])
    assert np.ptp(probabilities, axis=0).max() > 0.01  # not a constant model: parity means something
    _, _, map_onnx = onnx_side.forward(pixels[:1])
    _, _, map_torch = torch_side.forward(pixels[:1])
    for method in CAM_METHODS:
        assert np.abs(onnx_side.cam(map_onnx[0], 1, method) - torch_side.cam(map_torch[0], 1, method)).max() <= 1e-4


def test_dynamic_batch(exported):
    onnx_side = Classifier(exported / "model")
    pixels = np.stack([onnx_side.transform(image) for image in _photos(3)])
    alone = np.concatenate([onnx_side.forward(pixels[i:i + 1])[0] for i in range(3)])
    assert np.allclose(onnx_side.forward(pixels)[0], alone, atol=1e-5)


def test_a_failing_gate_names_the_gap_and_stops(exported, random_models, monkeypatch):
    onnx_export.export_onnx(exported / "model")
    torch.manual_seed(1)  # other weights, same files
    other = _separating_head(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3).eval())
    save_model(other, ["a", "b", "c"], exported / "model")
    monkeypatch.setattr(onnx_export, "export_onnx", lambda model_dir: None)  # keep the stale graph
    with pytest.raises(UserError, match=r"ONNX parity gate failed on 8 photos: top-1 agrees on \d of 8 images, "
                                        r"largest probability gap .*nothing pushed"):
        onnx_export.export_and_check(exported, _photos(8), "8 photos")
    assert not json.loads((exported / "onnx.json").read_text())["passed"]


def test_a_head_that_is_not_linear_on_pooled_features_is_refused(tmp_path):
    model = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=2)  # conv_head after pooling
    save_model(model, ["a", "b"], tmp_path / "model")
    with pytest.raises(UserError, match="not a linear layer on the average-pooled"):
        onnx_export.export_onnx(tmp_path / "model")
    assert not (tmp_path / "model" / "onnx").exists()


@pytest.mark.slow
def test_card_snippet_runs_as_written_and_matches_the_space(trained_model, tmp_path):
    from huggingface_hub import hf_hub_download

    card = Path(hf_hub_download(trained_model[2], "README.md")).read_text()
    assert re.search(r"the same top-1 as timm on (\d+) of \1 images", card)
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", card, re.S) if "onnxruntime" in block)
    image = DATA_DIR / "validation" / "predator" / "20.jpg"
    (tmp_path / "image.jpg").write_bytes(image.read_bytes())
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = eval(result.stdout.strip().splitlines()[-1])  # the snippet prints a dict of rounded probabilities
    expected = Classifier(trained_model[2]).predict(to_rgb(Image.open(image)), None).confidences
    assert printed.keys() == expected.keys()
    assert all(abs(printed[k] - expected[k]) <= 1e-4 + 5e-5 for k in expected)  # rounded to 4 places


@pytest.mark.slow
def test_a_failing_gate_pushes_nothing(trained_model, monkeypatch):
    from dataclasses import replace

    from huggingface_hub import HfApi

    from training.train import publish_run

    args, results, _ = trained_model
    monkeypatch.setattr(onnx_export, "MAX_PROBABILITY_GAP", -1.0)  # no graph can pass
    with pytest.raises(UserError, match="ONNX parity gate failed on validation"):
        publish_run(replace(args, model_id="demo/never-pushed"), results)
    assert not HfApi().repo_exists("demo/never-pushed")


def test_a_preprocessing_the_space_cannot_reproduce_is_one_clear_error(exported):
    config_path = exported / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["pretrained_cfg"]["crop_mode"] = "border"
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"crop_mode 'border' is not reproduced without torch.*nothing pushed"):
        onnx_export.export_and_check(exported, _photos(2), "2 photos")
