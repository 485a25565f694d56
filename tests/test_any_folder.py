"""Someone else's image folder: N classes, either layout, a Hub dataset made elsewhere, and the words
every card and the Space use coming from the data or the arguments, never from Alien vs. Predator."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, hf_hub_download
from PIL import Image, ImageDraw

from localhub.ctl import free_port
from tests.conftest import run_module
from training.errors import UserError

COLOURS = [(230, 40, 40), (40, 200, 60), (40, 80, 230), (240, 200, 30), (160, 50, 200), (30, 200, 200),
           (250, 130, 20), (120, 120, 120), (250, 100, 180), (90, 60, 20)]
SHAPES = ("disc", "square", "triangle", "ring", "bar", "cross", "diamond", "dot", "star", "frame")


def shape_image(kind: int, rng: np.random.Generator, size: int = 80) -> Image.Image:
    """One synthetic picture of class ``kind``: its colour and shape on a random gradient, at a random place."""
    ramp = np.linspace(0, 1, size)
    direction = rng.uniform(0, 2 * np.pi)
    field = np.cos(direction) * ramp[None, :] + np.sin(direction) * ramp[:, None]
    base = rng.integers(0, 120, 3)
    pixels = (base[None, None, :] + 100 * field[..., None] + rng.normal(0, 12, (size, size, 3))).clip(0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(14, 26))
    x, y = (int(v) for v in rng.integers(r, size - r, 2))
    colour = COLOURS[kind]
    shape = SHAPES[kind]
    if shape in ("disc", "dot"):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "ring":
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=6)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(x, y - r), (x - r, y), (x, y + r), (x + r, y)], fill=colour)
    elif shape == "cross":
        draw.rectangle([x - r, y - 5, x + r, y + 5], fill=colour)
        draw.rectangle([x - 5, y - r, x + 5, y + r], fill=colour)
    elif shape == "bar":
        draw.rectangle([x - r, y - 6, x + r, y + 6], fill=colour)
    else:
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
    return image


def shapes_folder(root: Path, classes: int, per_class: int, split: bool = False, seed: int = 0) -> Path:
    """``<root>/<class>/*.png`` (or train/ and validation/ with ``split``) of synthetic shapes."""
    rng = np.random.default_rng(seed)
    for kind in range(classes):
        for i in range(per_class):
            part = ("validation" if i % 5 == 0 else "train") if split else ""
            folder = root / part / f"{SHAPES[kind]}"
            folder.mkdir(parents=True, exist_ok=True)
            shape_image(kind, rng).save(folder / f"{i}.png")
    return root


def test_single_folder_gets_a_seeded_stratified_leak_free_split(tmp_path):
    from training.pipeline.data.folder import FolderRecipe, build_dataset

    folder = shapes_folder(tmp_path / "shapes", classes=3, per_class=20)
    duplicate = folder / "disc" / "0.png"
    for copy in range(3):  # a group of exact duplicates must land on one side of the split
        (folder / "disc" / f"copy_{copy}.png").write_bytes(duplicate.read_bytes())
    dataset, report = build_dataset(FolderRecipe(data_dir=str(folder), validation_fraction=0.25, seed=7))
    assert report["class_names"] == ["disc", "square", "triangle"]
    assert report["counts"]["validation"] == {"disc": 6, "square": 5, "triangle": 5}  # round(0.25 x n) per class
    assert report["counts"]["train"] == {"disc": 17, "square": 15, "triangle": 15}
    assert report["exact_leaks"] == [] and report["leaked_validation_files"] == []
    group = {"disc/0.png", *(f"disc/copy_{c}.png" for c in range(3))}
    sides = {split for split in dataset for f in dataset[split]["file"] if f in group}
    assert len(sides) == 1
    assert "stratified 25%" in report["validation_split"]
    again, _ = build_dataset(FolderRecipe(data_dir=str(folder), validation_fraction=0.25, seed=7))
    assert again["validation"]["file"] == dataset["validation"]["file"]  # seeded
    other, _ = build_dataset(FolderRecipe(data_dir=str(folder), validation_fraction=0.25, seed=8))
    assert other["validation"]["file"] != dataset["validation"]["file"]


def test_class_with_one_image_cannot_be_split(tmp_path):
    from training.pipeline.data.folder import FolderRecipe, build_dataset

    folder = shapes_folder(tmp_path / "shapes", classes=2, per_class=6)
    for extra in list((folder / "square").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(UserError, match="1 class\\(es\\) with 1 image: 'square'; a validation split needs at least 2"):
        build_dataset(FolderRecipe(data_dir=str(folder)))


@pytest.mark.slow
def test_hub_dataset_without_label_gets_one_line_naming_its_columns(hub, tmp_path):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    images = [shape_image(0, np.random.default_rng(i)) for i in range(4)]
    Dataset.from_dict({"image": images, "category": ["a", "b", "a", "b"]}).cast_column(
        "image", ImageFeature()).push_to_hub("demo/no-label")
    result = run_module("training.train", "--dataset_id", "demo/no-label", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert ("error: dataset demo/no-label: split 'train' needs columns 'image' (Image) and 'label' (ClassLabel); "
            "it has image (Image), category (Value)") in result.stderr


def test_imagefolder_dataset_from_the_hub_trains_as_is(hub, tmp_path):
    """``load_dataset("imagefolder")`` pushed elsewhere: one split, no file/leak columns."""
    from datasets import load_dataset

    from training.pipeline.data.splits import load_splits

    folder = shapes_folder(tmp_path / "shapes", classes=3, per_class=10)
    load_dataset("imagefolder", data_dir=str(folder)).push_to_hub("demo/imagefolder-shapes")
    splits = load_splits("demo/imagefolder-shapes", validation_fraction=0.2, seed=0)
    assert splits["train"].features["label"].names == ["disc", "square", "triangle"]
    assert len(splits["validation"]) == 6 and len(splits["train"]) == 24
    assert sorted(np.bincount(splits["validation"]["label"]).tolist()) == [2, 2, 2]  # stratified

    # The Space's examples come from the same made split (seed and fraction from the model's run.json).
    from training.publish_space import pick_examples

    api = HfApi()
    api.create_repo("demo/imagefolder-model", exist_ok=True)
    for name, content in (("results.json", {"misclassified": []}),
                          ("run.json", {"args": {"validation_fraction": 0.2, "seed": 0}})):
        api.upload_file(path_or_fileobj=json.dumps(content).encode(), path_in_repo=name,
                        repo_id="demo/imagefolder-model")
    examples = pick_examples("demo/imagefolder-model", "demo/imagefolder-shapes", cap=12)
    assert sorted(name.split("_")[0] for name, _ in examples) == ["disc", "square", "triangle"]
    assert all(Image.open(io.BytesIO(data)).size == (80, 80) for _, data in examples)


@pytest.mark.slow
def test_five_classes_end_to_end_dataset_model_cards_and_space(lite0, tmp_path):
    """A folder the project never saw -> Hub dataset -> model (timm, pipeline) -> Space /classify."""
    from gradio_client import Client, handle_file
    from transformers import pipeline

    from training.publish_space import SpaceArguments, publish_space
    from training.train import TrainArguments, publish_run, train

    folder = shapes_folder(tmp_path / "shapes", classes=5, per_class=16, split=True)
    result = run_module("training.dataset", "--data_dir", str(folder), "--dataset_id", "demo/shapes",
                        "--push_to_hub", "--title", "Coloured shapes", "--license", "cc0-1.0",
                        "--output_dir", str(tmp_path / "dataset"))
    assert result.returncode == 0, result.stderr[-3000:]
    args = TrainArguments(dataset_id="demo/shapes", backbone=lite0, augmented_views=1, epochs=6,
                          output_dir=str(tmp_path / "train"), title="Shape classifier",
                          model_id="demo/shapes-classifier", faithfulness_images=5)
    results = train(args)
    assert results["validation"]["accuracy"] >= 0.8 and results["validation"]["n"] == 20
    publish_run(args, results)  # as release() does after train(): ONNX behind its gate, faithfulness, card, push
    publish_space(SpaceArguments(space_id="demo/shapes", model_id="demo/shapes-classifier",
                                 dataset_id="demo/shapes", max_examples=3))

    names = ["bar", "disc", "ring", "square", "triangle"]
    dataset_card = Path(hf_hub_download("demo/shapes", "README.md", repo_type="dataset")).read_text()
    model_card = Path(hf_hub_download("demo/shapes-classifier", "README.md")).read_text()
    space_card = Path(hf_hub_download("demo/shapes", "README.md", repo_type="space")).read_text()
    for card in (dataset_card, model_card, space_card):
        assert "alien" not in card.lower() and "predator" not in card.lower()
    assert "# Coloured shapes" in dataset_card and "license: cc0-1.0" in dataset_card
    trained_on = results["class_balance"]["train"]
    assert sum(trained_on.values()) == results["train_images"]
    assert "# Shape classifier" in model_card and all(f"| {n} | {trained_on[n]} | 4 |" in model_card for n in names)
    assert "title: Bar, disc, ring, square or triangle" in space_card
    space_files = HfApi().list_repo_files("demo/shapes", repo_type="space")
    examples = sorted(f for f in space_files if f.startswith("examples/"))
    # one per class up to the cap of 3, plus a misclassified one if there is one
    assert len(examples) == 3 + bool(results["misclassified"])

    top = pipeline("image-classification", model="demo/shapes-classifier")(
        shape_image(SHAPES.index("square"), np.random.default_rng(99)))
    assert top[0]["label"] == "square"

    from space import app, inference

    demo = app.build_demo(inference.Classifier("demo/shapes-classifier"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        picture = tmp_path / "triangle.png"
        shape_image(SHAPES.index("triangle"), np.random.default_rng(123)).save(picture)
        answer = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(handle_file(str(picture)),
                                                                              api_name="/classify")
        assert answer["label"] == "triangle" and sorted(answer["confidences"]) == names
        assert abs(sum(answer["confidences"].values()) - 1) < 1e-4
        assert answer["model"]["id"] == "demo/shapes-classifier"
    finally:
        demo.close()


def test_class_weight_balanced_helps_the_small_class(tmp_path):
    """Ten to one: balanced weights raise the small class's recall, everything else equal."""
    import torch

    from training.pipeline.features.bank import save_bank
    from training.pipeline.head.linear import fit_plain_head
    from training.pipeline.recipe import HeadRecipe

    rng = np.random.default_rng(0)
    dim, per = 64, {0: 400, 1: 40}
    means = torch.from_numpy(rng.normal(0, 1, (2, dim))).float() * 0.08  # overlapping classes
    features = torch.cat([means[c] + torch.randn(n, dim, generator=torch.Generator().manual_seed(c))
                          for c, n in per.items()])
    labels = torch.cat([torch.full((n,), c) for c, n in per.items()])
    bank = save_bank(tmp_path / "bank", [features], labels)
    test = torch.cat([means[c] + torch.randn(500, dim, generator=torch.Generator().manual_seed(10 + c))
                      for c in (0, 1)])
    recall = {}
    for mode in ("none", "balanced"):
        recipe = HeadRecipe(epochs=20, class_weight=mode)
        head = fit_plain_head(torch.nn.Linear(dim, 2), bank, torch.arange(len(bank)), _NoAccelerator(), recipe, seed=0)
        with torch.no_grad():
            recall[mode] = float((head(test[500:]).argmax(-1) == 1).float().mean())
    assert recall["balanced"] > recall["none"] + 0.1, recall


class _NoAccelerator:
    def accumulate(self, _):
        import contextlib

        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()


def test_confusion_matrix_grows_with_the_class_count(tmp_path):
    from training.pipeline.evaluate.metrics import save_confusion_matrix

    sizes = {}
    for n in (2, 40):
        matrix = (np.eye(n, dtype=int) * 5 + 1).tolist()
        save_confusion_matrix(matrix, [f"class {i}" for i in range(n)], tmp_path / f"{n}.png", "t")
        sizes[n] = Image.open(tmp_path / f"{n}.png").size
    assert sizes[40][0] > 2.5 * sizes[2][0]


def test_report_names_the_imbalance(tmp_path):
    from training.pipeline.data.folder import FolderRecipe, build_dataset

    folder = shapes_folder(tmp_path / "shapes", classes=3, per_class=30)
    for extra in sorted((folder / "triangle").iterdir())[6:]:
        extra.unlink()
    _, report = build_dataset(FolderRecipe(data_dir=str(folder)))
    assert report["imbalance"]["smallest"] == "triangle"
    assert report["imbalance"]["below_half_the_mean"] == ["triangle"]
    assert report["imbalance"]["ratio"] == pytest.approx(24 / 5, abs=0.01)
    json.dumps(report)  # stays serialisable
