"""Answers you can trust: the "neither" score, calibrated probabilities, /classify, batch prediction."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download
from PIL import Image
from safetensors.torch import load_file

from space import inference  # noqa: E402
from space import ood as space_ood  # noqa: E402
from tests.conftest import DATA_DIR, fresh_hf_home, run_module
from training.pipeline.trust.calibration import expected_calibration_error, fit_temperature
from training.pipeline.trust.ood import fit_statistics, limit, scores_of


@pytest.fixture(scope="module")
def random_features():
    """Pooled features of real training images through a pretrained=False ResNet18: in-distribution data."""
    import timm

    from training.pipeline.data.augment import build_transform

    model = timm.create_model("resnet18", pretrained=False, num_classes=2).eval()
    transform = build_transform("none", timm.data.resolve_data_config({}, model=model), train=False)
    files = sorted((DATA_DIR / "train").glob("*/*.jpg"))[::5][:120]
    with torch.inference_mode():
        x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    labels = torch.tensor([f.parent.name == "predator" for f in files], dtype=torch.long)
    return model.get_classifier(), features, labels


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_far_point_is_flagged_and_in_distribution_passes(random_features, method):
    head, features, labels = random_features
    fit, held = slice(0, 80), slice(80, 120)
    stats = fit_statistics(features[fit], labels[fit], 2)

    def score(x):
        with torch.no_grad():
            return scores_of(method, x, head(x), stats)  # the Space's numpy score, as training reads it

    threshold = limit(score(features[held]), 0.05)
    assert (score(features[held]) <= threshold).float().mean() >= 0.95
    assert (score(features[fit]) <= threshold).float().mean() >= 0.9  # the training points themselves pass
    direction = torch.randn(1, features.shape[1], generator=torch.Generator().manual_seed(0))
    far = features.mean(0, keepdim=True) + 50 * features.std(0, keepdim=True) * direction
    assert score(far).item() > threshold


def test_precision_is_the_shrunk_covariances_inverse_even_for_degenerate_features(random_features):
    from sklearn.covariance import LedoitWolf

    _, features, labels = random_features
    stats = fit_statistics(features, labels, 2)
    centred = (features - stats["class_means"][labels]).double().numpy()
    expected = LedoitWolf(assume_centered=True).fit(centred).precision_  # sklearn's own (pseudo-)inverse
    assert np.allclose(stats["precision"].double().numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    constant = fit_statistics(torch.ones(6, 4), torch.tensor([0, 1] * 3), 2)["precision"]  # no variance at all
    assert torch.isfinite(constant).all() and not constant.any()


def test_temperature_fit_recovers_a_known_temperature():
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(20_000, 3, generator=generator)
    labels = torch.multinomial((logits / 2.5).softmax(-1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    overconfident, calibrated = logits.softmax(-1), (logits / 2.5).softmax(-1)
    assert expected_calibration_error(calibrated, labels) < 0.02 < expected_calibration_error(overconfident, labels)


def test_run_reports_calibration_and_ood(trained_model):
    _, results, _ = trained_model
    calibration, ood = results["calibration"], results["ood"]
    assert calibration["temperature"] > 0 and "holdout" in calibration["fitted_on"]
    for when in ("validation_before", "validation_after"):
        assert 0 <= calibration[when]["ece"] <= 1 and calibration[when]["nll"] > 0
    assert set(ood["methods"]) == set(space_ood.METHODS) and ood["method"] in space_ood.METHODS
    assert "cross-fitted" in ood["threshold_from"] and ood["unsure_rate"] == 0.02 and ood["neither_rate"] == 0.005
    for m in ood["methods"].values():
        assert 0 <= m["auroc_test"] <= 1 and m["unsure_threshold"] <= m["threshold"]
        for answers in (m["validation"], m["ood_test"], m["ood_selection"]):
            assert set(answers) == {"sure", "unsure", "neither"} and sum(answers.values()) == pytest.approx(1)
    chosen = ood["methods"][ood["method"]]["ood_selection"]["neither"]
    assert chosen == max(m["ood_selection"]["neither"] for m in ood["methods"].values())
    assert ood["validation"] == ood["methods"][ood["method"]]["validation"]
    low, high = calibration["validation_after"]["ece_interval_90"]  # resampled ECE is biased up: no containment
    assert 0 <= low < high <= 1


def test_ood_statistics_reload_bit_identical_from_the_hub(trained_model, tmp_path):
    args, _, repo_id = trained_model
    local = Path(args.output_dir) / "model"
    config = json.loads((local / "config.json").read_text())
    assert config["ood"]["statistics"] == "ood.safetensors" and config["calibration"]["folded_into_head"]
    pushed = hf_hub_download(repo_id, "ood.safetensors", cache_dir=tmp_path)
    assert Path(pushed).read_bytes() == (local / "ood.safetensors").read_bytes()
    assert json.loads(Path(hf_hub_download(repo_id, "config.json", cache_dir=tmp_path)).read_text())["ood"] == \
        config["ood"]
    assert all(torch.equal(a, b) for a, b in zip(load_file(pushed).values(), load_file(local / "ood.safetensors")
                                                 .values(), strict=True))


def test_folded_temperature_gives_the_same_probabilities_everywhere(trained_model, tmp_path):
    _, results, repo_id = trained_model
    image = tmp_path / "predator.png"
    Image.open(DATA_DIR / "validation" / "predator" / "5.jpg").convert("RGB").save(image)
    script = f"""
