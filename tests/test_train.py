"""Training on the real data, resume after a kill, publishing, and bad input."""

import json
import re
import subprocess
import sys

import pytest
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import DATA_DIR, ROOT, fresh_hf_home, kill_when, run_module


@pytest.fixture(scope="module")
def trained(trained_model):
    return trained_model[:2]


def test_short_run_learns(trained):
    args, results = trained
    assert results["validation"]["n"] == 200 and results["validation_leak_free"]["n"] == 190
    assert results["validation"]["accuracy"] >= 0.85  # chance is 0.5
    assert results["train_images"] + results["holdout_images"] == 160
    assert results["bank_size"] == 2 * 144 + 144  # plain + mirrored + one augmented pass
    saved = json.loads((ROOT / args.output_dir / "results.json").read_text())
    assert saved["validation"]["accuracy"] == results["validation"]["accuracy"]
    run = json.loads((ROOT / args.output_dir / "run.json").read_text())
    assert run["args"]["seed"] == 42 and "torch" in run["versions"]
    names = {p.name for p in (ROOT / args.output_dir / "model").iterdir()}
    assert {"model.safetensors", "config.json"} <= names and not any(n.endswith((".bin", ".pth", ".pkl"))
                                                                     for n in names)  # no pickle


@pytest.mark.slow
def test_pushed_model_loads_in_timm_and_transformers(trained, tmp_path):
    args, results = trained
    files = set(HfApi().list_repo_files("demo/avp-model-test"))
    assert {"model.safetensors", "config.json", "README.md", "results.json"} <= files
    assert not any(f.endswith((".bin", ".pth", ".pt", ".pkl")) for f in files)

    image = tmp_path / "alien.png"
    Image.open(DATA_DIR / "validation" / "alien" / "0.jpg").convert("RGB").save(image)
    script = f"""
import json, timm, torch
from PIL import Image
from transformers import pipeline
model = timm.create_model("hf-hub:demo/avp-model-test", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))
probs = model(transform(Image.open("{image}").convert("RGB")).unsqueeze(0)).softmax(-1)[0].tolist()
names = model.pretrained_cfg["label_names"]
out = pipeline("image-classification", model="demo/avp-model-test")("{image}")
print(json.dumps({{"timm": dict(zip(names, probs)), "pipeline": {{o["label"]: o["score"] for o in out}}}}))
"""
    result = run_module("tests.run_python", script, env=fresh_hf_home(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(loaded["timm"]) == set(loaded["pipeline"]) == {"alien", "predator"}
    assert max(loaded["timm"], key=loaded["timm"].get) == max(loaded["pipeline"], key=loaded["pipeline"].get)
    for name in ("alien", "predator"):
        assert abs(loaded["timm"][name] - loaded["pipeline"][name]) < 0.02

    card = ModelCard.load("demo/avp-model-test")
    data = card.data.to_dict()
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-classification"
    assert data["base_model"] == "timm/tf_efficientnet_lite0.in1k" and data["datasets"] == [args.dataset_id]
    metrics = {(r["dataset"]["config"], m["type"]): m["value"]
               for r in data["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics[("all", "accuracy")] == round(results["validation"]["accuracy"], 4)
    assert metrics[("leak-free", "accuracy")] == round(results["validation_leak_free"]["accuracy"], 4)
    assert not re.search(r"\w [,;.]", card.text), "an empty field in the card"  # e.g. "dropout , augmentation"
    assert f"peak RSS {results['peak_rss_mib']} MiB" in card.text


def _train_command(output_dir, *extra):
    return [sys.executable, "-m", "training.train", "--dataset_id", "demo/alien-vs-predator", "--backbone",
            "tf_efficientnet_lite0", "--pretrained", "false", "--max_train_samples", "48", "--augmented_views", "3",
            "--epochs", "4", "--output_dir", str(output_dir), *extra]


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_model(hub_dataset, tmp_path):
    straight = subprocess.run(_train_command(tmp_path / "straight"), cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    # Killed with SIGKILL while computing the training features, after the second pass was saved.
    marker = tmp_path / "killed" / "checkpoints" / "bank" / "view_002_augmented_001.npy"
    kill_when(_train_command(tmp_path / "killed"), marker)
    assert marker.exists() and not (tmp_path / "killed" / "results.json").exists()
    resumed = subprocess.run(_train_command(tmp_path / "killed", "--resume"), cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_model(tmp_path / "straight", tmp_path / "killed")

    # Lost the last head epoch (as if killed during it): resume from the checkpoint before.
    import shutil

    checkpoints = sorted((tmp_path / "killed" / "checkpoints").glob("epoch_*"))
    shutil.rmtree(checkpoints[-1])
    (tmp_path / "killed" / "model" / "model.safetensors").unlink()
    resumed = subprocess.run(_train_command(tmp_path / "killed", "--resume"), cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout + resumed.stderr
    _assert_same_model(tmp_path / "straight", tmp_path / "killed")


def _assert_same_model(a, b):
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in ("classifier.weight", "classifier.bias"))
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    assert ra["validation"] == rb["validation"]


@pytest.mark.slow
def test_bad_inputs_get_one_clear_error(hub_dataset, tmp_path, monkeypatch, capsys):
    import warnings

    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
    from PIL import Image as PILImage

    from training import train
    from training.cli import run

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # run() sets it for the command's process

    def fails(*args, env=None):
        """The command's exit code and stderr: in this process (its entry point, run()), or in a fresh one when
        the environment differs (the Hub's address is read at import)."""
        argv = [*args, "--output_dir", str(tmp_path / "out")]
        if env is not None:
            result = run_module("training.train", *argv, env=env)
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
            return result.stderr
        monkeypatch.setattr("sys.argv", ["training.train", *argv])
        with pytest.raises(SystemExit) as exited:
            run(train.main)
        stderr = capsys.readouterr().err
        assert exited.value.code == 2 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
        return stderr

    assert "unknown backbone 'resnet5000'" in fails("--dataset_id", hub_dataset, "--backbone", "resnet5000")
    plain = Dataset.from_dict({"image": ["a"], "label": [0]}).cast_column("label", Value("int64"))
    DatasetDict({"train": plain, "validation": plain}).save_to_disk(tmp_path / "no_classlabel")
    assert ("split 'train' needs columns 'image' (Image) and 'label' (ClassLabel); it has image (Value), "
            "label (Value)") in fails("--dataset_id", str(tmp_path / "no_classlabel"))
    labelled = Dataset.from_dict({"image": [PILImage.new("RGB", (8, 8))], "label": [0]}, features=Features(
        {"image": Image(), "label": ClassLabel(names=["alien", "predator"])}))
    empty = Dataset.from_dict({"image": [], "label": []}, features=labelled.features)
    DatasetDict({"train": labelled, "validation": empty}).save_to_disk(tmp_path / "empty_split")
    assert "the 'validation' split is empty" in fails("--dataset_id", str(tmp_path / "empty_split"))
    assert "cannot reach the Hub at HF_ENDPOINT=http://127.0.0.1:9" in fails(
        "--dataset_id", "demo/alien-vs-predator", env={"HF_ENDPOINT": "http://127.0.0.1:9", **fresh_hf_home(tmp_path)})
