"""Building, checking and pushing the dataset; bad folders; Hub faults."""

import io
import json
import shutil

import pytest
from huggingface_hub import DatasetCard, HfApi
from PIL import Image

from tests.conftest import DATA_DIR, fresh_hf_home, run_module
from training.pipeline.data.folder import FolderRecipe, build_dataset
from training.pipeline.data.images import decode_image

REQUIRED_YAML = ("license", "task_categories", "size_categories", "pretty_name", "tags", "dataset_info", "configs")


def test_build_from_shared_data(avp_dataset):
    dataset, report = avp_dataset
    assert dataset["train"].features["label"].names == ["alien", "predator"]
    assert report["counts"] == {"train": {"alien": 347, "predator": 347},
                                "validation": {"alien": 100, "predator": 100}}
    assert {p for p in dataset["validation"].features}.issuperset({"image", "label", "leak"})
    # Palette PNGs named .jpg are found by content and stored as RGB.
    assert len(report["misnamed_files"]) == 5 and report["formats_by_content"] == {"JPEG": 889, "PNG": 5}
    row = dataset["validation"][dataset["validation"]["file"].index("validation/alien/18.jpg")]
    assert row["image"].mode == "RGB"


def test_known_duplicates_and_leaks_are_found(avp_dataset):
    _, report = avp_dataset
    exact = {tuple(p) for p in report["exact_leaks"]}
    assert exact == {("validation/predator/1.jpg", "train/predator/199.jpg"),
                     ("validation/predator/58.jpg", "train/predator/247.jpg")}
    inside = {tuple(p) for p in report["exact_duplicates_in_train"]}
    assert inside == {("train/alien/162.jpg", "train/alien/207.jpg"),
                      ("train/predator/45.jpg", "train/predator/117.jpg")}
    listed_near = {f"validation/alien/{i}.jpg" for i in (12, 16, 26, 49, 58, 92)} | {
        "validation/predator/14.jpg", "validation/predator/39.jpg"}
    found = set(report["leaked_validation_files"])
    assert len(listed_near & found) >= 6  # most of PROVENANCE.md's near pairs
    assert 190 <= report["leak_free_validation"] <= 192


