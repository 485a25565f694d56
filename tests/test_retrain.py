"""One-command retraining behind a pull-request gate: merged when not worse, left open when worse."""

import json

from huggingface_hub import HfApi, ModelCard

from tests.conftest import run_module

SMALL = ["--max_train_samples", "160", "--augmented_views", "1", "--epochs", "3"]


def _accuracy_in_card(model_id: str) -> float:
    data = ModelCard.load(model_id).data.to_dict()
    return next(m["value"] for r in data["model-index"][0]["results"] for m in r["metrics"]
                if m["type"] == "accuracy" and r["dataset"]["config"] == "all")


def test_retrain_merges_a_good_candidate_and_leaves_a_worse_one_open(hub_dataset, lite0, tmp_path):
    model_id, space_id, api = "demo/retrain-test", "demo/retrain-space", HfApi()

    def retrain(*extra):
        return run_module("training.retrain", "--dataset_id", hub_dataset, "--model_id", model_id,
                          "--output_dir", str(tmp_path / "run"), "--study_dir", str(tmp_path / "none"), *extra)

    first = retrain("--backbone", lite0, *SMALL)  # a new repo: the first model goes to main directly
    assert first.returncode == 0, first.stderr[-3000:]
    commits = len(api.list_repo_commits(model_id))
    first_sha = api.model_info(model_id).sha

    # The second run takes its settings from the repo's run.json; only the seed is overridden.
    second = retrain("--seed", "7", "--force", "--space_id", space_id)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(api.list_repo_commits(model_id)) == commits + 1 and api.model_info(model_id).sha != first_sha
    assert "Retrain: leak-free accuracy" in api.list_repo_commits(model_id)[0].title
    merged = api.get_discussion_details(model_id, 1)
    assert merged.is_pull_request and merged.status == "merged"
    assert merged.merge_commit_oid == api.model_info(model_id).sha  # the Space's model revision moved
    assert "| metric | main | candidate |" in merged.events[0].content
    assert api.list_repo_commits(space_id, repo_type="space")[0].title == f"Space for {model_id}"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert _accuracy_in_card(model_id) == round(results["validation"]["accuracy"], 4)
    run = json.loads((tmp_path / "run" / "run.json").read_text())["args"]
    assert run["seed"] == 7 and run["backbone"] == lite0 and run["max_train_samples"] == 160

    # Random backbone weights make a much worse model: its pull request stays open, main is unchanged.
    main_before = api.model_info(model_id).sha
    worse = retrain("--pretrained", "false")
    assert worse.returncode == 2 and "not merged" in worse.stderr and "--force" in worse.stderr, worse.stderr[-2000:]
    assert api.model_info(model_id).sha == main_before
    open_prs = list(api.get_repo_discussions(model_id, discussion_type="pull_request", discussion_status="open"))
    assert [d.num for d in open_prs] == [2]
    assert "worse: keep main" in api.get_discussion_details(model_id, 2).events[0].content
