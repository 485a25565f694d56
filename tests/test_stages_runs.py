"""Whole runs with ``--unfreeze_last_stages``: a pushed tuned model, auto's choice, SIGKILL and resume, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from bench.far_folders import make_folder
from localhub.ctl import free_port
from tests.conftest import DATA_DIR, ROOT, fresh_hf_home, kill_when, run_module
from training.pipeline.features.tuning import STAGE_FOLDS

pytestmark = pytest.mark.slow
REPO = "demo/avp-tuned"


def _tiny_run(dataset: str, backbone: str, output_dir, *extra: str) -> list[str]:
    """A short run with the last stage tuned; fp32, eager and without random augmentation (each process draws its
    own), so that 1 and 2 processes can be compared. Pretrained weights: tuning a random network is chaotic."""
    return ["-m", "training.train", "--dataset_id", dataset, "--backbone", backbone, "--max_train_samples", "48",
            "--augmentation", "none", "--epochs", "2", "--stage_epochs", "2", "--unfreeze_last_stages", "1",
            "--mixed_precision", "no", "--torch_compile", "no", "--runtime", "torch", "--output_dir", str(output_dir),
            *extra]


@pytest.fixture(scope="module")
def tuned_run(hub_dataset, lite0, tmp_path_factory):
    """The tiny tuned run, pushed as demo/avp-tuned by the path every pushed model takes."""
    output_dir = tmp_path_factory.mktemp("tuned") / "run"
    done = run_module(*_tiny_run(hub_dataset, lite0, output_dir, "--push_to_hub", "--model_id", REPO,
                                 "--faithfulness_images", "2")[1:])
    assert done.returncode == 0, done.stderr[-3000:]
    return output_dir, done.stdout


def test_a_tuned_model_pushed_loads_in_timm_the_pipeline_and_the_space_with_the_same_answers(tuned_run, tmp_path):
    output_dir, stdout = tuned_run
    assert "last stages tuned: 1" in stdout
    results = json.loads((output_dir / "results.json").read_text())
    assert results["stages"]["chosen"] == 1 and results["stages"]["fold_tunings"] == STAGE_FOLDS
    # the out-of-fold heads (calibration, "neither") hold out exactly the folds the tunings left out
    assert f"({STAGE_FOLDS} folds" in results["ood"]["threshold_from"]
    card = ModelCard.load(REPO)
    assert "last 1 stage(s) tuned" in card.text and "tuned-last-stages" in card.data.tags
    assert "--unfreeze_last_stages 1" in card.text

    paths = []
    for i, image in enumerate(DATA_DIR / "validation" / kind / f"{i}.jpg" for kind in ("alien", "predator")
                              for i in range(3)):
        paths.append(tmp_path / f"{i}.png")
        Image.open(image).convert("RGB").save(paths[-1])
    script = f"""
