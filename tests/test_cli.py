"""One vocabulary across commands: the same flags, old spellings kept with a warning, bad choices
refused before any work, an example under every --help, and torchrun giving the same model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import HfApi
from safetensors.torch import load_file

from localhub.ctl import free_port
from tests.conftest import ROOT, run_module
from tests.test_any_folder import shapes_folder
from training.cli import CommaList, Renamed, RepoIdFlag, SeedCount, rewrite_deprecated
from training.errors import UserError

COMMANDS = ("dataset", "train", "predict", "study", "faithfulness", "publish_space", "demo", "retrain")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--dataset", "a/b"], ["--dataset_id", "a/b"]),
    (["--dataset=a/b"], ["--dataset_id=a/b"]),
    (["--push_to_hub", "a/b", "--seed", "1"], ["--push_to_hub", "--model_id", "a/b", "--seed", "1"]),
    (["--push_to_hub=a/b"], ["--push_to_hub", "--model_id", "a/b"]),
    (["--push_to_hub", "--seed", "1"], ["--push_to_hub", "--seed", "1"]),  # today's switch: unchanged
    (["--push_to_hub", "true"], ["--push_to_hub", "true"]),
    (["--seeds", "3"], ["--seeds", "0", "1", "2"]),
    (["--seeds", "0", "5"], ["--seeds", "0", "5"]),
    (["--variants", "none,base"], ["--variants", "none", "base"]),
])
def test_old_spellings_become_todays_with_a_warning(argv, expected):
    aliases = (Renamed("dataset", "dataset_id"), RepoIdFlag("push_to_hub", "model_id"), SeedCount("seeds"),
               CommaList("variants"))
    with pytest.warns(FutureWarning) if argv != expected else _no_warning():
        assert rewrite_deprecated(argv, aliases) == expected


class _no_warning:
    def __enter__(self):
        import warnings

        self.context = warnings.catch_warnings()
        self.context.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self.context.__exit__(*exc)


@pytest.mark.slow
def test_deprecated_push_to_hub_id_still_pushes_with_one_warning_line(hub, tmp_path):
    folder = shapes_folder(tmp_path / "shapes", classes=2, per_class=6)
    result = run_module("training.dataset", "--data_dir", str(folder), "--push_to_hub", "demo/alias-test",
                        "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --push_to_hub ID is deprecated: use --push_to_hub --dataset_id ID"]
    assert HfApi().repo_exists("demo/alias-test", repo_type="dataset")


@pytest.mark.slow
@pytest.mark.parametrize(("command", "args", "bad"), [
    ("train", ["--dataset_id", "x/y", "--augmentation", "sepia"], "'sepia'"),
    ("train", ["--dataset_id", "x/y", "--class_weight", "inverse"], "'inverse'"),
    ("train", ["--dataset_id", "x/y", "--mixed_precision", "fp8"], "'fp8'"),
    ("study", ["--dataset_id", "x/y", "--variants", "base", "sepia"], "'sepia'"),
    ("predict", ["--model_id", "x/y", "--mixed_precision", "fp16", "a.jpg"], "'fp16'"),
])
def test_bad_choices_are_refused_before_any_work(command, args, bad):
    result = run_module(f"training.{command}", *args, env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert bad in result.stderr.splitlines()[-1]  # one line naming the bad value ...
    assert ("none, base, grayscale, noise" in result.stderr or "balanced" in result.stderr
            or "bf16" in result.stderr)  # ... and the allowed ones


def test_arguments_built_in_code_are_checked_too():
    from training.train import TrainArguments

    with pytest.raises(UserError, match="--augmentation: 'sepia' is not one of none, base, grayscale, noise"):
        TrainArguments(dataset_id="x/y", augmentation="sepia")
    with pytest.raises(UserError, match="--push_to_hub needs --model_id"):
        TrainArguments(dataset_id="x/y", push_to_hub=True)


@pytest.mark.parametrize(("command", "argv", "expected"), [
    ("train", ["--dataset_id", "x/y", "--epochz", "3"], "unknown flag --epochz: did you mean --epochs?"),
    ("predict", ["--model_id", "x/y", "--outptu", "a.csv", "a.jpg"], "unknown flag --outptu: did you mean --output?"),
    ("demo", ["--data_dir", "d", "--tilte", "T"], "unknown flag --tilte: did you mean --title?"),
    ("faithfulness", ["--output_dir", "o", "--dataset_id", "x/y", "--imgaes=4"],
     "unknown flag --imgaes: did you mean --images?"),
    ("dataset", ["--data_dir", "d", "--push_to_hbu"], "unknown flag --push_to_hbu: did you mean --push_to_hub?"),
    ("publish_space", ["--space_id", "s", "--model_id", "m", "--dataset_id", "d", "--xyzzy"],
     "unknown flag --xyzzy (see --help)"),
    ("study", ["--dataset_id", "x/y", "--seedz", "1"], "unknown flag --seedz: did you mean --seeds?"),
    ("retrain", ["--dataset_id", "x/y", "--model_id", "a/b", "--epochz", "3"],
     "unknown flag --epochz: did you mean --epochs?"),
    ("retrain", ["--dataset_id", "x/y", "--model_id", "a/b", "--static_spce_id", "s"],
     "unknown flag --static_spce_id: did you mean --static_space_id?"),
])
def test_a_misspelled_flag_gets_one_line_naming_the_closest(monkeypatch, capsys, command, argv, expected):
    import importlib

    from training.errors import run_cli

    module = importlib.import_module(f"training.{command}")
    if command == "retrain":  # its own flags first, then the training overrides: no Hub is asked before
        monkeypatch.setattr(module, "current_run", lambda model_id: ({}, None))
    monkeypatch.setattr(sys, "argv", [f"{command}.py", *argv])
    with pytest.raises(SystemExit) as exited:
        run_cli(module.main)
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {expected}"]


def test_every_command_shows_an_example_in_its_help(monkeypatch, capsys):
    import importlib

    for command in COMMANDS:
        module = importlib.import_module(f"training.{command}")
        monkeypatch.setattr(sys, "argv", [f"{command}.py", "--help"])
        with pytest.raises(SystemExit) as exited:
            module.main()
        assert exited.value.code == 0, command
        assert f"python -m training.{command} --" in capsys.readouterr().out, command


def test_study_runs_its_variants_and_seeds(tmp_path):
    from training.study import StudyArguments, plot, run_study

    folder = shapes_folder(tmp_path / "shapes", classes=2, per_class=15, split=True)
    study = run_study(StudyArguments(dataset_id=str(folder), seeds=[0, 1], epochs=2, variants=["none", "base"],
                                     backbone_runs=False, output_dir=str(tmp_path / "study")))
    assert [(r["augmentation"], r["seeds"]) for r in study["rows"]] == [("none", [0, 1]), ("base", [0, 1])]
    for r in study["rows"]:
        assert len(r["accuracies"]) == 2 and all(0 <= a <= 1 for a in r["accuracies"])
        assert r["mean"] == pytest.approx(sum(r["accuracies"]) / 2)
    assert "over 2 seeds" in study["summary"]
    plot(study, tmp_path / "study.png")
    assert (tmp_path / "study.png").stat().st_size > 1000


@pytest.mark.slow
def test_torchrun_with_two_processes_gives_the_one_process_model(hub_dataset, tmp_path):
    # onnxruntime features here. torch's under torchrun are tested with a tuned stage (test_stages_runs): its
    # validation features go through the same distributed split_features, and the same head trains on them.
    runtime = "onnxruntime"
    common = ["-m", "training.train", "--dataset_id", hub_dataset, "--backbone", "tf_efficientnet_lite0",
              "--pretrained", "false", "--max_train_samples", "96", "--augmentation", "none", "--epochs", "3",
              "--mixed_precision", "no", "--torch_compile", "no", "--runtime", runtime]
    one = subprocess.run([sys.executable, *common, "--output_dir", str(tmp_path / "one")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port())]
    two = subprocess.run([*torchrun, *common, "--output_dir", str(tmp_path / "two")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "two"))
    assert (a["num_processes"], b["num_processes"]) == (1, 2) and a["runtime"] == b["runtime"] == runtime
    for split in ("validation", "validation_leak_free"):
        assert a[split]["accuracy"] == b[split]["accuracy"] and a[split]["confusion_matrix"] == b[split][
            "confusion_matrix"]
    assert a["best_epoch"] == b["best_epoch"]
    assert a["calibration"]["validation_after"]["nll"] == pytest.approx(b["calibration"]["validation_after"]["nll"],
                                                                        abs=1e-4)
    wa, wb = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("one", "two"))
    assert (wa["classifier.weight"] - wb["classifier.weight"]).abs().max() < 1e-3
