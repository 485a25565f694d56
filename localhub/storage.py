"""On-disk storage for the local Hub: content-addressed blobs plus one JSON manifest per commit.

Layout under ``data_dir`` (folders 0700: private repo names are not for other users)::

    server.lock                              held (fcntl) by the one server using this folder
    blobs/<sha256>                           file contents, shared by all repos
    repos/<type>/<ns>/<name>/meta.json       {"private": bool, "created": iso-date, "sdk": ...}
    repos/<type>/<ns>/<name>/commits/<oid>.json
    repos/<type>/<ns>/<name>/refs/heads/<branch>, refs/tags/<tag>, refs/pr/<n>   commit ids
    repos/<type>/<ns>/<name>/discussions/<n>.json

Every write goes to a temporary file first (fsynced) and is moved into place with ``os.replace``,
and a ref moves only after its commit manifest is on disk, so a crash mid-commit leaves the
previous state readable; leftovers of a crash are removed when a server starts (``recover``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import HubError, not_found
from .paths import COMMIT_ID, check_tree, is_ref_name, is_repo_name, revision_ref

REPO_TYPES = ("model", "dataset", "space")
GITATTRIBUTES = (
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.png filter=lfs diff=lfs merge=lfs -text\n"
    "*.jpg filter=lfs diff=lfs merge=lfs -text\n"
)
HEX = set("0123456789abcdef")


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class BlobWriter:
    """A blob streamed to disk while hashed: memory stays flat whatever the size."""

    def __init__(self, storage: Storage):
        self.storage, self.digest, self.size = storage, hashlib.sha256(), 0
        fd, self.tmp = tempfile.mkstemp(dir=storage.data_dir / "blobs", prefix=".tmp-")
        self.file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        self.file.write(chunk)

    def finish(self, expected_sha256: str, expected_size: int | None = None) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.digest.hexdigest() != expected_sha256:
                raise HubError(400, f"sha256 mismatch: announced {expected_sha256}, got {self.digest.hexdigest()}")
            if expected_size is not None and self.size != expected_size:
                raise HubError(400, f"size mismatch: announced {expected_size} bytes, got {self.size}")
            os.replace(self.tmp, self.storage.blob_path(expected_sha256))
        finally:
            self.abort()

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


@dataclass
class Repo:
    root: Path
    repo_type: str
    repo_id: str

    @property
    def meta(self) -> dict:
        return json.loads((self.root / "meta.json").read_text())

    def refs(self, kind: str) -> dict[str, str]:
        """``heads``, ``tags`` or ``pr``: name -> commit id."""
        folder = self.root / "refs" / kind
        found = {}
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            # A dot file is another thread's atomic write in progress; a symlink was not made by this server.
            if path.name.startswith(".") or path.is_symlink():
                continue
            try:
                oid = path.read_text().strip()
            except FileNotFoundError:  # deleted meanwhile
                continue
            if COMMIT_ID.fullmatch(oid):
                found[path.name] = oid
        return found

    def ref_path(self, revision: str) -> Path | None:
        """The ref file a checked revision names (a branch, ``refs/heads|tags|pr/...``, a tag), or None."""
        named = revision_ref(revision)
        if named is None or named[0] == "commit" and not is_ref_name(revision):
            return None
        kind, name = named
        for folder in ((kind,) if kind in ("heads", "tags", "pr") else ("heads", "tags")):
            path = self.root / "refs" / folder / name
            if path.is_file() and not path.is_symlink():
                return path
        return None

    def resolve(self, revision: str) -> str:
        """A branch, tag, PR ref, full or short (>= 7 hex) commit id -> the full commit id. Anything else, and
        a revision that names nothing, get the same 404, whatever exists on disk."""
        named = revision_ref(revision)
        ref = self.ref_path(revision) if named else None
        if ref is not None:
            oid = ref.read_text().strip()
            if COMMIT_ID.fullmatch(oid) and (self.root / "commits" / f"{oid}.json").is_file():
                return oid
        if named and named[0] == "commit":
            matches = [p.stem for p in (self.root / "commits").glob(f"{revision}*.json")]
            if len(matches) == 1:
                return matches[0]
        shown = revision.encode("unicode_escape").decode()[:100] if isinstance(revision, str) else ""
        raise HubError(404, f"Invalid rev id: {shown}", "RevisionNotFound")

    def head(self, revision: str = "main") -> dict:
        """The commit manifest a revision names."""
        return self.commit(self.resolve(revision))

    def commit(self, oid: str) -> dict:
        return json.loads((self.root / "commits" / f"{oid}.json").read_text())

    def history(self, revision: str = "main") -> list[dict]:
        commits, commit = [], self.head(revision)
        while commit:
            commits.append(commit)
            commit = self.commit(commit["parent"]) if commit.get("parent") else None
        return commits


class Storage:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.data_dir / "blobs").mkdir(exist_ok=True, mode=0o700)
        self.lock = threading.RLock()  # one writer at a time inside this server; server.lock across processes
        self._lock_file = None

    # --- one server per folder --------------------------------------------------------
    def hold(self, description: str) -> None:
        """Take the folder's exclusive lock for this process's life, or fail naming the holder."""
        path = self.data_dir / "server.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise HubError(409, f"{self.data_dir} is already served by {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(description)
        handle.flush()
        self._lock_file = handle
        self.recover()

    def recover(self) -> None:
        """After a crash: drop temporary files and blobs no commit refers to (nothing is in flight yet)."""
        for tmp in self.data_dir.rglob(".tmp-*"):
            tmp.unlink(missing_ok=True)
        referenced = set()
        for manifest in (self.data_dir / "repos").glob("*/*/*/commits/*.json"):
            referenced.update(e["sha256"] for e in json.loads(manifest.read_text())["files"].values())
        for blob in (self.data_dir / "blobs").iterdir():
            if blob.name not in referenced:
                blob.unlink(missing_ok=True)
        for legacy in (self.data_dir / "repos").glob("*/*/*/refs/main"):  # the layout before branches
            atomic_write(legacy.parent / "heads" / "main", legacy.read_bytes())
            legacy.unlink()

    # --- blobs -------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or len(sha256) != 64 or not set(sha256) <= HEX:
            raise HubError(400, f"not a sha256 oid: {str(sha256)[:80]!r}")
        return self.data_dir / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.blob_path(sha256).exists():
            atomic_write(self.blob_path(sha256), data)
        return sha256

    def entry_for(self, data: bytes, lfs: bool | None = None) -> dict:
        sha256 = self.put_blob(data)
        return {"sha256": sha256, "size": len(data), "git_oid": git_blob_oid(data),
                "lfs": is_lfs(len(data), data[:512]) if lfs is None else lfs}

    def lfs_entry(self, sha256: str, size: object) -> dict:
        """An entry for an uploaded LFS blob; the announced size must be the stored one."""
        path = self.blob_path(sha256)
        if not path.is_file():
            raise HubError(400, f"LFS object {sha256} was never uploaded")
        if not isinstance(size, int) or isinstance(size, bool) or size != path.stat().st_size:
            raise HubError(400, f"LFS object {sha256}: announced size {size!r}, stored {path.stat().st_size}")
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        return {"sha256": sha256, "size": size, "git_oid": git_blob_oid(pointer.encode()), "lfs": True}

    # --- repos -------------------------------------------------------------------------
    def _root(self, repo_type: str, repo_id: str) -> Path:
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"unknown repo type {repo_type!r}: use one of {', '.join(REPO_TYPES)}")
        parts = repo_id.split("/") if isinstance(repo_id, str) else []
        if len(parts) != 2 or not all(is_repo_name(p) for p in parts):
            shown = str(repo_id).encode("unicode_escape").decode()[:200]
            raise HubError(400, f"repo id must be 'namespace/name' (ASCII letters, digits, - _ .), got {shown!r}")
        return self.data_dir / "repos" / repo_type / parts[0] / parts[1]

    def get(self, repo_type: str, repo_id: str) -> Repo:
        root = self._root(repo_type, repo_id)
        if not (root / "meta.json").is_file():
            raise not_found(repo_id)
        return Repo(root, repo_type, repo_id)

    def all_repos(self, repo_type: str) -> list[Repo]:
        base = self.data_dir / "repos" / repo_type
        return [Repo(m.parent, repo_type, f"{m.parent.parent.name}/{m.parent.name}")
                for m in sorted(base.glob("*/*/meta.json"))]

    def create(self, repo_type: str, repo_id: str, private: bool, author: str, sdk: str | None = None) -> Repo:
        root = self._root(repo_type, repo_id)
        with self.lock:
            if (root / "meta.json").is_file():
                raise HubError(409, "You already created this repo")
            repo = Repo(root, repo_type, repo_id)
            files = {".gitattributes": self.entry_for(GITATTRIBUTES.encode())}
            self.write_commit(repo, None, "initial commit", "", author, files, branch="main")
            atomic_write(root / "meta.json", json.dumps({"private": private, "created": now(), "sdk": sdk}).encode())
        return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            shutil.rmtree(self.get(repo_type, repo_id).root)

    def set_private(self, repo: Repo, private: bool) -> None:
        with self.lock:
            atomic_write(repo.root / "meta.json", json.dumps({**repo.meta, "private": private}).encode())

    def commit(self, repo: Repo, operations: list[dict], title: str, message: str, author: str,
               parent: str | None = None, branch: str = "main") -> dict:
        """Apply add/delete operations on top of ``branch`` (a branch name or ``refs/pr/N``) as one commit."""
        with self.lock:
            head = repo.head(branch)
            if parent and parent != head["oid"]:
                raise HubError(412, f"parent commit {parent} is not the head of {branch} ({head['oid']})")
            files = dict(head["files"])
            for op in operations:
                path = op["path"]
                if op["kind"] == "add":
                    files[path] = op["entry"]
                elif op["kind"] == "delete_file":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"cannot delete {path}: no such file", "EntryNotFound")
                elif op["kind"] == "delete_folder":
                    files = {p: e for p, e in files.items() if not p.startswith(path.rstrip("/") + "/")}
            check_tree(files)
            for path, entry in files.items():
                if not self.blob_path(entry["sha256"]).is_file():
                    raise HubError(400, f"{path}: its content was never uploaded")
            return self.write_commit(repo, head["oid"], title, message, author, files, branch=branch)

    def write_commit(self, repo: Repo, parent, title, message, author, files, branch: str | None) -> dict:
        body = json.dumps({"parent": parent, "files": files, "title": title, "t": time.time_ns()}, sort_keys=True)
        commit = {"oid": hashlib.sha1(body.encode()).hexdigest(), "parent": parent, "title": title,
                  "message": message, "author": author, "date": now(), "files": files}
        atomic_write(repo.root / "commits" / f"{commit['oid']}.json", json.dumps(commit).encode())
        if branch is not None:
            self.set_ref(repo, branch if branch.startswith("refs/") else f"refs/heads/{branch}", commit["oid"])
        return commit

    def set_ref(self, repo: Repo, ref: str, oid: str | None) -> None:
        """Point ``refs/heads|tags|pr/<name>`` at a commit (None deletes it)."""
        named = revision_ref(ref)
        if named is None or named[0] not in ("heads", "tags", "pr"):
            raise HubError(400, f"invalid ref {ref[:100]!r}")
        path = repo.root / "refs" / named[0] / named[1]
        if oid is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, oid.encode())


def is_lfs(size: int, sample: bytes) -> bool:
    """The Hub's rule of thumb: big or binary files go to LFS."""
    return size >= 10 * 1024 * 1024 or b"\0" in sample


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
