"""Refs and reviews: branches, tags, commit history, and discussions / pull requests (``refs/pr/N``).

A pull request is a ref ``refs/pr/N`` forked from its base branch; merging applies its changes
onto the base (a fast-forward when the base has not moved), refusing files both sides changed.
"""

from __future__ import annotations

import json
import secrets

from fastapi import APIRouter, Request

from .hub import Hub, JsonBody, field, repo_type
from .paths import check_tree
from .storage import HubError, Repo, atomic_write, now

REF_KINDS = {"heads": "branch", "tags": "tag"}


def check_ref_name(name: str) -> str:
    """Branch and tag names: letters, digits, - _ . (no slashes: revisions in URLs stay unambiguous)."""
    if not name or len(name) > 100 or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise HubError(400, f"invalid ref name {name[:100]!r}: use letters, digits, '-', '_' and '.'")
    return name


def event(kind: str, who: str, data: dict) -> dict:
    return {"id": secrets.token_hex(12), "type": kind, "createdAt": now(), "author": {"name": who}, "data": data}


def comment_event(who: str, text: str) -> dict:
    return event("comment", who, {"edited": False, "hidden": False, "latest": {"raw": text}})


def load_discussion(repo: Repo, num: str | int) -> dict:
    path = repo.root / "discussions" / f"{num}.json"
    if not str(num).isdigit() or not path.is_file():
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


def router(hub: Hub) -> APIRouter:
    api = APIRouter()
    base = "/api/{prefix}/{ns}/{name}"

    @api.get(base + "/refs")
    def refs(prefix: str, ns: str, name: str, request: Request, include_prs: str | None = None):
        repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")

        def listed(kind: str) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in repo.refs(kind).items()]

        out = {"branches": listed("heads"), "tags": listed("tags"), "converts": []}
        if include_prs:
            out["pullRequests"] = listed("pr")
        return out

    @api.get(base + "/commits/{revision:path}")
    def commits(prefix: str, ns: str, name: str, revision: str, request: Request):
        repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")
        return [{"id": c["oid"], "title": c["title"], "message": c["message"],
                 "authors": [{"user": c["author"]}], "date": c["date"]} for c in repo.history(revision)]

    def add_ref(request: Request, prefix: str, ns: str, name: str, kind: str, ref: str, revision: str) -> dict:
        repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
        target = repo.resolve(revision)
        with hub.storage.lock:
            if check_ref_name(ref) in repo.refs(kind):
                raise HubError(409, f"{REF_KINDS[kind]} {ref!r} already exists")
            hub.storage.set_ref(repo, f"refs/{kind}/{ref}", target)
        return {}

    def remove_ref(request: Request, prefix: str, ns: str, name: str, kind: str, ref: str) -> dict:
        repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
        if kind == "heads" and ref == "main":
            raise HubError(403, "the main branch cannot be deleted")
        if check_ref_name(ref) not in repo.refs(kind):
            raise HubError(404, f"{REF_KINDS[kind]} {ref!r} not found", "RevisionNotFound")
        hub.storage.set_ref(repo, f"refs/{kind}/{ref}", None)
        return {}

    @api.post(base + "/branch/{branch:path}")
    def create_branch(prefix: str, ns: str, name: str, branch: str, request: Request, body: JsonBody):
        start = field(body, "startingPoint", str, required=False, default="main")
        return add_ref(request, prefix, ns, name, "heads", branch, start)

    @api.delete(base + "/branch/{branch:path}")
    def delete_branch(prefix: str, ns: str, name: str, branch: str, request: Request):
        return remove_ref(request, prefix, ns, name, "heads", branch)

    @api.post(base + "/tag/{revision:path}")
    def create_tag(prefix: str, ns: str, name: str, revision: str, request: Request, body: JsonBody):
        return add_ref(request, prefix, ns, name, "tags", field(body, "tag", str), revision)

    @api.delete(base + "/tag/{tag:path}")
    def delete_tag(prefix: str, ns: str, name: str, tag: str, request: Request):
        return remove_ref(request, prefix, ns, name, "tags", tag)

    @api.get(base + "/discussions")
    def discussions(prefix: str, ns: str, name: str, request: Request, type: str = "all", status: str = "all",
                    author: str | None = None, p: int = 0):
        repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")
        folder = repo.root / "discussions"
        found = [json.loads(f.read_text()) for f in folder.glob("*.json")] if folder.is_dir() else []
        found = [d for d in sorted(found, key=lambda d: -d["num"])
                 if (type == "all" or d["isPullRequest"] == (type == "pull_request"))
                 and (status == "all" or d["status"] == status) and (author is None or d["author"] == author)]
        page = found[p * 50:(p + 1) * 50]
        return {"discussions": [discussion_summary(repo, d) for d in page], "count": len(found), "start": p * 50,
                "numClosedDiscussions": sum(d["status"] != "open" for d in found)}

    @api.post(base + "/discussions")
    def create_discussion(prefix: str, ns: str, name: str, request: Request, body: JsonBody):
        who = hub.require_writer(request)
        repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
        discussion = new_discussion(hub, repo, field(body, "title", str), field(body, "description", str, False, ""),
                                    who, field(body, "pullRequest", bool, required=False, default=False))
        return {"num": discussion["num"], "url": f"{hub.url(request, repo)}/discussions/{discussion['num']}"}

    @api.get(base + "/discussions/{num}")
    def details(prefix: str, ns: str, name: str, num: str, request: Request):
        repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")
        return discussion_details(repo, load_discussion(repo, num))

    @api.post(base + "/discussions/{num}/{action}")
    def change(prefix: str, ns: str, name: str, num: str, action: str, request: Request,
               body: JsonBody):
        who = hub.require_writer(request)
        repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
        comment = field(body, "comment", str, required=False, default="").strip()
        with hub.storage.lock:
            discussion = load_discussion(repo, num)
            if action == "comment":
                if not comment:
                    raise HubError(400, "field 'comment' must not be empty")
                new = comment_event(who, comment)
                discussion["events"].append(new)
                answer = {"newMessage": new}
            elif action in ("status", "merge"):
                status = "merged" if action == "merge" else field(body, "status", str)
                if status not in ("open", "closed", "merged"):
                    raise HubError(400, f"field 'status' must be open or closed, got {status!r}")
                if discussion["status"] == "merged":
                    raise HubError(400, f"discussion #{num} is already merged")
                if status == "merged":
                    if not discussion["isPullRequest"]:
                        raise HubError(400, f"discussion #{num} is not a pull request")
                    discussion["mergeCommitId"] = merge(hub, repo, discussion, who)
                if comment:
                    discussion["events"].append(comment_event(who, comment))
                new = event("status-change", who, {"status": status})
                discussion["events"].append(new)
                discussion["status"] = status
                answer = {"newStatus": new}
            else:
                raise HubError(404, f"unknown discussion action {action!r}")
            save_discussion(repo, discussion)
        return answer

    return api
