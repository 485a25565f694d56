"""The retraining loop: corrections from the Space, checked intake, the mislabel finder."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import DATA_DIR, TOKEN


@pytest.fixture(scope="module")
def feedback_app(trained_model, tmp_path_factory):
    """The Space's app with corrections going to demo/avp-feedback-test, flushed every second."""
    from localhub.ctl import free_port

    os.environ.update(MODEL_ID=trained_model[2], FEEDBACK_DATASET="demo/avp-feedback-test", FEEDBACK_FLUSH_SECONDS="1",
                      FEEDBACK_DIR=str(tmp_path_factory.mktemp("feedback")))
    from space import app, image_io, inference

    demo = app.build_demo(inference.Classifier(trained_model[2]))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                max_file_size=image_io.MAX_FILE_BYTES, quiet=True)
    yield f"http://127.0.0.1:{port}/", demo
    demo.close()
    demo.feedback_store.stop()
    for name in ("MODEL_ID", "FEEDBACK_DATASET", "FEEDBACK_FLUSH_SECONDS", "FEEDBACK_DIR"):
        os.environ.pop(name)


def test_corrections_reach_a_private_dataset(feedback_app, trained_model, tmp_path):
    from datasets import load_dataset
    from gradio_client import Client, handle_file
    from huggingface_hub import HfApi

    url, demo = feedback_app
    client = Client(url, verbose=False)
    sent = {"alien/5.jpg": "predator", "predator/5.jpg": "alien", "alien/6.jpg": "neither"}
    for name, label in sent.items():
        answer = client.predict(handle_file(str(DATA_DIR / "validation" / name)), label, api_name="/feedback")
        assert "Thank you" in answer
    with pytest.raises(Exception, match="not in the list of choices"):  # Gradio checks the Radio first
        client.predict(handle_file(str(DATA_DIR / "validation" / "alien/7.jpg")), "sepia", api_name="/feedback")
    with pytest.raises(Exception, match="not an image"):
        (tmp_path / "x.jpg").write_bytes(b"text")
        client.predict(handle_file(str(tmp_path / "x.jpg")), "alien", api_name="/feedback")
    deadline = time.monotonic() + 30
    rows = None
    while time.monotonic() < deadline:
        demo.feedback_store.flush()
        try:
            rows = load_dataset("demo/avp-feedback-test", split="train", download_mode="force_redownload",
                                cache_dir=str(tmp_path / f"c{time.monotonic_ns()}"))
        except Exception:
            rows = None
        if rows is not None and len(rows) == 3:
            break
        time.sleep(1)
    assert rows is not None and len(rows) == 3
    assert sorted(rows["label"]) == sorted(sent.values())
    assert {"image", "label", "predicted", "confidence", "model_revision", "created_at"} <= set(rows.column_names)
    assert set(rows["model_revision"]) == {HfApi().model_info(trained_model[2]).sha}
    assert HfApi().repo_info("demo/avp-feedback-test", repo_type="dataset").private


def test_without_a_token_feedback_is_refused_and_nothing_written(trained_model, monkeypatch):
    from space import app, inference

    monkeypatch.setenv("MODEL_ID", trained_model[2])
    monkeypatch.setenv("FEEDBACK_DATASET", "demo/avp-feedback-none")
    monkeypatch.delenv("HF_TOKEN")
    demo = app.build_demo(inference.Classifier(trained_model[2]))
    assert demo.feedback_store is None
    with pytest.raises(Exception, match="does not collect corrections"):
        app.send_feedback(None, str(DATA_DIR / "validation" / "alien" / "5.jpg"), "alien", "test")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    from huggingface_hub import HfApi

    assert not HfApi().repo_exists("demo/avp-feedback-none", repo_type="dataset")


