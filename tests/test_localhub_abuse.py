"""The local Hub under hostile or broken requests: each defect found by trying it is reproduced here."""

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from huggingface_hub import HfApi, snapshot_download

from localhub.ctl import free_port, lock_holder, start, stop
from tests.conftest import ROOT, TOKEN


@pytest.fixture(scope="module")
def url(hub):
    HfApi().create_repo("demo/abuse", exist_ok=True)
    HfApi().create_repo("demo/abuse-private", private=True, exist_ok=True)
    return hub


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def commit_lines(*operations, header=None) -> bytes:
    lines = [{"key": "header", "value": header or {"summary": "t"}}, *operations]
    return b"\n".join(json.dumps(line).encode() for line in lines)


def add(path, content=b"x"):
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(),
                                     "encoding": "base64"}}


BAD_PATHS = ["../x", "a/../../b", "a/./b", "a//b", "/abs", "a/", "", "..", ".", "nul\0byte", "tab\there",
             "line\nbreak", "x" * 10_000, "a/" + "y" * 300, ".git/config", ".git/hooks/post-commit", "del\x7f",
             "esc\x1b[31m", "cr\r", None, 5, ["list"]]


@pytest.mark.parametrize("path", BAD_PATHS, ids=range(len(BAD_PATHS)))
def test_bad_commit_paths_are_refused_and_named(url, path):
    operation = add("ok.txt")
    operation["value"]["path"] = path
    response = httpx.post(f"{url}/api/models/demo/abuse/commit/main", content=commit_lines(operation), headers=auth())
    assert response.status_code == 400, (path, response.text)
    assert "path" in response.json()["error"]


def test_file_folder_clash_and_unicode_twins_are_refused(url, tmp_path):
    api = HfApi()
    api.upload_file(path_or_fileobj=b"file", path_in_repo="clash", repo_id="demo/abuse")
    response = httpx.post(f"{url}/api/models/demo/abuse/commit/main", content=commit_lines(add("clash/inner")),
                          headers=auth())
    assert response.status_code == 400 and "'clash' is a file" in response.json()["error"]
    twins = commit_lines(add("caf\u00e9.txt"), add("cafe\u0301.txt"))
    response = httpx.post(f"{url}/api/models/demo/abuse/commit/main", content=twins, headers=auth())
    assert response.status_code == 400 and "Unicode" in response.json()["error"]
    # Nothing of it landed, and the repo still downloads whole.
    assert set(snapshot_download("demo/abuse", cache_dir=tmp_path) and os.listdir(
        snapshot_download("demo/abuse", cache_dir=tmp_path))) >= {"clash", ".gitattributes"}


def test_trusted_input_is_checked(url):
    data = b"lfs content"
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}
    answer = httpx.post(f"{url}/demo/abuse.git/info/lfs/objects/batch", json=batch, headers=auth()).json()
    httpx.put(answer["objects"][0]["actions"]["upload"]["href"], content=data).raise_for_status()
    for size in (10**12, -5, "abc", None):
        line = {"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": oid, "size": size}}
        response = httpx.post(f"{url}/api/models/demo/abuse/commit/main", content=commit_lines(line), headers=auth())
        assert response.status_code == 400 and "size" in response.json()["error"], size
    bad_base64 = {"key": "file", "value": {"path": "b.txt", "content": "%%%not base64%%%", "encoding": "base64"}}
    response = httpx.post(f"{url}/api/models/demo/abuse/commit/main", content=commit_lines(bad_base64), headers=auth())
    assert response.status_code == 400 and "base64" in response.json()["error"]
    response = httpx.post(f"{url}/api/repos/create", json={"name": "stringly", "private": "false"}, headers=auth())
    assert response.status_code == 400 and "'private'" in response.json()["error"]


