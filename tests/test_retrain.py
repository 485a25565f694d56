"""One-command retraining: new revisions, refreshed card, and a worse model refused."""

import json

from huggingface_hub import HfApi, ModelCard

from tests.conftest import run_module

SMALL = ["--max_train_samples", "160", "--augmented_views", "1", "--epochs", "3"]


def _accuracy_in_card(model_id: str) -> float:
    data = ModelCard.load(model_id).data.to_dict()
    return next(m["value"] for r in data["model-index"][0]["results"] for m in r["metrics"]
                if m["type"] == "accuracy" and r["dataset"]["config"] == "all")


def test_retrain_pushes_revisions_and_refuses_a_worse_model(hub_dataset, lite0, tmp_path):
    model_id, api = "demo/retrain-test", HfApi()

    def retrain(*extra):
        return run_module("training.retrain", "--dataset_id", hub_dataset, "--model_id", model_id,
                          "--output_dir", str(tmp_path / "run"), "--study_dir", str(tmp_path / "none"), *extra)

    first = retrain("--backbone", lite0, *SMALL)
    assert first.returncode == 0, first.stderr[-3000:]
    commits = len(api.list_repo_commits(model_id))

    # The second run takes its settings from the repo's run.json; only the seed is overridden.
    second = retrain("--seed", "7", "--force")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(api.list_repo_commits(model_id)) == commits + 1
    assert "Retrain: validation accuracy" in api.list_repo_commits(model_id)[0].title
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert _accuracy_in_card(model_id) == round(results["validation"]["accuracy"], 4)
    run = json.loads((tmp_path / "run" / "run.json").read_text())["args"]
    assert run["seed"] == 7 and run["backbone"] == lite0 and run["max_train_samples"] == 160

    # Random backbone weights make a much worse model: refused without --force, nothing pushed.
    worse = retrain("--pretrained", "false")
    assert worse.returncode == 2 and "not pushed" in worse.stderr and "--force" in worse.stderr, worse.stderr[-2000:]
    assert len(api.list_repo_commits(model_id)) == commits + 1
