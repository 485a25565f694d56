"""Paths inside a repo, validated as the Hub does: a 400 naming the path for anything it would refuse."""

from __future__ import annotations

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
