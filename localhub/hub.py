"""The plumbing every router shares: who may read and write (``Hub``), size-capped JSON bodies, checked fields.

Routers (repos.py, files.py, refs.py) import from here and ``app.py`` assembles them, so nothing
imports the app.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from .storage import HubError, Storage

PREFIX_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
MAX_JSON_BYTES = 1024 * 1024  # a JSON request body (repo settings, LFS batch, discussions, ...)


@dataclass
class Hub:
    """What every router needs: the storage, who may write where, and the upload-URL signing key."""

    storage: Storage
    token: str
    user: str
    orgs: tuple[str, ...]
    signing_key: bytes

    def caller(self, request: Request) -> str | None:
        return request.state.user

    def require_writer(self, request: Request, namespace: str | None = None) -> str:
        who = self.caller(request)
        if who is None:
            raise HubError(401, "You must be authenticated to write (pass a token)")
        if namespace is not None and namespace not in (who, *self.orgs):
            raise HubError(403, f"You don't have the rights to write in the namespace {namespace!r}")
        return who

    def readable(self, request: Request, repo_type: str, repo_id: str):
        repo = self.storage.get(repo_type, repo_id)
        if repo.meta["private"] and self.caller(request) is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")  # as if missing
        return repo

    def writable(self, request: Request, repo_type: str, repo_id: str):
        self.require_writer(request, repo_id.split("/")[0])
        return self.readable(request, repo_type, repo_id)

    def sign(self, oid: str) -> str:
        return hmac.new(self.signing_key, oid.encode(), "sha256").hexdigest()

    def url(self, request: Request, repo) -> str:
        return f"{str(request.base_url).rstrip('/')}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"


def current_hub(request: Request) -> Hub:
    """The app's Hub (``app.state.hub``, set by ``create_app``): routers reach it through this dependency."""
    return request.app.state.hub


HubDep = Annotated[Hub, Depends(current_hub)]


def repo_type(prefix: str) -> str:
    if prefix not in PREFIX_TO_TYPE:
        raise HubError(400, f"unknown repo type {prefix!r}: use models, datasets or spaces")
    return PREFIX_TO_TYPE[prefix]


async def read_body(request: Request, limit: int = MAX_JSON_BYTES) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HubError(413, f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HubError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict:
    """A size-capped JSON object body (a FastAPI dependency); an empty body is {}."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HubError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise HubError(400, "request body must be a JSON object")
    return body


JsonBody = Annotated[dict, Depends(json_body)]


def field(body: dict, name: str, kind: type | tuple, required: bool = True, default=None):
    """``body[name]`` checked to be ``kind``; a 400 naming the field otherwise."""
    if name not in body or body[name] is None:
        if required:
            raise HubError(400, f"missing field {name!r}")
        return default
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise HubError(400, f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


def header_safe(text: str) -> str:
    """HTTP headers carry Latin-1 without control characters: escape everything else."""
    return text.encode("unicode_escape").decode("ascii")[:1000].strip() or "error"  # h11: no edge whitespace
