"""A small stand-in for the Hugging Face Hub's HTTP API, for tests and the offline demo.

Only the endpoints that ``huggingface_hub``, ``datasets``, ``timm``, ``transformers`` and
``gradio`` call for create / upload / download / list are served. Writes need the configured
token; private repos are invisible without it. Tokens are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .storage import HubError, Repo, Storage, git_blob_oid, is_lfs

PREFIX_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def create_app(data_dir: str, token: str, user: str = "demo") -> FastAPI:
    storage = Storage(data_dir)
    app = FastAPI(title="localhub", docs_url=None, redoc_url=None)
    signing_key = hashlib.sha256(b"localhub-upload:" + token.encode()).digest()

    @app.exception_handler(HubError)
    async def hub_error(_: Request, exc: HubError):
        headers = {"X-Error-Message": exc.message}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    # --- auth ----------------------------------------------------------------------------
    def caller(request: Request) -> str | None:
        """The user name for a valid token, None when anonymous; 401 for a wrong token."""
        auth = request.headers.get("authorization", "")
        if not auth:
            return None
        given = auth.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def require_writer(request: Request) -> str:
        who = caller(request)
        if who is None:
            raise HubError(401, "You must be authenticated to write (pass a token)")
        return who

    def readable(request: Request, repo_type: str, repo_id: str) -> Repo:
        repo = storage.get(repo_type, repo_id)
        if repo.meta["private"] and caller(request) is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def sign(oid: str) -> str:
        return hmac.new(signing_key, oid.encode(), "sha256").hexdigest()

    # --- account and validation ----------------------------------------------------------
    @app.get("/api/whoami-v2")
    def whoami(request: Request):
        if caller(request) is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        access = {"displayName": "localhub", "role": "write"}
        return {"type": "user", "name": user, "fullname": user, "orgs": [], "isPro": False,
                "auth": {"type": "access_token", "accessToken": access}}

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        content = (await request.json()).get("content", "")
        if content.startswith("---"):  # a README: only its front matter is YAML
            content = content.split("---", 2)[1] if content.count("---") >= 2 else content
        try:
            yaml.safe_load(content)
        except yaml.YAMLError as e:
            return JSONResponse({"errors": [{"message": str(e)}]}, status_code=400)
        return {"errors": [], "warnings": []}

    # --- repos ---------------------------------------------------------------------------
    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        who = require_writer(request)
        body = await request.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or who}/{body['name']}"
        private = bool(body.get("private")) or body.get("visibility") == "private"
        url = f"{str(request.base_url).rstrip('/')}/{URL_PREFIX[repo_type]}{repo_id}"
        try:
            storage.create(repo_type, repo_id, private, who, sdk=body.get("sdk"))
        except HubError as e:  # the Hub's 409 still carries the url; exist_ok=True relies on it
            if e.status != 409:
                raise
            return JSONResponse({"error": e.message, "url": url}, status_code=409)
        return {"url": url, "name": repo_id, "id": repo_id}

    @app.api_route("/api/repos/delete", methods=["DELETE"])
    async def delete_repo(request: Request):
        require_writer(request)
        body = await request.json()
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        storage.delete(body.get("type") or "model", repo_id)
        return {}

    @app.put("/api/{prefix}/{ns}/{name}/settings")
    async def settings(prefix: str, ns: str, name: str, request: Request):
        require_writer(request)
        body = await request.json()
        repo = storage.get(_type(prefix), f"{ns}/{name}")
        if "private" in body or "visibility" in body:
            storage.set_private(repo, bool(body.get("private")) or body.get("visibility") == "private")
        return {}

    @app.get("/api/{prefix}/{ns}/{name}")
    @app.get("/api/{prefix}/{ns}/{name}/revision/{revision}")
    def repo_info(prefix: str, ns: str, name: str, request: Request, revision: str = "main"):
        repo = readable(request, _type(prefix), f"{ns}/{name}")
        commit = repo.head(revision)
        siblings = []
        for p, e in sorted(commit["files"].items()):
            siblings.append({"rfilename": p, "size": e["size"], "blobId": e["git_oid"]})
            if e["lfs"]:
                siblings[-1]["lfs"] = {"sha256": e["sha256"], "size": e["size"], "pointerSize": 134}
        meta = repo.meta
        info = {"id": repo.repo_id, "_id": repo.repo_id, "author": ns, "sha": commit["oid"],
                "private": meta["private"], "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                "tags": [], "createdAt": meta["created"], "lastModified": commit["date"], "siblings": siblings}
        if repo.repo_type == "space":
            info["sdk"] = meta.get("sdk")
        return info

    @app.get("/api/{prefix}/{ns}/{name}/refs")
    def refs(prefix: str, ns: str, name: str, request: Request):
        repo = readable(request, _type(prefix), f"{ns}/{name}")
        main = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.head()["oid"]}
        return {"branches": [main], "tags": [], "converts": []}

    @app.get("/api/{prefix}/{ns}/{name}/commits/{revision}")
    def commits(prefix: str, ns: str, name: str, revision: str, request: Request):
        repo = readable(request, _type(prefix), f"{ns}/{name}")
        return [{"id": c["oid"], "title": c["title"], "message": c["message"],
                 "authors": [{"user": c["author"]}], "date": c["date"]} for c in repo.history(revision)]

    @app.get("/api/{prefix}/{ns}/{name}/tree/{revision}")
    @app.get("/api/{prefix}/{ns}/{name}/tree/{revision}/{path:path}")
    def tree(prefix: str, ns: str, name: str, revision: str, request: Request, path: str = "",
             recursive: str = "false"):
        repo = readable(request, _type(prefix), f"{ns}/{name}")
        files = repo.head(revision)["files"]
        path = path.strip("/")
        base = f"{path}/" if path else ""
        if path and path in files:
            return [_file_entry(path, files[path])]
        under = {p: e for p, e in files.items() if p.startswith(base)}
        if path and not under:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for p, e in sorted(under.items()):
            rest = p[len(base):]
            parts = rest.split("/")
            for i in range(1, len(parts) if recursive == "true" else min(2, len(parts))):
                folders.add(base + "/".join(parts[:i]))
            if recursive == "true" or len(parts) == 1:
                entries.append(_file_entry(p, e))
        dirs = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "path": f} for f in sorted(folders)]
        return dirs + entries

    @app.post("/api/{prefix}/{ns}/{name}/paths-info/{revision}")
    async def paths_info(prefix: str, ns: str, name: str, revision: str, request: Request):
        repo = readable(request, _type(prefix), f"{ns}/{name}")
        files = repo.head(revision)["files"]
        form = await request.form()
        out = []
        for p in form.getlist("paths"):
            p = str(p).strip("/")
            if p in files:
                out.append(_file_entry(p, files[p]))
            elif any(f.startswith(p + "/") for f in files):
                out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p})
        return out

    # --- uploads -------------------------------------------------------------------------
    @app.post("/api/{prefix}/{ns}/{name}/preupload/{revision}")
    async def preupload(prefix: str, ns: str, name: str, revision: str, request: Request):
        require_writer(request)
        repo = storage.get(_type(prefix), f"{ns}/{name}")
        files = repo.head(revision)["files"]
        out = []
        for f in (await request.json())["files"]:
            mode = "lfs" if is_lfs(f["size"], base64.b64decode(f["sample"])) else "regular"
            existing = files.get(f["path"])
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False,
                        "oid": existing["git_oid"] if existing else None})
        return {"files": out, "commitOid": repo.head(revision)["oid"]}

    async def lfs_batch(repo_type: str, ns: str, name: str, request: Request):
        require_writer(request)
        storage.get(repo_type, f"{ns}/{name}")
        base = str(request.base_url).rstrip("/")
        objects = []
        for obj in (await request.json())["objects"]:
            oid, size = obj["oid"], obj["size"]
            entry = {"oid": oid, "size": size, "authenticated": True}
            if not storage.blob_path(oid).exists():  # no actions = already stored
                href = f"{base}/lfs-upload/{oid}?size={size}&sig={sign(oid)}"
                entry["actions"] = {"upload": {"href": href}}
            objects.append(entry)
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    @app.post("/{ns}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch_model(ns: str, name: str, request: Request):
        return await lfs_batch("model", ns, name, request)

    @app.post("/{prefix}/{ns}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch_typed(prefix: str, ns: str, name: str, request: Request):
        return await lfs_batch(_type(prefix), ns, name, request)

    @app.put("/lfs-upload/{oid}")
    async def lfs_upload(oid: str, sig: str, request: Request):
        # The batch answer hands out a signed URL, as the Hub hands out a pre-signed S3 URL.
        if not hmac.compare_digest(sig, sign(oid)):
            raise HubError(401, "upload URL signature is invalid")
        chunks = []
        async for chunk in request.stream():
            chunks.append(chunk)
        storage.put_blob_stream(chunks, oid)
        return Response(status_code=200)

    @app.post("/api/{prefix}/{ns}/{name}/commit/{revision}")
    async def commit(prefix: str, ns: str, name: str, revision: str, request: Request):
        who = require_writer(request)
        repo = storage.get(_type(prefix), f"{ns}/{name}")
        if revision != "main":
            raise HubError(400, "this local Hub only commits to main")
        header, operations = {}, []
        for line in (await request.body()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                data = base64.b64decode(value["content"])
                operations.append({"kind": "add", "path": value["path"], "entry": storage.entry_for(data, lfs=False)})
            elif key == "lfsFile":
                pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\n"
                           f"size {value['size']}\n")
                entry = {"sha256": value["oid"], "size": value["size"], "git_oid": git_blob_oid(pointer.encode()),
                         "lfs": True}
                operations.append({"kind": "add", "path": value["path"], "entry": entry})
            elif key == "deletedFile":
                operations.append({"kind": "delete_file", "path": value["path"]})
            elif key == "deletedFolder":
                operations.append({"kind": "delete_folder", "path": value["path"]})
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        new = storage.commit(repo, operations, header.get("summary", "update"), header.get("description", ""),
                             who, parent=header.get("parentCommit"))
        url = f"{str(request.base_url).rstrip('/')}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{new['oid']}"
        return {"commitUrl": url, "commitOid": new["oid"], "commitMessage": new["title"], "pullRequestUrl": None}

    # --- downloads -----------------------------------------------------------------------
    def resolve(repo_type: str, ns: str, name: str, revision: str, path: str, request: Request):
        repo = readable(request, repo_type, f"{ns}/{name}")
        commit = repo.head(revision)
        entry = commit["files"].get(path)
        if entry is None:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit["oid"], "ETag": f'"{entry["git_oid"]}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
        blob = storage.blob_path(entry["sha256"])
        if request.method == "HEAD":
            return Response(headers={**headers, "Content-Length": str(entry["size"])})
        return FileResponse(blob, headers=headers, media_type="application/octet-stream")

    @app.api_route("/{prefix}/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_typed(prefix: str, ns: str, name: str, revision: str, path: str, request: Request):
        return resolve(_type(prefix), ns, name, revision, path, request)

    @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_model(ns: str, name: str, revision: str, path: str, request: Request):
        return resolve("model", ns, name, revision, path, request)

    return app


def _type(prefix: str) -> str:
    if prefix not in PREFIX_TO_TYPE:
        raise HubError(404, f"unknown repo type prefix {prefix!r}")
    return PREFIX_TO_TYPE[prefix]


def _lfs(entry: dict) -> dict:
    return {"oid": entry["sha256"], "size": entry["size"], "pointerSize": 134}


def _file_entry(path: str, entry: dict) -> dict:
    out = {"type": "file", "oid": entry["git_oid"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        out["lfs"] = _lfs(entry)
    return out