def test_intake_refuses_validation_duplicates_and_repeats(avp_dataset, hub, tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    from training.pipeline.data.corrections import take_in
    from training.pipeline.data.images import split_fingerprints

    dataset, _ = avp_dataset
    validation, train = dataset["validation"], dataset["train"].select(range(40))
    rows = [(validation[0]["image"], "alien"),  # a validation image: must never enter train
            (train[0]["image"], "alien"),  # already in train
            (Image.open(DATA_DIR / "train" / "predator" / "300.jpg").convert("RGB"), "predator"),
            (Image.new("RGB", (64, 64), (10, 200, 30)), "neither"),
            (Image.new("RGB", (64, 64), (200, 10, 30)), "banana")]
    features = Features({"image": ImageFeature(), "label": Value("string")})
    Dataset.from_dict({"image": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features) \
        .push_to_hub("demo/avp-intake-test", private=True)
    merged, neither, report = take_in("demo/avp-intake-test", train, split_fingerprints(validation))
    assert report["received"] == 5 and report["added_to_train"] == 1 and report["neither"] == 1
    assert report["reasons"] == {"duplicates a validation image": 1, "already in train": 1, "unknown label": 1}
    named = {r["row"]: r["why"] for r in report["refused_rows"]}
    assert validation[0]["file"] in named[0]
    assert len(merged) == 41 and merged.features["label"].names == train.features["label"].names
    assert len(neither) == 1


@pytest.mark.slow
def test_mislabel_finder_finds_flipped_labels(avp_dataset, tmp_path):
    import timm

    from tests.conftest import WEIGHTS_DIR
    from training.pipeline.data.augment import build_transform
    from training.pipeline.features.bank import save_bank
    from training.pipeline.features.extractor import feature_extractor, image_features
    from training.pipeline.head.linear import cross_fit_folds, out_of_fold_logits
    from training.pipeline.head.mislabels import find_suspects, out_of_fold_probabilities
    from training.pipeline.recipe import HeadRecipe

    dataset, _ = avp_dataset
    train = dataset["train"].shuffle(seed=0).select(range(240))
    model = timm.create_model(f"local-dir:{WEIGHTS_DIR / 'tf_efficientnet_lite0.in1k'}", pretrained=True,
                              num_classes=2).eval()
    transform = build_transform("none", timm.data.resolve_data_config({}, model=model), train=False)
    images = [image.convert("RGB") for image in train["image"]]
    extractor = feature_extractor(model, "no")
    features = torch.cat([image_features(extractor, images, transform),
                          image_features(extractor, [i.transpose(0) for i in images], transform)])
    labels = torch.tensor(train["label"])
    flipped = np.random.default_rng(0).choice(len(train), 10, replace=False)
    labels[flipped] = 1 - labels[flipped]
    recipe = HeadRecipe(epochs=10, seed=42)

    class NoAccelerator:  # the fold heads run outside the prepared objects
        def accumulate(self, _):
            import contextlib

            return contextlib.nullcontext()

        def backward(self, loss):
            loss.backward()

    bank = save_bank(tmp_path / "bank", list(features.split(len(train))), labels)
    held_out = out_of_fold_logits(torch.nn.Linear(features.shape[1], 2), bank, NoAccelerator(), recipe,
                                  cross_fit_folds(labels, None, recipe.seed))
    assert held_out.logits(0).shape == held_out.logits().shape == (2 * len(train), 2)
    assert not torch.equal(held_out.logits(0), held_out.logits())  # the fold heads after their first and last epoch
    probs = out_of_fold_probabilities(held_out.logits(), held_out.rows % len(train), len(train))
    found = find_suspects(probs, labels.numpy(), train["file"], ["alien", "predator"])
    top = {s["index"] for s in found["suspects"]}
    assert len(set(flipped.tolist()) & top) >= 7, (sorted(flipped.tolist()), sorted(top))


@pytest.mark.slow
def test_training_with_feedback_reports_it_in_results_and_card(hub_dataset, tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    from training.publishing.model_card import render_card
    from training.train import TrainArguments, train

    # A correction in a colour no training picture has: if its thumbnail were drawn, suspects.png would show it.
    blocks = np.random.default_rng(0).integers(0, 2, (10, 10)).repeat(8, 0).repeat(8, 1).astype(bool)
    patched = np.zeros((80, 80, 3), np.uint8)
    patched[blocks] = (255, 0, 255)  # magenta and black blocks: far, by pHash, from the flat "neither" picture
    images = [Image.fromarray(patched), Image.new("RGB", (80, 80), (240, 240, 0))]
    features = Features({"image": ImageFeature(), "label": Value("string")})
    Dataset.from_dict({"image": images, "label": ["alien", "neither"]}, features=features) \
        .push_to_hub("demo/avp-feedback-train", private=True)
    args = TrainArguments(dataset_id=hub_dataset, backbone="tf_efficientnet_lite0", pretrained=False,
                          max_train_samples=16, augmented_views=1, epochs=2, torch_compile="no",
                          feedback_dataset="demo/avp-feedback-train", output_dir=str(tmp_path / "run"))
    results = train(args)
    assert results["feedback"]["received"] == 2 and results["feedback"]["added_to_train"] == 1
    from training.pipeline.trust.ood_set import ood_images

    assert results["feedback"]["neither"] == 1
    assert results["ood"]["ood_images"] == len(ood_images(0)) + 1  # the "neither" joins the set
    assert results["train_images"] == 16  # 15 after the holdout, plus the correction
    suspects = results["mislabels"]["suspects"]  # fewer images than the list's length: every one is listed
    assert len(suspects) == 16 and "feedback/0" in {s["file"] for s in suspects}
    grid = np.asarray(Image.open(tmp_path / "run" / "suspects.png").convert("RGB")).astype(int)
    magenta = (grid[..., 0] > 200) & (grid[..., 1] < 60) & (grid[..., 2] > 200)
    assert grid.shape[0] > 100 and magenta.sum() == 0  # the visitor's picture is listed, never drawn
    card = str(render_card(results, args, "demo/x"))
    assert "Feedback (demo/avp-feedback-train): 2 received, 2 added (1 to train" in card


@pytest.mark.slow
def test_drop_suspects_trains_without_them_and_reports_both(hub_dataset, tmp_path):
    from training.publishing.model_card import render_card
    from training.train import TrainArguments, train

    args = TrainArguments(dataset_id=hub_dataset, backbone="tf_efficientnet_lite0", pretrained=False,
                          max_train_samples=60, augmented_views=1, epochs=2, torch_compile="no", drop_suspects=True,
                          output_dir=str(tmp_path / "run"))
    results = train(args)
    mislabels = results["mislabels"]
    comparison = mislabels["comparison"]
    assert 0 <= comparison["validation_accuracy_kept"] <= 1 and 0 <= comparison["validation_accuracy_dropped"] <= 1
    images = results["train_images"]
    assert len(mislabels["flagged_indices"]) == mislabels["flagged"] > 0
    assert results["bank_size"] == 3 * (images - mislabels["flagged"])  # every view of a flagged image left out
    card = str(render_card(results, args, "demo/x"))
    assert "trained **without** the" in card and "left out of training" in card