import json, timm, torch
from PIL import Image
from transformers import pipeline
from space.inference import Classifier
paths = {[str(p) for p in paths]!r}
model = timm.create_model("hf-hub:{REPO}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))
names = model.pretrained_cfg["label_names"]
pipe = pipeline("image-classification", model="{REPO}")
space = Classifier("{REPO}")
out = []
for path in paths:
    with torch.no_grad():
        probs = model(transform(Image.open(path).convert("RGB")).unsqueeze(0)).softmax(-1)[0].tolist()
    top = pipe(path)[0]
    answer = space.predict(Image.open(path), method=None)
    out.append({{"timm": names[max(range(len(probs)), key=probs.__getitem__)], "timm_p": max(probs),
                "pipeline": top["label"], "space": max(answer.confidences, key=answer.confidences.get),
                "space_p": max(answer.confidences.values())}})
print(json.dumps(out))
"""
    loaded = run_module("tests.run_python", script, env=fresh_hf_home(tmp_path))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    for row in json.loads(loaded.stdout.strip().splitlines()[-1]):
        assert row["timm"] == row["pipeline"] == row["space"], row
        assert abs(row["timm_p"] - row["space_p"]) < 1e-4


def test_killed_during_the_tunings_or_the_head_resumes_to_the_same_tuned_model(tuned_run, hub_dataset, lite0,
                                                                              tmp_path):
    straight = tuned_run[0]
    # SIGKILL while tuning the folds, after the first one was saved.
    marker = tmp_path / "killed" / "checkpoints" / "stages" / "depth_1_fold_0.safetensors"
    kill_when([sys.executable, *_tiny_run(hub_dataset, lite0, tmp_path / "killed")], marker)
    assert marker.exists() and not (tmp_path / "killed" / "results.json").exists()
    resumed = run_module(*_tiny_run(hub_dataset, lite0, tmp_path / "killed", "--resume")[1:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_tuned_model(straight, tmp_path / "killed")

    # Lost the last head epoch (as if killed during it): every tuning is read back, and the head's checkpoint
    # (which must hold the head alone, the tunings being skipped now) is restored.
    shutil.rmtree(sorted((tmp_path / "killed" / "checkpoints").glob("epoch_*"))[-1])
    (tmp_path / "killed" / "model" / "model.safetensors").unlink()
    resumed = run_module(*_tiny_run(hub_dataset, lite0, tmp_path / "killed", "--resume")[1:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    _assert_same_tuned_model(straight, tmp_path / "killed")


def test_torchrun_with_two_processes_gives_the_one_process_tuned_model(tuned_run, hub_dataset, lite0, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port())]
    two = subprocess.run([*torchrun, *_tiny_run(hub_dataset, lite0, tmp_path / "two")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "results.json").read_text())["num_processes"] == 2
    _assert_same_tuned_model(tuned_run[0], tmp_path / "two")


def _assert_same_tuned_model(a_dir, b_dir):
    a, b = (load_file(d / "model" / "model.safetensors") for d in (a_dir, b_dir))
    assert a.keys() == b.keys()
    tuned = [k for k in a if k.startswith(("blocks.6.", "conv_head.", "bn2.")) and a[k].is_floating_point()]
    assert tuned and max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()) < 1e-4
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a_dir, b_dir))
    assert ra["stages"]["chosen"] == rb["stages"]["chosen"] == 1
    assert ra["validation"]["confusion_matrix"] == rb["validation"]["confusion_matrix"]
    assert ra["stages"]["tuned"]["last"] == pytest.approx(rb["stages"]["tuned"]["last"], abs=1e-4)


@pytest.mark.parametrize(("kind", "expected"), [("glyphs", "tuned"), ("flat", "frozen")])
def test_auto_tunes_on_a_folder_far_from_imagenet_and_not_on_one_the_frozen_head_separates(kind, expected, lite0,
                                                                                          tmp_path):
    folder = tmp_path / kind
    if kind == "glyphs":
        make_folder(folder, "glyphs", train_per_class=32, validation_per_class=4)
    else:  # red and blue noise: ImageNet features separate them at once (and no two images are near duplicates)
        import numpy as np

        rng = np.random.default_rng(0)
        for split, count in (("train", 60), ("validation", 5)):
            for name, colour in (("red", (1.0, 0.2, 0.2)), ("blue", (0.2, 0.2, 1.0))):
                (folder / split / name).mkdir(parents=True)
                for i in range(count):
                    noise = rng.random((48, 48, 1)) * 255 * np.array(colour)
                    Image.fromarray(noise.astype(np.uint8)).save(folder / split / name / f"{i}.png")
    done = run_module("training.train", "--dataset_id", str(folder), "--backbone", lite0, "--augmented_views", "2",
                      "--epochs", "5", "--holdout_fraction", "0.25", "--unfreeze_last_stages", "auto",
                      "--output_dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    stages = json.loads((tmp_path / "run" / "results.json").read_text())["stages"]
    shown = {k: v for k, v in stages.items() if k != "tuned"} | {"tuned": stages.get("tuned", {}).get("last")}
    assert (stages["chosen"] > 0) == (expected == "tuned"), shown
