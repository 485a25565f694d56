"""The one error type of the local Hub: an HTTP status, a message and the Hub's error code."""

from __future__ import annotations


class HubError(Exception):
    """An error with an HTTP status and the Hub's ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def not_found(repo_id: str) -> HubError:
    """One answer for a missing repo and a private one the caller may not see: existence does not leak."""
    return HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
