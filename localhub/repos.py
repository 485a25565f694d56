"""Repos: who am I, create / delete / settings, repo info with its card data, and listing."""

from __future__ import annotations

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .hub import Hub, HubDep, JsonBody, field, repo_type
from .storage import REPO_TYPES, HubError, Repo

MAX_YAML_BYTES = 100 * 1024  # a card's front matter; YAML parsing time grows fast with size


def front_matter(text: str) -> str:
    """A README's YAML header (between the first two ``---`` lines), or '' without one."""
    if not text.startswith("---"):
        return ""
    parts = text.split("---", 2)
    return parts[1] if len(parts) == 3 else ""


def parse_yaml(text: str) -> dict:
    if len(text.encode()) > MAX_YAML_BYTES:
        raise HubError(413, f"YAML is over the limit of {MAX_YAML_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise HubError(400, f"invalid YAML: {e}") from None
    return data if isinstance(data, dict) else {}


def card_data(hub: Hub, commit: dict) -> dict:
    """The README's metadata as the Hub reports it; a broken or missing card gives {}."""
    entry = commit["files"].get("README.md")
    if entry is None or entry["size"] > 4 * MAX_YAML_BYTES:
        return {}
    try:
        return parse_yaml(front_matter(hub.storage.blob_path(entry["sha256"]).read_text(encoding="utf-8")))
    except (HubError, UnicodeDecodeError):
        return {}


def summary(hub: Hub, repo: Repo, commit: dict) -> dict:
    """The fields repo info and listings share (``cardData`` and what the Hub derives from it)."""
    meta, card = repo.meta, card_data(hub, commit)
    tags = card.get("tags") if isinstance(card.get("tags"), list) else []
    info = {"id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit["oid"],
            "private": meta["private"], "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": [str(t) for t in tags], "createdAt": meta["created"], "lastModified": commit["date"],
            "cardData": card}
    for key in ("library_name", "pipeline_tag"):
        if isinstance(card.get(key), str):
            info[key] = card[key]
    if repo.repo_type == "space":
        info["sdk"] = meta.get("sdk") or card.get("sdk")
    return info


api = APIRouter()

@api.get("/api/whoami-v2")
def whoami(hub: HubDep, request: Request):
    who = hub.caller(request)
    if who is None:
        raise HubError(401, "Invalid credentials in Authorization header")
    access = {"displayName": "localhub", "role": "write"}
    return {"type": "user", "name": who, "fullname": who, "isPro": False,
            "orgs": [{"type": "org", "name": org, "fullname": org} for org in hub.orgs],
            "auth": {"type": "access_token", "accessToken": access}}

@api.post("/api/validate-yaml")
def validate_yaml(body: JsonBody):
    content = field(body, "content", str, required=False, default="")
    try:
        parse_yaml(front_matter(content) if content.startswith("---") else content)
    except HubError as e:
        if e.status != 400:
            raise
        return JSONResponse({"errors": [{"message": e.message}]}, status_code=400)
    return {"errors": [], "warnings": []}

@api.post("/api/repos/create")
def create_repo(hub: HubDep, request: Request, body: JsonBody):
    who = hub.require_writer(request)
    kind = field(body, "type", str, required=False, default="model")
    namespace = field(body, "organization", str, required=False, default=who)
    hub.require_writer(request, namespace)
    repo_id = f"{namespace}/{field(body, 'name', str)}"
    private = field(body, "private", bool, required=False, default=False)
    visibility = field(body, "visibility", str, required=False, default="")
    if visibility not in ("", "public", "private"):
        raise HubError(400, f"field 'visibility' must be public or private, got {visibility!r}")
    sdk = field(body, "sdk", str, required=False)
    if kind not in REPO_TYPES:
        raise HubError(400, f"unknown repo type {kind!r}: use one of {', '.join(REPO_TYPES)}")
    try:
        repo = hub.storage.create(kind, repo_id, private or visibility == "private", who, sdk=sdk)
    except HubError as e:  # the Hub's 409 still carries the url; exist_ok=True relies on it
        if e.status != 409:
            raise
        url = hub.url(request, Repo(None, kind, repo_id))
        return JSONResponse({"error": e.message, "url": url}, status_code=409)
    return {"url": hub.url(request, repo), "name": repo_id, "id": repo_id}

@api.delete("/api/repos/delete")
def delete_repo(hub: HubDep, request: Request, body: JsonBody):
    who = hub.require_writer(request)
    namespace = field(body, "organization", str, required=False, default=who)
    repo_id = f"{namespace}/{field(body, 'name', str)}"
    kind = field(body, "type", str, required=False, default="model")
    hub.writable(request, kind, repo_id)
    hub.storage.delete(kind, repo_id)
    return {}

@api.put("/api/{prefix}/{ns}/{name}/settings")
def settings(hub: HubDep, prefix: str, ns: str, name: str, request: Request, body: JsonBody):
    repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
    private = field(body, "private", bool, required=False)
    visibility = field(body, "visibility", str, required=False)
    if visibility is not None and visibility not in ("public", "private"):
        raise HubError(400, f"field 'visibility' must be public or private, got {visibility!r}")
    if private is not None or visibility is not None:
        hub.storage.set_private(repo, private if private is not None else visibility == "private")
    return {}

@api.get("/api/{prefix}")
def list_repos(hub: HubDep, prefix: str, request: Request, author: str | None = None, search: str | None = None,
               limit: int | None = None):
    kind = repo_type(prefix)
    found = []
    for repo in hub.storage.all_repos(kind):
        if repo.meta["private"] and hub.caller(request) is None:
            continue
        if author and repo.repo_id.split("/")[0] != author:
            continue
        if search and search.lower() not in repo.repo_id.lower():
            continue
        found.append(summary(hub, repo, repo.head("main")))
        if limit is not None and len(found) >= limit:
            break
    return found

@api.get("/api/{prefix}/{ns}/{name}")
@api.get("/api/{prefix}/{ns}/{name}/revision/{revision:path}")
def repo_info(hub: HubDep, prefix: str, ns: str, name: str, request: Request, revision: str = "main"):
    repo = hub.readable(request, repo_type(prefix), f"{ns}/{name}")
    commit = repo.head(revision)
    siblings = []
    for p, e in sorted(commit["files"].items()):
        siblings.append({"rfilename": p, "size": e["size"], "blobId": e["git_oid"]})
        if e["lfs"]:
            siblings[-1]["lfs"] = {"sha256": e["sha256"], "size": e["size"], "pointerSize": 134}
    return {**summary(hub, repo, commit), "siblings": siblings}

