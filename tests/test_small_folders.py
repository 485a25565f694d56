"""Small folders, the reason frozen backbones exist: from 2 images per class, 2 to 1,000 classes, by the README's
own command, with every figure that cannot be measured named in the card instead of invented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download

from bench.folders import class_name, make_folder, tile_image
from tests.conftest import WEIGHTS_DIR, run_module


def calibrated_sample(images: int, classes: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is calibrated (labels drawn from it), times ``scale`` (over-confident above 1)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(images, classes, generator=generator) * 2.0
    labels = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    return logits * scale, labels


def test_many_images_keep_the_fitted_temperature():
    from training.pipeline.trust.calibration import shrunk_temperature

    logits, labels = calibrated_sample(3000, 5, seed=0, scale=3.0)
    found = shrunk_temperature(logits, labels, torch.arange(3000))
    assert found.shrinkage == 1.0 and found.value == pytest.approx(3.0, rel=0.1)


def test_few_images_keep_the_temperature_nearer_1_and_that_pays_on_new_images():
    """On a dozen images the fitted T swings; the shrunk one gives a lower NLL on new images, on average."""
    import torch.nn.functional as F

    from training.pipeline.trust.calibration import shrunk_temperature

    fresh_logits, fresh_labels = calibrated_sample(20000, 5, seed=999)
    fitted, shrunk, shrinkages = [], [], []
    for seed in range(30):
        logits, labels = calibrated_sample(12, 5, seed=seed)
        found = shrunk_temperature(logits, labels, torch.arange(12))
        shrinkages.append(found.shrinkage)
        fitted.append(float(F.cross_entropy(fresh_logits / found.fitted, fresh_labels)))
        shrunk.append(float(F.cross_entropy(fresh_logits / found.value, fresh_labels)))
    assert np.mean(shrunk) < np.mean(fitted) - 0.01, (np.mean(shrunk), np.mean(fitted))
    assert min(shrinkages) < 1


def test_nothing_held_out_or_a_fit_at_the_edge_leaves_the_probabilities_unscaled():
    from training.pipeline.trust.calibration import TEMPERATURE_RANGE, shrunk_temperature

    one = shrunk_temperature(torch.randn(2, 3), torch.tensor([0, 0]), torch.tensor([7, 7]))  # one image, two views
    assert (one.value, one.images) == (1.0, 1)
    separable = torch.eye(3).repeat(4, 1) * 10  # every held-out image right with a wide margin: T runs to 0
    found = shrunk_temperature(separable, torch.arange(3).repeat(4), torch.arange(12))
    assert found.fitted < 1 and (found.value, found.shrinkage, found.pinned) == (1.0, 0.0, False)
    assert TEMPERATURE_RANGE[0] <= found.fitted


def test_few_scores_put_the_neither_limit_on_the_safe_side():
    from training.pipeline.trust.ood import limit

    scores = torch.linspace(0.1, 0.3, 1000)
    assert limit(scores, 0.005) == pytest.approx(float(torch.quantile(scores.double(), 0.995)))  # many: the share
    few = torch.tensor([0.10, 0.12, 0.15, 0.11, 0.13, 0.14, 0.12, 0.16])
    assert limit(few, 0.005) > float(few.max()) + 0.01  # beyond every held-out score, by a normal tail
    assert limit(torch.empty(0), 0.005) == float("inf")


def test_a_perfect_score_on_few_images_still_gets_a_wide_accuracy_interval():
    """A bootstrap of 2 right answers is 1-1; the exact binomial interval says how little 2 images show."""
    from training.pipeline.evaluate.metrics import intervals

    perfect = intervals(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert perfect["accuracy"] == [0.2236, 1.0]  # 0.05 ** (1 / 2): the one-sided 5 % of two successes
    half = intervals(torch.tensor([0, 0, 1, 1] * 25), torch.tensor([0, 1] * 50))
    assert half["accuracy"][0] < 0.5 < half["accuracy"][1] and half["accuracy"][1] - half["accuracy"][0] < 0.2


def test_holdout_takes_one_image_of_each_class_it_can_and_names_the_others(tmp_path):
    from datasets import ClassLabel, Dataset

    from training.pipeline.data.splits import holdout_split

    labels = [0] * 8 + [1] * 4 + [2] * 3 + [3] * 1
    train = Dataset.from_dict({"label": labels}).cast_column("label", ClassLabel(names=["a", "b", "c", "d"]))
    kept, held, missing = holdout_split(train, 0.25, seed=0)  # a class needs 4 images to give one
    assert sorted(held["label"]) == [0, 0, 1] and missing == ["c", "d"]
    assert np.bincount(kept["label"]).tolist() == [6, 3, 3, 1]
    kept, held, missing = holdout_split(train, 0.1, seed=0)  # 10 needed: none
    assert len(held) == 0 and len(kept) == len(labels) and missing == ["a", "b", "c", "d"]


def test_a_dataset_without_validation_gets_one_image_of_each_class_and_a_single_image_class_one_line(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict
    from datasets import Image as ImageFeature

    from training.errors import UserError
    from training.pipeline.data.splits import load_splits

    def saved(labels: list[int], name: str) -> str:
        images = [tile_image(label, np.random.default_rng(i), 32) for i, label in enumerate(labels)]
        rows = Dataset.from_dict({"image": images, "label": labels}).cast_column("image", ImageFeature())
        rows = rows.cast_column("label", ClassLabel(names=["a", "b", "c"]))
        DatasetDict({"train": rows}).save_to_disk(tmp_path / name)
        return str(tmp_path / name)

    splits = load_splits(saved([0, 0, 1, 1, 2, 2], "pairs"), validation_fraction=0.2, seed=0)
    assert sorted(splits["validation"]["label"]) == [0, 1, 2] and sorted(splits["train"]["label"]) == [0, 1, 2]
    with pytest.raises(UserError, match="1 class\\(es\\) with fewer than 2 images, so none can be both trained on "
                                       "and measured: 'c'"):
        load_splits(saved([0, 0, 1, 1, 2], "single"), validation_fraction=0.2, seed=0)


def test_folds_leave_a_single_image_class_in_every_fold():
    from training.pipeline.head.linear import cross_fit_folds

    labels = torch.tensor([0] * 6 + [1] * 2 + [2])
    fold_of = cross_fit_folds(labels, None, seed=0)
    assert fold_of[8] == -1  # class 2's only image: a head without it would not know the class
    assert set(fold_of[:8].tolist()) == {0, 1} and set(fold_of[6:8].tolist()) == {0, 1}
    assert cross_fit_folds(torch.tensor([0, 1, 2]), None, seed=0) is None


def test_mislabel_finder_copes_with_classes_of_two_images_and_unscored_ones():
    from training.pipeline.head.mislabels import find_suspects

    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 2, 3])
    probs = rng.dirichlet(np.ones(4), size=6)
    probs[:4] = np.eye(4)[[0, 0, 1, 1]] * 0.9 + 0.025
    probs[1] = [0.05, 0.85, 0.05, 0.05]  # looks like class 1
    found = find_suspects(probs, labels, [f"f{i}" for i in range(6)], list("abcd"), scored=np.arange(4))
    assert found["scored_images"] == 4 and found["suspects"][0]["index"] == 1
    assert {s["index"] for s in found["suspects"]} <= {0, 1, 2, 3}


def test_faithfulness_measures_the_asked_number_of_images_whatever_the_class_count():
    from datasets import Dataset

    from training.faithfulness import pick_images

    many = Dataset.from_dict({"label": list(range(1000)) * 2, "leak": [False] * 2000})
    rows = pick_images(many, 40, seed=0)
    assert len(rows) == 40 and len({many[i]["label"] for i in rows}) == 40  # not one per class: 1,000
    two = Dataset.from_dict({"label": [0] * 30 + [1] * 30, "leak": [i % 10 == 0 for i in range(60)]})
    rows = pick_images(two, 40, seed=0)
    assert sorted(np.bincount([two[i]["label"] for i in rows]).tolist()) == [20, 20]
    assert not any(two[i]["leak"] for i in rows)
    assert pick_images(Dataset.from_dict({"label": [0, 1], "leak": [False, False]}), 40, seed=0) == [0, 1]


def test_the_space_names_a_few_classes_and_how_many_there_are():
    from space.texts import class_list

    assert class_list(["alien", "predator"]) == "**alien** and **predator**"
    many = class_list([class_name(k) for k in range(100)])
    assert many.startswith("100 classes, among them ") and many.count("**") == 12


@pytest.mark.slow
def test_a_class_of_one_image_gets_one_line_exit_2_and_nothing_pushed(hub, tmp_path):
    folder = make_folder(tmp_path / "tiles", classes=4, per_class=3)
    for name in (class_name(1), class_name(3)):
        for extra in sorted((folder / name).iterdir())[1:]:
            extra.unlink()
    result = run_module("training.demo", "--data_dir", str(folder), "--name", "one-image", "--weights_dir",
                        str(WEIGHTS_DIR), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    single = sorted([class_name(1), class_name(3)])
    assert len(lines) == 1 and f"2 class(es) with 1 image: '{single[0]}', '{single[1]}'" in lines[0]
    assert not any(r.id.endswith("one-image") for r in HfApi().list_datasets(author="demo"))
    assert not any(r.id.startswith("demo/one-image") for r in HfApi().list_models(author="demo"))


@pytest.mark.slow
@pytest.mark.parametrize(("classes", "per_class", "unmeasured"), [
    (2, 2, ["no holdout", "no cross-fitting folds", "too few held-out images to fit a temperature"]),
    (3, 5, ["too few to place"]),
    (10, 10, ["too few to place the neither limit"]),
    (50, 6, []),
])
def test_small_folder_by_the_demo_command_trains_publishes_and_loads(lite0, tmp_path, classes, per_class, unmeasured):
    """``make demo DATA_DIR=<folder>``'s command on a folder of ``per_class`` images per class: pushed dataset,
    model and Space; the pipeline loads the model; the card gives intervals and names what it could not measure."""
    from transformers import pipeline

    name = f"tiles-{classes}x{per_class}"
    folder = make_folder(tmp_path / name, classes=classes, per_class=per_class)
    result = run_module("training.demo", "--data_dir", str(folder), "--name", name, "--weights_dir",
                        str(WEIGHTS_DIR), "--output_dir", str(tmp_path / "out"), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "90 % interval" in result.stdout  # validation is small: accuracy and F1 carry intervals
    results = json.loads((tmp_path / "out" / name / "train" / "results.json").read_text())
    assert results["validation"]["n"] == sum(results["class_balance"]["validation"].values())
    for part in unmeasured:
        assert any(part in line for line in results["not_measured"]), results["not_measured"]
        assert f"not measured: {next(line for line in results['not_measured'] if part in line)}" in result.stdout
    card = Path(hf_hub_download(f"demo/{name}-classifier", "README.md")).read_text()
    assert "90 % intervals, exact binomial for accuracy" in card
    assert ("## What could not be measured" in card) == bool(results["not_measured"])
    for line in results["not_measured"]:
        assert line in card
    if classes > 30:  # many classes: the most confused pairs and a linked per-class file, not a 50-row table
        assert "[`per_class.csv`](per_class.csv)" in card and "| true class | taken for |" in card
        assert "per_class.csv" in HfApi().list_repo_files(f"demo/{name}-classifier")
    head = results["head"]  # on a small folder with folds, the converged head competes, judged out of fold
    assert ("Head kept:" in card) == bool(head["losses"])
    if classes >= 10:
        assert set(head["losses"]) == {"one-cycle", "converged C=1", "converged C=10"}
        converged = min(loss for name, loss in head["losses"].items() if name != "one-cycle")
        if head["recipe"] == "converged":  # kept only when clearly lower than the one-cycle head's loss
            assert head["losses"][f"converged C={head['penalty']:g}"] == converged < head["losses"]["one-cycle"]
        assert head["reason"].startswith("clearly lower" if head["recipe"] == "converged" else "not clearly lower")
    calibration = results["calibration"]
    if calibration["held_out_images"] < 2:
        assert calibration["temperature"] == 1.0
    kind = classes - 1
    top = pipeline("image-classification", model=f"demo/{name}-classifier")(
        tile_image(kind, np.random.default_rng(123)), top_k=classes)
    assert sorted(t["label"] for t in top) == sorted(class_name(k) for k in range(classes))
    assert sum(t["score"] for t in top) == pytest.approx(1.0, abs=1e-4)
    assert f"demo/{name}" in {s.id for s in HfApi().list_spaces(author="demo")}


@pytest.mark.slow
def test_a_thousand_classes_of_three_images_train_and_publish_a_readable_card(lite0, tmp_path):
    """1,000 classes: the card lists the most confused pairs and links every class's figures, and stays small."""
    from training.train import TrainArguments, publish_run, train

    folder = make_folder(tmp_path / "thousand", classes=1000, per_class=3, size=48)
    args = TrainArguments(dataset_id=str(folder), backbone=lite0, augmented_views=1, epochs=3,
                          output_dir=str(tmp_path / "train"), model_id="demo/thousand-classifier",
                          faithfulness_images=4)
    results = train(args)
    assert results["validation"]["n"] == 1000 and results["train_images"] == 2000
    assert results["validation"]["confusion_matrix"] is None and results["validation"]["confused_pairs"]
    assert (tmp_path / "train" / "results.json").stat().st_size < 5_000_000
    assert not (tmp_path / "train" / "confusion_matrix.png").exists()
    publish_run(args, results)
    card = Path(hf_hub_download("demo/thousand-classifier", "README.md")).read_text()
    assert len(card.encode()) < 40_000, len(card.encode())
    assert "| true class | taken for |" in card and "[`per_class.csv`](per_class.csv)" in card
    rows = Path(hf_hub_download("demo/thousand-classifier", "per_class.csv")).read_text().splitlines()
    assert len(rows) == 1001 and rows[0] == "class,trained_on,validation_images,precision,recall,f1"


@pytest.mark.slow
def test_stage_tuning_without_a_holdout_auto_stays_frozen_and_an_explicit_depth_is_tuned(lite0, tmp_path):
    from training.train import TrainArguments, train

    folder = make_folder(tmp_path / "tiles", classes=2, per_class=2, size=48)
    chosen = {}
    for asked in ("auto", "1"):
        results = train(TrainArguments(dataset_id=str(folder), backbone=lite0, augmented_views=1, epochs=2,
                                       stage_epochs=1, unfreeze_last_stages=asked,
                                       output_dir=str(tmp_path / asked)))
        assert results["holdout_images"] == 0 and results["stages"]["holdout_predictions"] == 0
        chosen[asked] = results["stages"]["chosen"]
        if asked == "auto":
            assert any("no holdout to judge a tuning by" in line for line in results["not_measured"])
    assert chosen == {"auto": 0, "1": 1}
