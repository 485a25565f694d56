"""Discussions and pull requests: a pull request is a ref ``refs/pr/N`` forked from its base branch;
merging applies its changes onto the base (a fast-forward when the base has not moved), refusing
files both sides changed. The routes are in refs.py; files.py records commits made to a PR.
"""

from __future__ import annotations

import json
import secrets

from .hub import Hub
from .paths import PR_NUMBER, check_tree
from .storage import HubError, Repo, atomic_write, now


def event(kind: str, who: str, data: dict) -> dict:
    return {"id": secrets.token_hex(12), "type": kind, "createdAt": now(), "author": {"name": who}, "data": data}


def comment_event(who: str, text: str) -> dict:
    return event("comment", who, {"edited": False, "hidden": False, "latest": {"raw": text}})


def load_discussion(repo: Repo, num: str | int) -> dict:
    if not PR_NUMBER.fullmatch(str(num)):  # before any path is made from it
        raise HubError(404, f"discussion #{str(num)[:20]!r} not found in {repo.repo_id}")
    path = repo.root / "discussions" / f"{num}.json"
    if not path.is_file():
        raise HubError(404, f"discussion #{num} not found in {repo.repo_id}")
    return json.loads(path.read_text())


def save_discussion(repo: Repo, discussion: dict) -> None:
    atomic_write(repo.root / "discussions" / f"{discussion['num']}.json", json.dumps(discussion).encode())


def new_discussion(hub: Hub, repo: Repo, title: str, description: str, who: str, pull_request: bool,
                   base: str = "main") -> dict:
    with hub.storage.lock:
        folder = repo.root / "discussions"
        num = 1 + max((int(p.stem) for p in folder.glob("*.json")), default=0) if folder.is_dir() else 1
        discussion = {"num": num, "title": title.strip() or f"#{num}", "status": "draft" if pull_request else "open",
                      "isPullRequest": pull_request, "author": who, "createdAt": now(),
                      "events": [comment_event(who, description)] if description else []}
        if pull_request:
            fork = repo.head(base)["oid"]
            discussion.update(base=f"refs/heads/{base.removeprefix('refs/heads/')}", forkOid=fork,
                              mergeCommitId=None)
            hub.storage.set_ref(repo, f"refs/pr/{num}", fork)
        save_discussion(repo, discussion)
    return discussion


def open_pull_request(hub: Hub, repo: Repo, title: str, description: str, who: str, base: str) -> dict:
    """The PR ``create_commit(..., create_pr=True)`` makes: forked from ``base``, the commit lands on its ref."""
    if base.startswith("refs/pr/") or base.removeprefix("refs/heads/") not in repo.refs("heads"):
        raise HubError(400, f"a pull request needs a branch as its base, got {base!r}")
    return new_discussion(hub, repo, title, description, who, pull_request=True, base=base)


def record_commit(hub: Hub, repo: Repo, num: int, commit: dict, who: str) -> None:
    with hub.storage.lock:
        discussion = load_discussion(repo, num)
        discussion["events"].append(event("commit", who, {"subject": commit["title"], "oid": commit["oid"]}))
        if discussion["status"] == "draft":
            discussion["status"] = "open"
        save_discussion(repo, discussion)


def merge(hub: Hub, repo: Repo, discussion: dict, who: str) -> str:
    """Apply the PR's changes (against its fork point) onto its base; returns the base's new commit id."""
    base = discussion["base"].removeprefix("refs/heads/")
    head, fork, target = repo.head(f"refs/pr/{discussion['num']}"), repo.commit(discussion["forkOid"]), repo.head(base)
    ours = {p for p in {*fork["files"], *head["files"]} if fork["files"].get(p) != head["files"].get(p)}
    theirs = {p for p in {*fork["files"], *target["files"]} if fork["files"].get(p) != target["files"].get(p)}
    conflicts = sorted(p for p in ours & theirs if head["files"].get(p) != target["files"].get(p))
    if conflicts:
        raise HubError(409, f"pull request #{discussion['num']} conflicts with {base} in {', '.join(conflicts[:10])}")
    if target["oid"] == fork["oid"]:
        hub.storage.set_ref(repo, f"refs/heads/{base}", head["oid"])  # fast-forward
        return head["oid"]
    files = dict(target["files"])
    for path in ours:
        if path in head["files"]:
            files[path] = head["files"][path]
        else:
            files.pop(path, None)
    check_tree(files)
    merged = hub.storage.write_commit(repo, target["oid"], f"Merge pull request #{discussion['num']}",
                                      discussion["title"], who, files, branch=base)
    return merged["oid"]


def discussion_summary(repo: Repo, d: dict) -> dict:
    return {"num": d["num"], "title": d["title"], "status": d["status"], "isPullRequest": d["isPullRequest"],
            "createdAt": d["createdAt"], "author": {"name": d["author"]}, "pinned": False,
            "repo": {"name": repo.repo_id, "type": repo.repo_type}, "numComments": len(d["events"])}


def discussion_details(repo: Repo, d: dict) -> dict:
    details = {**discussion_summary(repo, d), "events": d["events"], "filesWithConflicts": []}
    if d["isPullRequest"]:
        details["changes"] = {"base": d["base"], "mergeCommitId": d.get("mergeCommitId")}
    return details