@pytest.mark.slow
def test_push_then_load_in_a_fresh_process(hub_dataset, avp_dataset, tmp_path):
    dataset, report = avp_dataset
    script = (f"import json; from datasets import load_dataset; d = load_dataset('{hub_dataset}'); "
              "v = d['validation']; print(json.dumps({'n': {s: len(d[s]) for s in d}, "
              "'names': v.features['label'].names, 'files': v['file'][:3], 'leaks': sum(v['leak']), "
              "'mode': v[0]['image'].mode}))")
    result = run_module("tests.run_python", script, env=fresh_hf_home(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["n"] == {"train": 694, "validation": 200}
    assert loaded["names"] == ["alien", "predator"] and loaded["mode"] == "RGB"
    assert loaded["files"] == dataset["validation"]["file"][:3]
    assert loaded["leaks"] == sum(dataset["validation"]["leak"]) == len(report["leaked_validation_files"])

    card = DatasetCard.load(hub_dataset, repo_type="dataset")
    data = card.data.to_dict()
    assert all(key in data for key in REQUIRED_YAML), sorted(data)
    assert data["task_categories"] == ["image-classification"]
    assert "| train | 347 | 347 | 694 |" in card.text
    files = HfApi().list_repo_files(hub_dataset, repo_type="dataset")
    assert {"report.json", "augmentation_grid.png", "README.md"} <= set(files)


def _jpeg_bytes(color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def _make_folder(root, classes=("alien", "predator"), val_classes=None):
    for split, names in (("train", classes), ("validation", val_classes or classes)):
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                (folder / f"{i}.jpg").write_bytes(_jpeg_bytes((i * 90, 40, 200 if name == "alien" else 0)))
    return root


def _fails_without_push(tmp_path, data_dir, message, repo_id="demo/must-not-exist"):
    result = run_module("training.dataset", "--data_dir", str(data_dir), "--push_to_hub", repo_id,
                        "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not HfApi().repo_exists(repo_id, repo_type="dataset")
    return result.stderr


@pytest.mark.slow
def test_text_file_named_jpg(hub, tmp_path):
    data = _make_folder(tmp_path / "d")
    (data / "train" / "alien" / "notes.jpg").write_text("not an image")
    _fails_without_push(tmp_path, data, "train/alien/notes.jpg: not an image")


@pytest.mark.slow
def test_truncated_jpeg(hub, tmp_path):
    data = _make_folder(tmp_path / "d")
    (data / "validation" / "predator" / "cut.jpg").write_bytes(_jpeg_bytes()[:300])
    _fails_without_push(tmp_path, data, "validation/predator/cut.jpg: corrupt or truncated")


def test_skip_bad_files_lists_them(tmp_path):
    data = _make_folder(tmp_path / "d")
    (data / "train" / "alien" / "notes.jpg").write_text("not an image")
    _, report = build_dataset(FolderRecipe(data_dir=str(data), skip_bad_files=True))
    assert len(report["skipped_files"]) == 1 and "notes.jpg" in report["skipped_files"][0]


@pytest.mark.slow
def test_empty_class_folder(hub, tmp_path):
    data = _make_folder(tmp_path / "d")
    shutil.rmtree(data / "train" / "predator")
    (data / "train" / "predator").mkdir()
    _fails_without_push(tmp_path, data, "train/predator: class folder is empty")


@pytest.mark.slow
def test_classes_differ_between_splits(hub, tmp_path):
    data = _make_folder(tmp_path / "d", val_classes=("alien", "xenomorph"))
    _fails_without_push(tmp_path, data, "only in validation ['xenomorph']")


@pytest.mark.slow
def test_validation_without_train(hub, tmp_path):
    data = _make_folder(tmp_path / "d")
    shutil.rmtree(data / "train")
    _fails_without_push(tmp_path, data, "has validation/ but no train/ folder")


def test_hidden_files_are_ignored(tmp_path):
    data = _make_folder(tmp_path / "d")
    (data / "train" / "alien" / ".DS_Store").write_bytes(b"\0\1junk")
    (data / "train" / "alien" / "._0.jpg").write_bytes(b"resource fork")
    (data / "train" / "Thumbs.db").write_bytes(b"junk")
    dataset, _ = build_dataset(FolderRecipe(data_dir=str(data)))
    assert len(dataset["train"]) == 4


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new("RGB", (16, 12), (10, 120, 250)).convert(mode if mode != "I;16" else "I").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    decoded, _ = decode_image(buffer.getvalue(), f"x.{mode}")
    assert decoded.mode == "RGB" and decoded.size == (16, 12)


def test_exif_orientation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20)).save(buffer, format="JPEG", exif=exif)
    decoded, _ = decode_image(buffer.getvalue(), "rotated.jpg")
    assert decoded.size == (20, 40)


def test_decompression_bomb_is_refused():
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 1_000_000
    # Pillow's own cap may fire first (the Space's tests lower it process-wide): either refusal is right.
    with pytest.raises(ValueError, match="above the cap|decompression bomb"):
        decode_image(buffer.getvalue(), "bomb.png", max_pixels=50_000_000)


@pytest.mark.slow
def test_server_down_names_hf_endpoint(tmp_path):
    result = run_module("training.dataset", "--data_dir", str(DATA_DIR), "--push_to_hub", "demo/x",
                        "--output_dir", str(tmp_path), env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 2
    assert "cannot reach the Hub at HF_ENDPOINT=http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_measured_split_is_made_from_the_runs_own_arguments(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    from training.errors import UserError
    from training.pipeline.data.splits import load_splits, measured_validation

    images = [Image.new("RGB", (8, 8), (i * 9, 0, 0)) for i in range(20)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    DatasetDict({"train": Dataset.from_dict({"image": images, "label": [i % 2 for i in range(20)]},
                                            features=features)}).save_to_disk(str(tmp_path / "d"))
    run = {"validation_fraction": 0.3, "seed": 7}
    validation = measured_validation(str(tmp_path / "d"), run, "run.json")
    assert len(validation) == 6
    assert validation["image"] == load_splits(str(tmp_path / "d"), 0.3, 7)["validation"]["image"]
    assert validation["image"] != load_splits(str(tmp_path / "d"), 0.3, 8)["validation"]["image"]
    with pytest.raises(UserError, match="out/run.json has no seed: the split the model was measured on"):
        measured_validation(str(tmp_path / "d"), {"validation_fraction": 0.2}, "out/run.json")


def test_a_dataset_without_validation_gets_the_folders_split_and_its_leak_column(tmp_path):
    """One rule for every source: a Hub (or saved) dataset with a train split only is split as an image folder is,
    near duplicates of a class on one side, and its validation rows say whether they copy a training image."""
    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    from training.pipeline.data.images import NEAR_DUPLICATE_BITS, fingerprint
    from training.pipeline.data.splits import load_splits

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).resize((96, 96)) for _ in range(24)]
    labels = [i % 2 for i in range(24)]
    twin = Image.fromarray(np.clip(np.asarray(images[0], dtype=np.int16) + 3, 0, 255).astype(np.uint8))
    images += [twin, images[2].copy()]  # a near twin of row 0 (its class), and row 2 again labelled the other class
    labels += [0, 1]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    DatasetDict({"train": Dataset.from_dict({"image": images, "label": labels}, features=features)}).save_to_disk(
        tmp_path / "saved")
    leaks = 0
    for seed in range(6):
        splits = load_splits(str(tmp_path / "saved"), 0.3, seed, None)
        train, validation = splits["train"], splits["validation"]
        assert "leak" in validation.column_names and len(train) + len(validation) == 26
        prints = {"train": [fingerprint(row["image"].convert("RGB")) for row in train],
                  "validation": [fingerprint(row["image"].convert("RGB")) for row in validation]}
        twins = [side for side, rows in prints.items() for exact, near in rows
                 if exact in (fingerprint(images[0])[0], fingerprint(twin)[0])]
        assert len(twins) == 2 and twins[0] == twins[1], (seed, twins)  # the pair is never split
        for (exact, near), leak in zip(prints["validation"], validation["leak"], strict=True):
            copies = any(exact == e or (near != n).sum() <= NEAR_DUPLICATE_BITS for e, n in prints["train"])
            assert leak == copies, seed
        leaks += sum(validation["leak"])
    assert leaks > 0  # the copy across classes landed on both sides at least once, and was marked
