"""A small stand-in for the Hugging Face Hub's HTTP API, for tests and the offline demo.

Served: what ``huggingface_hub``, ``datasets``, ``timm``, ``transformers`` and ``gradio`` call to
create, list, upload, download, branch, tag and review (pull requests). Writes need the configured
token and a namespace it owns (its user or a configured org); private repos answer exactly like
missing ones without it; a wrong token is refused on every request before anything is read.
Tokens are never logged.

Handlers are plain ``def`` (FastAPI runs them in its thread pool), so YAML checks, big commits and
disk work never stall the event loop; bodies are read with a size cap (and big ones spooled to
disk) before any work is done.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from . import files, refs, repos
from .hub import Hub, header_safe
from .storage import HubError, Storage

logger = logging.getLogger("localhub")


def create_app(data_dir: str, token: str, user: str = "demo", orgs: tuple[str, ...] = ("timm",),
               lock_note: str | None = None) -> FastAPI:
    """The app over ``data_dir``; it takes the folder's lock (``lock_note`` says who holds it) and recovers it."""
    storage = Storage(data_dir)
    storage.hold(lock_note or f"localhub pid {os.getpid()}")
    hub = Hub(storage, token, user, tuple(orgs), hashlib.sha256(b"localhub-upload:" + token.encode()).digest())
    app = FastAPI(title="localhub", docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)  # an unknown path is a 404, never a redirect to a guess

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        # Before any body is read or repo looked up: a wrong token learns nothing, not even existence.
        auth = request.headers.get("authorization", "")
        request.state.user = None
        if auth:
            given = auth.removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error_response(HubError(401, "Invalid credentials in Authorization header"))
            request.state.user = user
        try:
            return await call_next(request)
        except HubError as e:  # raised while streaming a body
            return error_response(e)

    @app.exception_handler(HubError)
    async def hub_error(_: Request, exc: HubError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(HubError(400, f"bad request: {where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception):
        logger.exception("internal error")
        return error_response(HubError(500, f"internal error ({type(exc).__name__})"))

    app.state.hub = hub
    for module in (repos, files, refs):
        app.include_router(module.api)
    return app


def error_response(error: HubError) -> JSONResponse:
    headers = {"X-Error-Message": header_safe(error.message)}
    if error.code:
        headers["X-Error-Code"] = error.code
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)
