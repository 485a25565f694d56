"""Refs and reviews, the routes: branches, tags, commit history, and discussions / pull requests
(``refs/pr/N``; their logic is in pulls.py)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from .hub import Hub, HubDep, JsonBody, field, repo_type
from .paths import check_ref_name
from .pulls import (
    comment_event,
    discussion_details,
    discussion_summary,
    event,
    load_discussion,
    merge,
    new_discussion,
    save_discussion,
)
from .storage import HubError

REF_KINDS = {"heads": "branch", "tags": "tag"}


api = APIRouter()
BASE = "/api/{prefix}/{ns}/{name}"

@api.get(BASE + "/refs")
def refs(hub: HubDep, prefix: str, ns: str, name: str, request: Request, include_prs: str | None = None):
    repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")

    def listed(kind: str) -> list[dict]:
        return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in repo.refs(kind).items()]

    out = {"branches": listed("heads"), "tags": listed("tags"), "converts": []}
    if include_prs:
        out["pullRequests"] = listed("pr")
    return out

@api.get(BASE + "/commits/{revision:path}")
def commits(hub: HubDep, prefix: str, ns: str, name: str, revision: str, request: Request):
    repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")
    return [{"id": c["oid"], "title": c["title"], "message": c["message"],
             "authors": [{"user": c["author"]}], "date": c["date"]} for c in repo.history(revision)]

def add_ref(hub: Hub, request: Request, prefix: str, ns: str, name: str, kind: str, ref: str, revision: str) -> dict:
    repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
    target = repo.resolve(revision)
    with hub.storage.lock:
        if check_ref_name(ref) in repo.refs(kind):
            raise HubError(409, f"{REF_KINDS[kind]} {ref!r} already exists")
        hub.storage.set_ref(repo, f"refs/{kind}/{ref}", target)
    return {}

def remove_ref(hub: Hub, request: Request, prefix: str, ns: str, name: str, kind: str, ref: str) -> dict:
    repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
    if kind == "heads" and ref == "main":
        raise HubError(403, "the main branch cannot be deleted")
    if check_ref_name(ref) not in repo.refs(kind):
        raise HubError(404, f"{REF_KINDS[kind]} {ref!r} not found", "RevisionNotFound")
    hub.storage.set_ref(repo, f"refs/{kind}/{ref}", None)
    return {}

@api.post(BASE + "/branch/{branch:path}")
def create_branch(hub: HubDep, prefix: str, ns: str, name: str, branch: str, request: Request, body: JsonBody):
    start = field(body, "startingPoint", str, required=False, default="main")
    return add_ref(hub, request, prefix, ns, name, "heads", branch, start)

@api.delete(BASE + "/branch/{branch:path}")
def delete_branch(hub: HubDep, prefix: str, ns: str, name: str, branch: str, request: Request):
    return remove_ref(hub, request, prefix, ns, name, "heads", branch)

@api.post(BASE + "/tag/{revision:path}")
def create_tag(hub: HubDep, prefix: str, ns: str, name: str, revision: str, request: Request, body: JsonBody):
    return add_ref(hub, request, prefix, ns, name, "tags", field(body, "tag", str), revision)

@api.delete(BASE + "/tag/{tag:path}")
def delete_tag(hub: HubDep, prefix: str, ns: str, name: str, tag: str, request: Request):
    return remove_ref(hub, request, prefix, ns, name, "tags", tag)

@api.get(BASE + "/discussions")
def discussions(hub: HubDep, prefix: str, ns: str, name: str, request: Request, type: str = "all", status: str = "all",
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

@api.post(BASE + "/discussions")
def create_discussion(hub: HubDep, prefix: str, ns: str, name: str, request: Request, body: JsonBody):
    who = hub.require_writer(request)
    repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
    discussion = new_discussion(hub, repo, field(body, "title", str), field(body, "description", str, False, ""),
                                who, field(body, "pullRequest", bool, required=False, default=False))
    return {"num": discussion["num"], "url": f"{hub.url(request, repo)}/discussions/{discussion['num']}"}

@api.get(BASE + "/discussions/{num}")
def details(hub: HubDep, prefix: str, ns: str, name: str, num: str, request: Request):
    repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")
    return discussion_details(repo, load_discussion(repo, num))

@api.post(BASE + "/discussions/{num}/{action}")
def change(hub: HubDep, prefix: str, ns: str, name: str, num: str, action: str, request: Request,
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

