"""The Hub API users' clients reach for, through the real huggingface_hub: lists, card data, refs, PRs."""

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

CARD = b"""---
library_name: timm
pipeline_tag: image-classification
tags:
- vision
- alien-vs-predator
---
# A model
"""


@pytest.fixture(scope="module")
def api(hub):
    return HfApi()


def test_lists_by_author_and_search(api):
    api.create_repo("demo/listed-model", exist_ok=True)
    api.create_repo("demo/listed-data", repo_type="dataset", exist_ok=True)
    api.create_repo("demo/listed-secret", private=True, exist_ok=True)
    models = {m.id for m in api.list_models(author="demo")}
    assert {"demo/listed-model", "demo/listed-secret"} <= models
    assert "demo/listed-secret" not in {m.id for m in HfApi(token=False).list_models(author="demo")}
    assert [d.id for d in api.list_datasets(search="listed-data")] == ["demo/listed-data"]
    assert len(list(api.list_models(author="demo", limit=1))) == 1


def test_card_data_is_parsed_from_the_readme(api):
    api.create_repo("demo/carded", exist_ok=True)
    api.upload_file(path_or_fileobj=CARD, path_in_repo="README.md", repo_id="demo/carded")
    info = api.model_info("demo/carded")
    assert info.library_name == "timm" and info.pipeline_tag == "image-classification"
    assert {"vision", "alien-vs-predator"} <= set(info.tags)
    assert info.card_data.to_dict()["library_name"] == "timm"


def test_branches_tags_and_short_shas(api, tmp_path):
    api.create_repo("demo/refs", exist_ok=True)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="v.txt", repo_id="demo/refs")
    api.create_branch("demo/refs", branch="dev")
    api.create_branch("demo/refs", branch="dev", exist_ok=True)
    api.create_tag("demo/refs", tag="v1.0", tag_message="first")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="v.txt", repo_id="demo/refs", revision="dev")
    refs = api.list_repo_refs("demo/refs")
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1.0"]

    def read(revision):
        return open(hf_hub_download("demo/refs", "v.txt", revision=revision, cache_dir=tmp_path), "rb").read()

    assert read("main") == b"v1" and read("dev") == b"v2" and read("v1.0") == b"v1"
    assert read(first.oid[:7]) == b"v1"
    api.delete_tag("demo/refs", tag="v1.0")
    api.delete_branch("demo/refs", branch="dev")
    assert {b.name for b in api.list_repo_refs("demo/refs").branches} == {"main"}
    with pytest.raises(HfHubHTTPError) as info:
        api.create_branch("demo/refs", branch="../escape")
    assert info.value.response.status_code == 400


def test_pull_request_flow(api, tmp_path):
    api.create_repo("demo/reviewed", exist_ok=True)
    before = api.model_info("demo/reviewed").sha
    pr = api.create_commit("demo/reviewed", [CommitOperationAdd("new.txt", b"candidate")], commit_message="Candidate",
                           commit_description="| metric | main | candidate |", create_pr=True)
    assert pr.pr_num == 1 and pr.pr_revision == "refs/pr/1"
    assert api.model_info("demo/reviewed").sha == before  # main unchanged until merged
    assert open(hf_hub_download("demo/reviewed", "new.txt", revision="refs/pr/1", cache_dir=tmp_path), "rb").read() \
        == b"candidate"
    api.create_commit("demo/reviewed", [CommitOperationAdd("more.txt", b"x")], commit_message="More",
                      revision="refs/pr/1")
    details = api.get_discussion_details("demo/reviewed", 1)
    assert details.is_pull_request and details.status == "open" and details.target_branch == "refs/heads/main"
    assert [e.summary for e in details.events if e.type == "commit"] == ["Candidate", "More"]
    api.comment_discussion("demo/reviewed", 1, "looks better")
    assert [d.num for d in api.get_repo_discussions("demo/reviewed", discussion_type="pull_request")] == [1]
    api.merge_pull_request("demo/reviewed", 1)
    merged = api.get_discussion_details("demo/reviewed", 1)
    assert merged.status == "merged" and merged.merge_commit_oid == api.model_info("demo/reviewed").sha
    assert {"new.txt", "more.txt"} <= set(api.list_repo_files("demo/reviewed"))

    # A second PR that is closed, not merged, leaves main as it was.
    second = api.create_commit("demo/reviewed", [CommitOperationAdd("bad.txt", b"worse")], commit_message="Worse",
                               create_pr=True)
    api.change_discussion_status("demo/reviewed", second.pr_num, "closed", comment="worse on the gate")
    assert api.get_discussion_details("demo/reviewed", second.pr_num).status == "closed"
    assert "bad.txt" not in api.list_repo_files("demo/reviewed")


def test_merge_applies_onto_a_moved_main_and_refuses_conflicts(api):
    api.create_repo("demo/merging", exist_ok=True)
    api.upload_file(path_or_fileobj=b"base", path_in_repo="shared.txt", repo_id="demo/merging")
    ok = api.create_commit("demo/merging", [CommitOperationAdd("pr.txt", b"pr")], commit_message="PR", create_pr=True)
    clash = api.create_commit("demo/merging", [CommitOperationAdd("shared.txt", b"pr side")], commit_message="Clash",
                              create_pr=True)
    api.upload_file(path_or_fileobj=b"main side", path_in_repo="shared.txt", repo_id="demo/merging")
    api.merge_pull_request("demo/merging", ok.pr_num)
    assert {"pr.txt", "shared.txt"} <= set(api.list_repo_files("demo/merging"))
    with pytest.raises(HfHubHTTPError) as info:
        api.merge_pull_request("demo/merging", clash.pr_num)
    assert info.value.response.status_code == 409 and "shared.txt" in str(info.value)


def test_namespaces(api):
    api.create_repo("timm/org-owned", exist_ok=True)  # a configured org
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("someone-else/x")
    assert info.value.response.status_code == 403
    assert {o["name"] for o in api.whoami()["orgs"]} == {"timm"}


def test_a_static_space_is_served_with_web_types_and_a_private_one_only_to_its_owner(api):
    """As <owner>-<name>.static.hf.space: the page renders (text/html), scripts run, WebAssembly streams."""
    import os

    import requests

    for repo, private in (("demo/static-page", False), ("demo/static-secret", True)):
        api.create_repo(repo, repo_type="space", space_sdk="static", private=private, exist_ok=True)
        for name, data in (("index.html", b"<p>hi</p>"), ("js/app.js", b"1"), ("a.wasm", b"\0asm")):
            api.upload_file(path_or_fileobj=data, path_in_repo=name, repo_id=repo, repo_type="space")
    base = f"{os.environ['HF_ENDPOINT']}/static-spaces/demo/static-page"
    page = requests.get(f"{base}/index.html", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and page.text == "<p>hi</p>"
    assert requests.get(f"{base}/js/app.js", timeout=10).headers["content-type"].startswith("text/javascript")
    head = requests.head(f"{base}/a.wasm", timeout=10)
    assert head.status_code == 200 and head.headers["content-type"] == "application/wasm"
    assert head.headers["content-length"] == "4" and head.headers["x-content-type-options"] == "nosniff"
    assert requests.get(f"{base}/missing.js", timeout=10).status_code == 404
    secret = f"{os.environ['HF_ENDPOINT']}/static-spaces/demo/static-secret/index.html"
    assert requests.get(secret, timeout=10).status_code in (401, 404)
    token = os.environ["HF_TOKEN"]
    assert requests.get(secret, headers={"Authorization": f"Bearer {token}"}, timeout=10).text == "<p>hi</p>"