@pytest.mark.parametrize("request_args", [
    ("post", "/api/repos/create", {"content": b"{not json"}),
    ("post", "/api/repos/create", {"json": {"type": "model"}}),  # no name
    ("post", "/api/repos/create", {"json": {"name": "x", "type": "banana"}}),
    ("post", "/api/repos/create", {"json": ["a", "list"]}),
    ("get", "/api/bananas/demo/abuse", {}),
    ("post", "/api/models/demo/abuse/commit/main", {"content": b"not json at all"}),
    ("post", "/api/models/demo/abuse/preupload/main", {"json": {"files": [{"path": "a"}]}}),
    ("post", "/demo/abuse.git/info/lfs/objects/batch", {"json": {"objects": [{"oid": "zz", "size": 1}]}}),
])
def test_malformed_requests_get_400_with_a_message(url, request_args):
    method, path, kwargs = request_args
    response = getattr(httpx, method)(f"{url}{path}", headers=auth(), **kwargs)
    assert response.status_code == 400, response.text
    assert response.json()["error"] and response.headers["x-error-message"]


def test_existence_of_private_repos_does_not_leak(url):
    wrong = [httpx.get(f"{url}/api/models/{r}", headers=auth("wrong"))
             for r in ("demo/abuse-private", "demo/never-made", "demo/abuse")]
    assert {r.status_code for r in wrong} == {401} and len({r.text for r in wrong}) == 1
    anonymous = [httpx.get(f"{url}/api/models/{r}") for r in ("demo/abuse-private", "demo/never-made")]
    assert [r.status_code for r in anonymous] == [404, 404]
    assert anonymous[0].json()["error"].replace("abuse-private", "X") == \
        anonymous[1].json()["error"].replace("never-made", "X")


def test_user_text_in_error_headers(url):
    assert HfApi().file_exists("demo/abuse", "日本.txt") is False
    response = httpx.get(f"{url}/demo/abuse/resolve/ma%00in/x.txt")  # used to drop the connection
    assert response.status_code == 404 and response.json()["error"]
    response = httpx.get(f"{url}/demo/abuse/resolve/main/x%00y%E6%97%A5.txt")
    assert response.status_code == 404 and "x\\x00y\\u65e5.txt" in response.headers["x-error-message"]


def test_oversized_bodies_are_refused_before_they_are_read(url):
    big_yaml = "key: " + "v" * 400_000
    assert httpx.post(f"{url}/api/validate-yaml", json={"content": big_yaml}).status_code == 413
    tokenless = httpx.post(f"{url}/api/models/demo/abuse/commit/main", content=b"x" * 20_000_000)
    assert tokenless.status_code == 401


@pytest.mark.slow
def test_other_requests_are_served_while_a_huge_commit_runs(url):
    many = commit_lines(*(add(f"many/{i:05d}.txt", str(i).encode()) for i in range(10_000)))
    finished = {}

    def big_commit():
        response = httpx.post(f"{url}/api/models/demo/abuse/commit/main", content=many, headers=auth(), timeout=300)
        finished["commit"] = (time.monotonic(), response.status_code)

    thread = threading.Thread(target=big_commit)
    thread.start()
    time.sleep(0.3)  # the commit is being written
    started = time.monotonic()
    info = httpx.get(f"{url}/api/models/demo/abuse", headers=auth(), timeout=60)
    finished["info"] = time.monotonic()
    thread.join()
    print(f"repo_info during a 10,000-file commit: {finished['info'] - started:.3f} s")
    assert info.status_code == 200 and finished["commit"][1] == 200
    assert finished["info"] < finished["commit"][0]  # not queued behind the commit


