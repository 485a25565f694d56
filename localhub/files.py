"""Files: tree and paths-info, preupload, LFS batch and upload, commits (to branches and PRs), resolve."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import tempfile
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from .hub import Hub, HubDep, JsonBody, field, read_body, repo_type
from .paths import check_path
from .pulls import load_discussion, open_pull_request, record_commit
from .storage import BlobWriter, HubError, is_lfs

MAX_COMMIT_BYTES = 512 * 1024 * 1024  # an NDJSON commit (small files inline, base64); LFS files go separately
MAX_LFS_BYTES = 50 * 1024**3
MAX_PATHS_INFO = 10_000  # paths in one paths-info form
SPOOL_CHUNK = 4 * 1024 * 1024


def split_revision(rest: str) -> tuple[str, str]:
    """``<revision>/<path>`` where the revision may be ``refs/pr/N``, ``refs/heads/x`` or ``refs/tags/x``."""
    parts = rest.split("/")
    count = 3 if parts[0] == "refs" and len(parts) >= 3 else 1
    return "/".join(parts[:count]), "/".join(parts[count:])


def file_entry(path: str, entry: dict) -> dict:
    out = {"type": "file", "oid": entry["git_oid"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": 134}
    return out


def folder_entry(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}


async def spooled_body(request: Request) -> str:
    """The commit body streamed to a temporary file (capped), so a huge commit never sits in memory.

    Anonymous callers are refused before a byte is read.
    """
    if request.state.user is None:
        raise HubError(401, "You must be authenticated to write (pass a token)")
    fd, path = tempfile.mkstemp(prefix=".tmp-commit-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_COMMIT_BYTES:
                    raise HubError(413, f"commit body is over the limit of {MAX_COMMIT_BYTES} bytes")
                f.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


def parse_operations(hub: Hub, path: str) -> tuple[dict, list[dict]]:
    """NDJSON lines -> (header, operations); every line and field checked, a 400 naming the problem."""
    header, operations = {}, []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError):
                raise HubError(400, f"commit line {number}: not a JSON object with 'key' and 'value'") from None
            if not isinstance(value, dict):
                raise HubError(400, f"commit line {number}: 'value' must be an object")
            if key == "header":
                header = value
                continue
            target = check_path(value.get("path"))
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"{target}: only base64 content is supported")
                try:
                    data = base64.b64decode(field(value, "content", str), validate=True)
                except binascii.Error:
                    raise HubError(400, f"{target}: content is not valid base64") from None
                operations.append({"kind": "add", "path": target, "entry": hub.storage.entry_for(data, lfs=False)})
            elif key == "lfsFile":
                entry = hub.storage.lfs_entry(field(value, "oid", str), value.get("size"))
                operations.append({"kind": "add", "path": target, "entry": entry})
            elif key == "deletedFile":
                operations.append({"kind": "delete_file", "path": target})
            elif key == "deletedFolder":
                operations.append({"kind": "delete_folder", "path": target})
            else:
                raise HubError(400, f"commit line {number}: unsupported operation {key!r}")
    return header, operations


api = APIRouter()

@api.get("/api/{prefix}/{ns}/{name}/tree/{rest:path}")
def tree(hub: HubDep, prefix: str, ns: str, name: str, rest: str, request: Request, recursive: str = "false"):
    revision, path = split_revision(rest)
    files = hub.readable(request, repo_type(prefix), f"{ns}/{name}").head(revision)["files"]
    path = check_path(path.removesuffix("/")) if path else ""  # "": the root (huggingface_hub asks ".../main/")
    base = f"{path}/" if path else ""
    if path and path in files:
        return [file_entry(path, files[path])]
    under = {p: e for p, e in files.items() if p.startswith(base)}
    if path and not under:
        raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
    deep = recursive.lower() in ("true", "1")
    entries, folders = [], set()
    for p, e in sorted(under.items()):
        parts = p[len(base):].split("/")
        for i in range(1, len(parts) if deep else min(2, len(parts))):
            folders.add(base + "/".join(parts[:i]))
        if deep or len(parts) == 1:
            entries.append(file_entry(p, e))
    return [folder_entry(f) for f in sorted(folders)] + entries

@api.post("/api/{prefix}/{ns}/{name}/paths-info/{revision:path}")
async def paths_info(hub: HubDep, prefix: str, ns: str, name: str, revision: str, request: Request):
    files = (await run_in_threadpool(hub.readable(request, repo_type(prefix), f"{ns}/{name}").head, revision))["files"]
    raw = await read_body(request)  # capped before it is parsed, and only for a repo the caller may read
    try:
        form = parse_qs(raw.decode(), max_num_fields=MAX_PATHS_INFO)
    except (UnicodeDecodeError, ValueError) as e:
        raise HubError(400, f"paths-info: a form of at most {MAX_PATHS_INFO} fields, UTF-8: {e}") from None
    wanted = [check_path(p.removesuffix("/")) for p in form.get("paths", [])]

    def lookup():
        out = []
        for p in wanted:
            if p in files:
                out.append(file_entry(p, files[p]))
            elif any(f.startswith(p + "/") for f in files):
                out.append(folder_entry(p))
        return out

    return await run_in_threadpool(lookup)

@api.post("/api/{prefix}/{ns}/{name}/preupload/{revision:path}")
def preupload(hub: HubDep, prefix: str, ns: str, name: str, revision: str, request: Request, body: JsonBody):
    repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
    head = repo.head(revision)
    out = []
    for f in field(body, "files", list):
        if not isinstance(f, dict):
            raise HubError(400, "field 'files' must hold objects")
        path = check_path(f.get("path"))
        try:
            sample = base64.b64decode(field(f, "sample", str), validate=True)
        except binascii.Error:
            raise HubError(400, f"{path}: sample is not valid base64") from None
        mode = "lfs" if is_lfs(field(f, "size", int), sample) else "regular"
        existing = head["files"].get(path)
        out.append({"path": path, "uploadMode": mode, "shouldIgnore": False,
                    "oid": existing["git_oid"] if existing else None})
    return {"files": out, "commitOid": head["oid"]}

def lfs_batch(hub: Hub, kind: str, ns: str, name: str, request: Request, body: dict):
    hub.writable(request, kind, f"{ns}/{name}")
    base = str(request.base_url).rstrip("/")
    objects = []
    for obj in field(body, "objects", list):
        if not isinstance(obj, dict):
            raise HubError(400, "field 'objects' must hold objects")
        oid, size = field(obj, "oid", str), field(obj, "size", int)
        if size < 0 or size > MAX_LFS_BYTES:
            raise HubError(400, f"LFS object {oid}: size {size} is out of range")
        entry = {"oid": oid, "size": size, "authenticated": True}
        if not hub.storage.blob_path(oid).exists():  # no actions = already stored
            entry["actions"] = {"upload": {"href": f"{base}/lfs-upload/{oid}?size={size}&sig={hub.sign(oid)}"}}
        objects.append(entry)
    return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                        media_type="application/vnd.git-lfs+json")

@api.post("/{ns}/{name}.git/info/lfs/objects/batch")
def lfs_batch_model(hub: HubDep, ns: str, name: str, request: Request, body: JsonBody):
    return lfs_batch(hub, "model", ns, name, request, body)

@api.post("/{prefix}/{ns}/{name}.git/info/lfs/objects/batch")
def lfs_batch_typed(hub: HubDep, prefix: str, ns: str, name: str, request: Request, body: JsonBody):
    return lfs_batch(hub, repo_type(prefix), ns, name, request, body)

@api.put("/lfs-upload/{oid}")
async def lfs_upload(hub: HubDep, oid: str, sig: str, size: int, request: Request):
    # The batch answer hands out a signed URL, as the Hub hands out a pre-signed S3 URL.
    hub.storage.blob_path(oid)  # a 400 unless a sha256
    if not hmac.compare_digest(sig, hub.sign(oid)):
        raise HubError(401, "upload URL signature is invalid")
    writer = await run_in_threadpool(BlobWriter, hub.storage)
    pending, buffered = [], 0
    try:
        async for chunk in request.stream():  # to disk in 4 MB pieces, hashed on the way, off the event loop
            pending.append(chunk)
            buffered += len(chunk)
            if writer.size + buffered > size:
                raise HubError(400, f"upload of {oid} is longer than the announced {size} bytes")
            if buffered >= SPOOL_CHUNK:
                await run_in_threadpool(writer.write, b"".join(pending))
                pending, buffered = [], 0
        await run_in_threadpool(writer.write, b"".join(pending))
        await run_in_threadpool(writer.finish, oid, size)
    finally:
        writer.abort()
    return Response(status_code=200)

@api.post("/api/{prefix}/{ns}/{name}/commit/{revision:path}")
def commit(hub: HubDep, prefix: str, ns: str, name: str, revision: str, request: Request,
           body_path: Annotated[str, Depends(spooled_body)], create_pr: str | None = None):
    try:
        who = hub.require_writer(request, ns)
        repo = hub.writable(request, repo_type(prefix), f"{ns}/{name}")
        header, operations = parse_operations(hub, body_path)
    finally:
        os.unlink(body_path)
    title = str(header.get("summary") or "update")
    description = str(header.get("description") or "")
    parent = header.get("parentCommit")
    if parent is not None and not isinstance(parent, str):
        raise HubError(400, "field 'parentCommit' must be a string")
    pr = None
    branch = revision
    if create_pr in ("1", "true", "True"):
        pr = open_pull_request(hub, repo, title, description, who, base=revision)
        branch = f"refs/pr/{pr['num']}"
    elif revision.startswith("refs/pr/"):
        pr = load_discussion(repo, revision.removeprefix("refs/pr/"))
        if pr["status"] not in ("open", "draft"):
            raise HubError(400, f"pull request #{pr['num']} is {pr['status']}")
    elif revision.startswith(("refs/tags/",)) or revision in repo.refs("tags"):
        raise HubError(400, f"cannot commit to tag {revision!r}")
    elif revision.removeprefix("refs/heads/") not in repo.refs("heads"):
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
    new = hub.storage.commit(repo, operations, title, description, who, parent=parent,
                             branch=branch.removeprefix("refs/heads/"))
    url = hub.url(request, repo)
    pr_url = None
    if pr is not None:
        record_commit(hub, repo, pr["num"], new, who)
        pr_url = f"{url}/discussions/{pr['num']}"
    return {"commitUrl": f"{url}/commit/{new['oid']}", "commitOid": new["oid"], "commitMessage": new["title"],
            "pullRequestUrl": pr_url}

def resolve(hub: Hub, kind: str, ns: str, name: str, rest: str, request: Request):
    revision, path = split_revision(rest)
    commit = hub.readable(request, kind, f"{ns}/{name}").head(revision)
    entry = commit["files"].get(path)
    if entry is None:
        raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
    headers = {"X-Repo-Commit": commit["oid"], "ETag": f'"{entry["git_oid"]}"', "Accept-Ranges": "bytes"}
    if entry["lfs"]:
        headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(entry["size"])})
    return FileResponse(hub.storage.blob_path(entry["sha256"]), headers=headers,
                        media_type="application/octet-stream")

@api.api_route("/{prefix}/{ns}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
def resolve_typed(hub: HubDep, prefix: str, ns: str, name: str, rest: str, request: Request):
    return resolve(hub, repo_type(prefix), ns, name, rest, request)

@api.api_route("/{ns}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
def resolve_model(hub: HubDep, ns: str, name: str, rest: str, request: Request):
    return resolve(hub, "model", ns, name, rest, request)




# A static Space's files as <owner>-<name>.static.hf.space serves them: main's files with their web types (a page
# served as application/octet-stream would be downloaded, not shown). Files are looked up in the commit's tree.
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
                ".wasm": "application/wasm", ".json": "application/json", ".css": "text/css", ".png": "image/png",
                ".jpg": "image/jpeg", ".svg": "image/svg+xml", ".md": "text/markdown; charset=utf-8"}


@api.api_route("/static-spaces/{ns}/{name}/{path:path}", methods=["GET", "HEAD"])
def static_space(hub: HubDep, ns: str, name: str, path: str, request: Request):
    commit = hub.readable(request, "space", f"{ns}/{name}").head("main")
    entry = commit["files"].get(path or "index.html")
    if entry is None:
        raise HubError(404, f"{path} does not exist in Space {ns}/{name}", "EntryNotFound")
    media = STATIC_TYPES.get(os.path.splitext(path or "index.html")[1].lower(), "application/octet-stream")
    headers = {"X-Content-Type-Options": "nosniff", "Access-Control-Allow-Origin": "*"}
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(entry["size"])}, media_type=media)
    return FileResponse(hub.storage.blob_path(entry["sha256"]), media_type=media, headers=headers)
