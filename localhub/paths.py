"""Paths inside a repo, validated as the Hub does: a 400 naming the path for anything it would refuse."""

from __future__ import annotations

import re
import unicodedata

from .errors import HubError

MAX_PATH_BYTES = 1024  # whole path in a repo
MAX_SEGMENT_BYTES = 255  # one file or folder name, as on common file systems


def check_path(path: object) -> str:
    """A file path inside a repo, validated as the Hub does; raises a 400 naming it otherwise."""
    if not isinstance(path, str) or not path:
        raise HubError(400, f"invalid path {path!r}: empty or not a string")
    shown = path.encode("unicode_escape").decode()[:200]
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise HubError(400, f"invalid path {shown!r}: control characters are not allowed")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise HubError(400, f"invalid path {shown!r}: longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/") or path.endswith("/"):
        raise HubError(400, f"invalid path {shown!r}: must be relative and name a file")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise HubError(400, f"invalid path {shown!r}: empty, '.' or '..' segment")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise HubError(400, f"invalid path {shown!r}: a name is longer than {MAX_SEGMENT_BYTES} bytes")
    if path.split("/")[0] == ".git":
        raise HubError(400, f"invalid path {shown!r}: .git is reserved")
    return path


def check_tree(paths) -> None:
    """No file that is also a folder, and no two paths that are the same text in another Unicode form."""
    files, seen = set(paths), {}
    for path in sorted(files):
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise HubError(400, f"invalid path {path!r}: {'/'.join(parts[:i])!r} is a file")
        normal = unicodedata.normalize("NFC", path)
        if normal in seen:
            raise HubError(400, f"invalid path {path!r}: the same name as {seen[normal]!r} in another Unicode form")
        seen[normal] = path


REPO_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def is_repo_name(name: object) -> bool:
    """A namespace or repo name as the Hub takes it (huggingface_hub's validate_repo_id), in ASCII: no
    look-alike letters; no leading or trailing '-' or '.', no '--' or '..', no '.git' ending, 96 at most."""
    return (isinstance(name, str) and REPO_NAME.fullmatch(name) is not None and "--" not in name
            and ".." not in name and not name.endswith(".git"))


REF_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # ASCII only: no look-alikes, no slashes
COMMIT_ID = re.compile(r"[0-9a-f]{7,40}")
PR_NUMBER = re.compile(r"[1-9][0-9]{0,8}")


def is_ref_name(name: object) -> bool:
    """A branch or tag name as git's check-ref-format allows it, narrowed: ASCII letters, digits, - _ .,
    no leading '.', no '..', no '.lock' ending, at most 100 characters, no slash."""
    return (isinstance(name, str) and REF_NAME.fullmatch(name) is not None and ".." not in name
            and not name.endswith(".lock"))


def check_ref_name(name: object) -> str:
    """A new branch or tag's name; a 400 naming it otherwise."""
    if not is_ref_name(name):
        shown = str(name).encode("unicode_escape").decode()[:100]
        raise HubError(400, f"invalid ref name {shown!r}: use ASCII letters, digits, '-', '_' and '.'")
    return name


def revision_ref(revision: object) -> tuple[str, str] | None:
    """What a revision names before any file is looked at: ``("heads"|"tags"|"pr", name)`` for
    ``refs/<kind>/<name>``, ``("name", name)`` for a bare branch or tag name, ``("commit", id)`` for 7 to 40
    hex digits (which may also be a ref name), or None for anything else (never joined onto a path)."""
    if not isinstance(revision, str):
        return None
    for kind in ("heads", "tags", "pr"):
        if revision.startswith(f"refs/{kind}/"):
            name = revision.removeprefix(f"refs/{kind}/")
            valid = PR_NUMBER.fullmatch(name) if kind == "pr" else is_ref_name(name)
            return (kind, name) if valid else None
    if COMMIT_ID.fullmatch(revision):
        return ("commit", revision)
    return ("name", revision) if is_ref_name(revision) else None