import json, timm, torch
from PIL import Image
from transformers import pipeline
model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))
logits = model(transform(Image.open("{image}").convert("RGB")).unsqueeze(0))[0]
names = model.pretrained_cfg["label_names"]
out = pipeline("image-classification", model="{repo_id}")("{image}")
print(json.dumps({{"logits": logits.tolist(), "names": names, "pipeline": {{o["label"]: o["score"] for o in out}}}}))
"""
    result = run_module("tests.run_python", script, env=fresh_hf_home(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    logits = torch.tensor(loaded["logits"])
    timm_probs = dict(zip(loaded["names"], logits.softmax(-1).tolist(), strict=True))
    space_probs = inference.Classifier(repo_id).predict(Image.open(image).convert("RGB"), None).confidences
    unscaled = dict(zip(loaded["names"], (logits * results["calibration"]["temperature"]).softmax(-1).tolist(),
                        strict=True))
    for name in loaded["names"]:
        assert timm_probs[name] == pytest.approx(loaded["pipeline"][name], abs=1e-4)
        assert timm_probs[name] == pytest.approx(space_probs[name], abs=1e-4)
    if abs(results["calibration"]["temperature"] - 1) > 0.05:
        assert max(abs(timm_probs[n] - unscaled[n]) for n in loaded["names"]) > 1e-4


def borderline_image(classifier, inside: Image.Image, outside: Image.Image) -> Image.Image | None:
    """A blend of an accepted picture and a far-away one whose score lies between the two limits (bisection
    on the blend weight: the score moves from "sure" to "neither" along it)."""
    low, high = 0.0, 1.0
    for _ in range(30):
        alpha = (low + high) / 2
        image = Image.blend(inside, outside, alpha)
        answer = classifier.predict(image, None).verdict
        if answer == "unsure":
            return image
        low, high = (alpha, high) if answer == "sure" else (low, alpha)
    return None


def test_classify_endpoint_answers_sure_unsure_or_neither(app_url, trained_model, tmp_path):
    from gradio_client import Client, handle_file

    from training.pipeline.trust.ood_set import _noise, _text

    classifier = inference.Classifier(trained_model[2])
    files = [DATA_DIR / "validation" / c / f"{i}.jpg" for i in range(3, 30) for c in ("alien", "predator")]
    accepted = next(f for f in files if classifier.predict(Image.open(f).convert("RGB"), None).verdict == "sure"
                    and classifier.predict(Image.open(f).convert("RGB"), None).label == f.parent.name)
    client = Client(app_url, verbose=False)
    answer = client.predict(handle_file(str(accepted)), api_name="/classify")
    assert answer["label"] == accepted.parent.name and answer["verdict"] == "sure"
    assert set(answer["confidences"]) == {"alien", "predator"}
    assert abs(sum(answer["confidences"].values()) - 1) < 1e-4
    assert answer["ood_score"] <= answer["unsure_threshold"] <= answer["threshold"]
    assert answer["model"]["id"] == trained_model[2]
    assert answer["model"]["revision"] == HfApi().model_info(trained_model[2]).sha

    import random

    for name, make in (("noise", _noise), ("text", _text)):
        path = tmp_path / f"ood-{name}.png"
        make(random.Random(1)).save(path)
        answer = client.predict(handle_file(str(path)), api_name="/classify")
        assert answer["label"] == "neither" and answer["verdict"] == "neither", (name, answer)
        assert answer["ood_score"] > answer["threshold"]

    inside = Image.open(accepted).convert("RGB").resize((256, 256))
    borderline = borderline_image(classifier, inside, _noise(random.Random(1)))
    assert borderline is not None, "no blend between a validation image and noise scored between the limits"
    path = tmp_path / "borderline.png"
    borderline.save(path)  # lossless: the Space sees these very pixels
    answer = client.predict(handle_file(str(path)), api_name="/classify")
    assert answer["verdict"] == "unsure" and answer["label"] in ("alien", "predator"), answer
    assert answer["unsure_threshold"] < answer["ood_score"] <= answer["threshold"]
    label, _ = client.predict(handle_file(str(path)), "CAM", 0.5, api_name="/predict")
    assert label["label"].startswith(f"Not sure: looks most like a{'n' if answer['label'] == 'alien' else ''} "
                                     f"{answer['label']} (") and "unlike the training pictures" in label["label"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_batch_prediction_writes_a_row_per_file(runtime, trained_model, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(("alien/3.jpg", "predator/3.jpg", "alien/4.jpg")):
        (folder / ("sub" if i == 2 else "") / f"{i}.jpg").write_bytes((DATA_DIR / "validation" / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a picture at all")
    output = tmp_path / "out" / "predictions.csv"
    result = run_module("training.predict", "--model_id", trained_model[2], str(folder), "--output", str(output),
                        "--runtime", runtime)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"runtime: {runtime}" in result.stdout
    rows = {Path(r["file"]).name: r for r in csv.DictReader(output.open())}
    assert set(rows) == {"0.jpg", "1.jpg", "2.jpg", "broken.jpg"}
    assert "not an image" in rows["broken.jpg"]["error"] and rows["broken.jpg"]["label"] == ""
    classifier = inference.Classifier(trained_model[2])
    for name, source in (("0.jpg", "alien/3.jpg"), ("1.jpg", "predator/3.jpg")):
        row = rows[name]
        expected = classifier.predict(Image.open(DATA_DIR / "validation" / source).convert("RGB"), None)
        assert row["label"] == expected.label and row["verdict"] == expected.verdict and row["error"] == ""
        assert float(row["p_alien"]) + float(row["p_predator"]) == pytest.approx(1, abs=1e-4)
        assert float(row["p_alien"]) == pytest.approx(expected.confidences["alien"], abs=1e-4)
        assert float(row["ood_score"]) == pytest.approx(expected.ood_score, rel=1e-3, abs=1e-4)
    assert np.isfinite(float(rows["2.jpg"]["ood_score"]))


def test_faithfulness_ranks_methods_and_sets_the_default(trained_model, hub_dataset, tmp_path):
    import shutil

    from training.errors import UserError
    from training.faithfulness import RANDOM, FaithfulnessArguments, measure
    from training.pipeline.features.model import set_cam_method

    args, _, _ = trained_model
    run = tmp_path / "run"
    shutil.copytree(Path(args.output_dir) / "model", run / "model")
    with pytest.raises(UserError, match="run.json not found: --output_dir must be a training run's"):
        measure(FaithfulnessArguments(output_dir=str(run), dataset_id=hub_dataset, images=4))
    shutil.copy(Path(args.output_dir) / "run.json", run / "run.json")  # the split the model was measured on
    config = (run / "model" / "config.json").read_bytes()
    result = measure(FaithfulnessArguments(output_dir=str(run), dataset_id=hub_dataset, images=4))
    assert (run / "model" / "config.json").read_bytes() == config  # measuring changes no model file
    assert result["images"] == 4 and set(result["methods"]) == {*inference.CAM_METHODS, RANDOM}
    for row in result["methods"].values():
        assert 0 <= row["deletion_mean"] <= 1 and 0 <= row["insertion_mean"] <= 1
        assert len(row["deletion_curve"]) == result["steps"] + 1
    # CAM and Grad-CAM rank pixels the same way for a linear head on average-pooled features
    assert result["methods"]["CAM"]["deletion_mean"] == result["methods"]["Grad-CAM"]["deletion_mean"]
    set_cam_method(run / "model", result["best"])
    assert json.loads((run / "model" / "config.json").read_text())["cam_method"] == result["best"]
    assert (run / "faithfulness.png").read_bytes()[:4] == b"\x89PNG"


def test_a_planted_near_duplicate_pair_lands_on_one_side_of_every_fold():
    import io

    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    from training.pipeline.data.splits import duplicate_groups
    from training.pipeline.head.linear import cross_fit_folds

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((96, 96), Image.BICUBIC)
              for _ in range(40)]
    twin = io.BytesIO()
    images[7].resize((80, 80)).save(twin, format="JPEG", quality=70)  # re-encoded, resized: a near duplicate
    images.append(Image.open(twin))
    labels = [i % 2 for i in range(40)] + [1]  # label aside: the kNN bank doesn't care about classes
    split = Dataset.from_dict({"image": images, "label": labels},
                              features=Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])}))
    groups = duplicate_groups(split)
    assert groups[40] == groups[7] and len(set(groups.tolist())) == 40
    for seed in range(10):
        fold_of = cross_fit_folds(torch.tensor(labels), groups, seed)
        assert fold_of[40] == fold_of[7] and len(set(fold_of.tolist())) == 5


def test_gate_marks_each_rule_and_fails_on_ece_alone():
    from training.publishing.gate import comparison_table, failures, not_worse

    def run(accuracy, ece, neither, auroc):
        return {"validation": {"accuracy": accuracy, "f1": accuracy}, "calibration": {"validation_after": {"ece": ece}},
                "ood": {"method": "knn", "validation": {"neither": neither}, "methods": {"knn": {"auroc_test": auroc}}}}

    main = run(0.97, 0.020, 0.010, 0.99)
    assert not_worse(main, run(0.97, 0.029, 0.019, 0.981))  # within the limits, a tie on accuracy
    assert not_worse(main, run(0.98, 0.050, 0.005, 0.99)) is False
    assert [r.name for r in failures(main, run(0.98, 0.050, 0.005, 0.99))] == ["ECE"]
    assert not_worse(run(0.97, 0.060, 0.01, 0.99), run(0.97, 0.050, 0.01, 0.99))  # over the limit but not worse
    assert [r.name for r in failures(main, run(0.96, 0.02, 0.03, 0.97))] == ["leak-free accuracy",
                                                                            "validation neither", "OOD AUROC"]
    table = comparison_table(main, run(0.98, 0.050, 0.005, 0.99))
    assert "| ECE | ≤ 0.03 or not worse than main | 0.0200 | 0.0500 | FAIL |" in table
    assert "| leak-free accuracy | not worse than main | 0.9700 | 0.9800 | pass |" in table
    assert "worse (ECE): keep main" in table
    old_main = {"validation": {"accuracy": 0.97, "f1": 0.97}, "ood": {"validation_accepted": 0.95}}  # older run
    assert [r.name for r in failures(old_main, run(0.97, 0.1, 0.06, 0.9))] == ["validation neither"]
