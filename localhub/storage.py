"""On-disk storage for the local Hub: content-addressed blobs plus one JSON manifest per commit.

Layout under ``data_dir``::

    blobs/<sha256>                          file contents, shared by all repos
    repos/<type>/<ns>/<name>/meta.json      {"private": bool, "created": iso-date}
    repos/<type>/<ns>/<name>/commits/<oid>.json
    repos/<type>/<ns>/<name>/refs/main      the commit id the branch points at

Every write goes to a temporary file first and is moved into place with ``os.replace``,
and a branch moves only after its commit manifest is on disk, so a crash mid-commit leaves
the previous state readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")
GITATTRIBUTES = (
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.png filter=lfs diff=lfs merge=lfs -text\n"
    "*.jpg filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class HubError(Exception):
    """An error with an HTTP status and the Hub's ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Repo:
    root: Path
    repo_type: str
    repo_id: str

    @property
    def meta(self) -> dict:
        return json.loads((self.root / "meta.json").read_text())

    def head(self, revision: str = "main") -> dict:
        """The commit manifest for a branch name or a full commit id."""
        ref = self.root / "refs" / revision
        oid = ref.read_text().strip() if ref.is_file() else revision
        path = self.root / "commits" / f"{oid}.json"
        if "/" in oid or not path.is_file():
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return json.loads(path.read_text())

    def history(self, revision: str = "main") -> list[dict]:
        commits, commit = [], self.head(revision)
        while commit:
            commits.append(commit)
            parent = commit.get("parent")
            commit = json.loads((self.root / "commits" / f"{parent}.json").read_text()) if parent else None
        return commits


class Storage:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        (self.data_dir / "blobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # --- blobs -------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise HubError(400, f"not a sha256 oid: {sha256!r}")
        return self.data_dir / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if not path.exists():
            _atomic_write(path, data)
        return sha256

    def put_blob_stream(self, chunks, expected_sha256: str) -> None:
        """Store a streamed upload, refusing it unless its sha256 is the announced oid."""
        target = self.blob_path(expected_sha256)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
            if digest.hexdigest() != expected_sha256:
                raise HubError(400, f"sha256 mismatch: announced {expected_sha256}, got {digest.hexdigest()}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # --- repos -------------------------------------------------------------------------
    def _root(self, repo_type: str, repo_id: str) -> Path:
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"unknown repo type {repo_type!r}")
        parts = repo_id.split("/")
        if len(parts) != 2 or any(not p or p.startswith(".") for p in parts):
            raise HubError(400, f"repo id must be 'namespace/name', got {repo_id!r}")
        return self.data_dir / "repos" / repo_type / parts[0] / parts[1]

    def get(self, repo_type: str, repo_id: str) -> Repo:
        root = self._root(repo_type, repo_id)
        if not (root / "meta.json").is_file():
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return Repo(root, repo_type, repo_id)

    def create(self, repo_type: str, repo_id: str, private: bool, author: str, sdk: str | None = None) -> Repo:
        root = self._root(repo_type, repo_id)
        with self._lock:
            if (root / "meta.json").is_file():
                raise HubError(409, "You already created this repo")
            meta = {"private": private, "created": _now(), "sdk": sdk}
            repo = Repo(root, repo_type, repo_id)
            self._write_commit(repo, None, "initial commit", "", author, {".gitattributes": GITATTRIBUTES.encode()})
            _atomic_write(root / "meta.json", json.dumps(meta).encode())
        return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        shutil.rmtree(self.get(repo_type, repo_id).root)

    def set_private(self, repo: Repo, private: bool) -> None:
        _atomic_write(repo.root / "meta.json", json.dumps({**repo.meta, "private": private}).encode())

    def commit(self, repo: Repo, operations: list[dict], title: str, message: str, author: str,
               parent: str | None = None) -> dict:
        """Apply add/delete operations on top of ``main`` as one new commit."""
        with self._lock:
            head = repo.head("main")
            if parent and parent != head["oid"]:
                raise HubError(412, f"parent commit {parent} is not the head of main ({head['oid']})")
            files = dict(head["files"])
            for op in operations:
                path = op["path"].strip("/")
                if op["kind"] == "add":
                    files[path] = op["entry"]
                elif op["kind"] == "delete_file":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"cannot delete {path}: no such file", "EntryNotFound")
                elif op["kind"] == "delete_folder":
                    files = {p: e for p, e in files.items() if not p.startswith(path + "/")}
            for path, entry in files.items():
                if not self.blob_path(entry["sha256"]).is_file():
                    raise HubError(400, f"{path}: its content was never uploaded")
            return self._write_commit(repo, head["oid"], title, message, author, files=files, raw=False)

    def _write_commit(self, repo: Repo, parent, title, message, author, files, raw=True) -> dict:
        if raw:  # contents given as bytes
            files = {p: self.entry_for(data) for p, data in files.items()}
        body = json.dumps({"parent": parent, "files": files, "title": title, "t": time.time_ns()}, sort_keys=True)
        commit = {
            "oid": hashlib.sha1(body.encode()).hexdigest(), "parent": parent, "title": title,
            "message": message, "author": author, "date": _now(), "files": files,
        }
        _atomic_write(repo.root / "commits" / f"{commit['oid']}.json", json.dumps(commit).encode())
        _atomic_write(repo.root / "refs" / "main", commit["oid"].encode())
        return commit

    def entry_for(self, data: bytes, lfs: bool | None = None) -> dict:
        sha256 = self.put_blob(data)
        return {"sha256": sha256, "size": len(data), "git_oid": git_blob_oid(data),
                "lfs": is_lfs(len(data), data[:512]) if lfs is None else lfs}


def is_lfs(size: int, sample: bytes) -> bool:
    """The Hub's rule of thumb: big or binary files go to LFS."""
    return size >= 10 * 1024 * 1024 or b"\0" in sample


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