@pytest.mark.slow
def test_one_server_per_data_dir_and_ctl_checks_what_it_talks_to(tmp_path):
    data_dir, port = tmp_path / "hub", free_port()
    first = start(port, data_dir, token="t")
    try:
        assert "localhub pid" in lock_holder(data_dir)
        with pytest.raises(SystemExit, match="already served by localhub pid"):
            start(free_port(), data_dir, token="t")
        second = subprocess.run([sys.executable, "-m", "localhub", "--port", str(free_port()), "--data_dir",
                                 str(data_dir), "--token", "t"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "already served by localhub pid" in second.stderr
        assert start(port, data_dir, token="t") is None  # the same folder's server: reused
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    finally:
        assert stop(data_dir)
        first.wait(timeout=10)
    assert not stop(data_dir)  # nothing left to signal

    class Other(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    other = HTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        result = subprocess.run([sys.executable, "-m", "localhub.ctl", "start", "--port", str(other.server_port),
                                 "--data_dir", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0 and "not the local Hub" in result.stderr and "export" not in result.stdout
    finally:
        other.shutdown()


@pytest.mark.slow
def test_token_file_and_env_token(tmp_path):
    from localhub.__main__ import load_token

    token = load_token(tmp_path / "fresh", None)
    assert stat.S_IMODE((tmp_path / "fresh" / "token").stat().st_mode) == 0o600 and token.startswith("localhub_")
    port = free_port()
    env = {**os.environ, "LOCALHUB_TOKEN": "from-env"}
    result = subprocess.run([sys.executable, "-m", "localhub.ctl", "start", "--port", str(port), "--data_dir",
                             str(tmp_path / "envhub")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    try:
        assert result.returncode == 0, result.stderr
        assert 'export HF_TOKEN="$LOCALHUB_TOKEN"' in result.stdout and "from-env" not in result.stdout
        assert not (tmp_path / "envhub" / "token").exists()
        assert HfApi(endpoint=f"http://127.0.0.1:{port}", token="from-env").whoami()["name"] == "demo"
    finally:
        stop(tmp_path / "envhub")


def test_crash_leftovers_are_cleaned_at_start(tmp_path):
    data_dir, port = tmp_path / "hub", free_port()
    process = start(port, data_dir, token="t")
    api = HfApi(endpoint=f"http://127.0.0.1:{port}", token="t")
    api.create_repo("demo/kept")
    api.upload_file(path_or_fileobj=b"\0binary kept", path_in_repo="k.bin", repo_id="demo/kept")
    process.kill()  # kill -9
    process.wait()
    orphan = data_dir / "blobs" / ("0" * 64)
    orphan.write_bytes(b"uploaded, never committed")
    (data_dir / "blobs" / ".tmp-half-written").write_bytes(b"half")
    (data_dir / "repos" / "model" / "demo" / "kept" / "commits" / ".tmp-x").write_bytes(b"half")
    process = start(port, data_dir, token="t")
    try:
        assert not orphan.exists() and not list(data_dir.rglob(".tmp-*"))
        path = HfApi(endpoint=f"http://127.0.0.1:{port}", token="t").hf_hub_download(
            "demo/kept", "k.bin", cache_dir=tmp_path / "cache")
        assert open(path, "rb").read() == b"\0binary kept"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_concurrent_commits_are_all_kept_and_a_stale_parent_is_refused(url):
    from concurrent.futures import ThreadPoolExecutor

    api = HfApi()
    api.create_repo("demo/concurrent", exist_ok=True)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: api.upload_file(path_or_fileobj=str(i).encode(), path_in_repo=f"c/{i}.txt",
                                                repo_id="demo/concurrent"), range(24)))
    assert {f"c/{i}.txt" for i in range(24)} <= set(api.list_repo_files("demo/concurrent"))
    stale = api.list_repo_commits("demo/concurrent")[1].commit_id
    response = httpx.post(f"{url}/api/models/demo/concurrent/commit/main", headers=auth(),
                          content=commit_lines(add("late.txt"), header={"summary": "late", "parentCommit": stale}))
    assert response.status_code == 412


def test_writes_without_a_valid_token_never_land(url):
    for token in (None, "wrong", "x" * 40):
        headers = auth(token) if token is not None else {}
        for method, path, kwargs in (("post", "/api/repos/create", {"json": {"name": "intruder"}}),
                                     ("post", "/api/models/demo/abuse/commit/main",
                                      {"content": commit_lines(add("i"))}),
                                     ("put", "/api/models/demo/abuse/settings", {"json": {"private": True}}),
                                     ("post", "/api/models/demo/abuse/branch/intruder", {"json": {}}),
                                     ("delete", "/api/repos/delete", {"content": b'{"name": "abuse"}'})):
            response = httpx.request(method.upper(), f"{url}{path}", headers=headers, **kwargs)
            assert response.status_code == 401, (token, path, response.status_code)
    assert "i" not in HfApi().list_repo_files("demo/abuse") and not HfApi().repo_info("demo/abuse").private
