"""One-command retraining behind a pull-request gate: merged when every rule passes, left open otherwise."""

import json
import re
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, hf_hub_download

from tests.conftest import run_module

SMALL = ["--max_train_samples", "160", "--augmented_views", "1", "--epochs", "3", "--faithfulness_images", "4"]


def _accuracy_in_card(model_id: str) -> float:
    data = ModelCard.load(model_id).data.to_dict()
    return next(m["value"] for r in data["model-index"][0]["results"] for m in r["metrics"]
                if m["type"] == "accuracy" and r["dataset"]["config"] == "all")


def headings(model_id: str) -> list[str]:
    return re.findall(r"^##+ (.+)$", ModelCard.load(model_id).text, flags=re.M)  # the sections, not the title


def test_retrain_merges_a_passing_candidate_and_leaves_one_failing_on_ece_open(hub_dataset, lite0, trained_model,
                                                                               tmp_path):
    model_id, space_id, api = "demo/retrain-test", "demo/retrain-space", HfApi()

    def retrain(*extra):
        return run_module("training.retrain", "--dataset_id", hub_dataset, "--model_id", model_id,
                          "--output_dir", str(tmp_path / "run"), "--study_dir", str(tmp_path / "none"), *extra)

    trained_on = api.dataset_info(hub_dataset).sha
    first = retrain("--backbone", lite0, *SMALL)  # a new repo: the first model goes to main directly
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data"]["dataset_revision"] == trained_on and len(results["data"]["validation_fingerprint"]) == 16
    # The dataset moves on; a retrain still reads the commit main was trained on (run.json), so the gate
    # compares the two on one validation split.
    api.upload_file(path_or_fileobj=b"a later note", path_in_repo="NOTE.md", repo_id=hub_dataset,
                    repo_type="dataset")
    assert api.dataset_info(hub_dataset).sha != trained_on

    def main_claims(ece: float, other: float, message: str) -> str:
        """Replace main's results.json: ECE ``ece``, every other gate figure at its worst (``other`` = 0) or best."""
        doctored = {**results, "calibration": {**results["calibration"], "validation_after": {"ece": ece, "nll": 1.0}},
                    "validation_leak_free": {**results["validation_leak_free"], "accuracy": other},
                    "ood": {**results["ood"], "validation": {"sure": other, "unsure": 0.0, "neither": 1.0 - other},
                            "methods": {results["ood"]["method"]: {"auroc_test": other}}}}
        api.upload_file(path_or_fileobj=json.dumps(doctored).encode(), path_in_repo="results.json", repo_id=model_id,
                        commit_message=message)
        return api.model_info(model_id).sha

    # main claims the worst of everything: the second run (settings from the repo's run.json, only the seed
    # overridden) passes every rule and is merged by the gate itself.
    worst = main_claims(1.0, 0.0, "main claims the worst of everything")
    commits = len(api.list_repo_commits(model_id))
    second = retrain("--seed", "7", "--space_id", space_id)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(api.list_repo_commits(model_id)) == commits + 1 and api.model_info(model_id).sha != worst
    assert "Retrain: leak-free accuracy" in api.list_repo_commits(model_id)[0].title
    merged = api.get_discussion_details(model_id, 1)
    assert merged.is_pull_request and merged.status == "merged"
    assert merged.merge_commit_oid == api.model_info(model_id).sha  # the Space's model revision moved
    assert "| metric | rule | main | candidate | gate |" in merged.events[0].content
    assert "FAIL" not in merged.events[0].content and "Gate: **not worse: merge**" in merged.events[0].content
    assert api.list_repo_commits(space_id, repo_type="space")[0].title == f"Space for {model_id}"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert _accuracy_in_card(model_id) == round(results["validation"]["accuracy"], 4)
    run = json.loads((tmp_path / "run" / "run.json").read_text())["args"]
    assert run["seed"] == 7 and run["backbone"] == lite0 and run["max_train_samples"] == 160
    assert run["dataset_revision"] == trained_on and f"at commit `{trained_on[:12]}`" in ModelCard.load(model_id).text
    # One path for every pushed model: the merged retrain's card has the sections of a model pushed by
    # training.train's path (the session's test model), faithfulness included, and config.json its cam_method.
    assert headings(model_id) == headings(trained_model[2])
    assert "How faithful the heatmaps are" in headings(model_id)
    config = json.loads(Path(hf_hub_download(model_id, "config.json")).read_text())
    assert config["cam_method"] in ("CAM", "Grad-CAM", "Grad-CAM++", "Layer-CAM")
    assert config["ood"]["unsure_threshold"] <= config["ood"]["threshold"]

    # main claims a perfect ECE and the worst of everything else: a candidate fails on ECE alone, and stays open.
    # (--force and --no_merge take the same path up to the decision, which test_decisions covers.)
    main_before = main_claims(0.0, 0.0, "main claims a perfect ECE")
    failing = retrain("--max_ece", "0")
    assert failing.returncode == 2, failing.stderr[-2000:]
    error = failing.stderr.strip().splitlines()[-1]
    assert "not merged: ECE" in error and "accuracy" not in error and "--force" in error, error
    assert api.model_info(model_id).sha == main_before
    open_prs = list(api.get_repo_discussions(model_id, discussion_type="pull_request", discussion_status="open"))
    assert [d.num for d in open_prs] == [2]
    table = api.get_discussion_details(model_id, 2).events[0].content
    assert "worse (ECE): keep main" in table and table.count("| FAIL |") == 1


def test_decisions():
    from training.publishing.gate import Rule, decide

    worse = [Rule("ECE", "≤ 0.03 or not worse than main", False, 0.01, 0.05)]
    assert decide(True, []) == decide(True, worse, force=True) == "first"  # a new repo: nothing to compare with
    assert decide(False, []) == "merge" and decide(False, worse) == "refuse"
    assert decide(False, worse, force=True) == "merge"
    assert decide(False, [], no_merge=True) == decide(False, worse, no_merge=True) == "review"
