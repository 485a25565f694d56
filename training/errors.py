"""One clear message per failure: user mistakes and Hub faults never reach the user as tracebacks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


class UserError(Exception):
    """A problem the user can fix; the message says what and where."""


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain_hub_error(exc: BaseException, action: str) -> str | None:
    """A one-line explanation for a Hub failure found anywhere in ``exc``'s chain, else None."""
    for e in _causes(exc):
        name = type(e).__name__
        if isinstance(e, RepositoryNotFoundError):
            return (f"{action}: repository not found at {_endpoint()} (check the id and repo type; "
                    "a private repo needs a token with read access: set HF_TOKEN or run `hf auth login`)")
        if isinstance(e, (RevisionNotFoundError, EntryNotFoundError)):
            return f"{action}: {e.args[0].splitlines()[-1] if e.args else name}"
        if isinstance(e, HfHubHTTPError):
            status = e.response.status_code if e.response is not None else None
            if status in (401, 403):
                return (f"{action}: the Hub at {_endpoint()} refused the credentials (HTTP {status}); "
                        "set HF_TOKEN to a token with write access (for the local Hub: `make hub` prints it)")
            return f"{action}: the Hub at {_endpoint()} answered HTTP {status}: {str(e).splitlines()[-1]}"
        if "Timeout" in name:
            return f"{action}: the Hub at {_endpoint()} did not answer in time; retry, or check HF_ENDPOINT"
        if name in ("ConnectError", "ConnectionError", "NetworkError", "RemoteProtocolError") or (
            isinstance(e, ConnectionError)
        ):
            return (f"{action}: cannot reach the Hub at HF_ENDPOINT={_endpoint()} ({e}); "
                    "is it running? For the local Hub run `make hub`")
        if isinstance(e, OSError) and "offline mode" in str(e).lower():
            return f"{action}: HF_HUB_OFFLINE=1 blocks the Hub; unset it to reach {_endpoint()}"
    return None


@contextmanager
def hub_errors(action: str) -> Iterator[None]:
    """Turn any Hub failure inside the block into a UserError saying what failed and what to do."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        message = explain_hub_error(e, action)
        if message is None:
            raise
        raise UserError(message) from e


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line entry point: a UserError prints one line and exits 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
