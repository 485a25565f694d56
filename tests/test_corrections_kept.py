"""Visitors' corrections: never lost (SIGTERM, a Hub down at start), never public, limits per visitor."""

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, hf_hub_download
from PIL import Image

from localhub.ctl import free_port
from space import app
from space.feedback import ALL_CLIENTS, MAX_CLIENTS, PER_CLIENT, FeedbackRefused, FeedbackStore
from tests.conftest import DATA_DIR, ROOT, TOKEN

LABELS = ["alien", "predator"]


def stored_rows(dataset_id: str, endpoint: str | None = None) -> list[dict]:
    """Every correction row in the dataset repo, read file by file (what load_dataset reads)."""
    api = HfApi(endpoint=endpoint, token=TOKEN)
    rows = []
    for name in api.list_repo_files(dataset_id, repo_type="dataset"):
        if name.endswith("metadata.jsonl"):
            path = hf_hub_download(dataset_id, name, repo_type="dataset", endpoint=endpoint, token=TOKEN)
            rows += [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
            folder = name.rsplit("/", 1)[0]
            assert all(f"{folder}/{row['file_name']}" in api.list_repo_files(dataset_id, repo_type="dataset")
                       for row in rows[-1:])
    return rows


def test_a_public_dataset_or_the_training_one_turns_corrections_off(hub, tmp_path):
    api = HfApi()
    api.create_repo("demo/fb-public", repo_type="dataset", private=False, exist_ok=True)
    public = FeedbackStore("demo/fb-public", LABELS, TOKEN, tmp_path / "a", flush_seconds=3600)
    assert "is public" in public.off_reason
    with pytest.raises(FeedbackRefused, match="is public"):
        public.admit("alien", "v1")
    same = FeedbackStore("demo/alien-vs-predator", LABELS, TOKEN, tmp_path / "b", flush_seconds=3600,
                         training_datasets=("demo/alien-vs-predator",))
    assert "is the dataset this model is trained" in same.off_reason
    fresh = FeedbackStore("demo/fb-fresh", LABELS, TOKEN, tmp_path / "c", flush_seconds=3600)
    assert fresh.off_reason is None and api.repo_info("demo/fb-fresh", repo_type="dataset").private
    for store in (public, same, fresh):
        store.stop()


def test_limits_count_each_visitor_by_the_proxys_hop_and_everyone_together(hub, tmp_path, monkeypatch):
    def request(host: str, forwarded: str | None = None):
        return SimpleNamespace(headers={"x-forwarded-for": forwarded} if forwarded else {},
                               client=SimpleNamespace(host=host))

    # What the client wrote comes first; the proxy appends what it saw: that is the key.
    assert app.client_key(request("10.0.0.1", "6.6.6.6, 203.0.113.9")) == "203.0.113.9"
    assert app.client_key(request("127.0.0.1")) == "127.0.0.1"
    store = FeedbackStore("demo/fb-limits", LABELS, TOKEN, tmp_path, flush_seconds=3600)
    for _ in range(PER_CLIENT[0]):
        store.admit("alien", "visitor-a")
    with pytest.raises(FeedbackRefused, match="from you"):
        store.admit("alien", "visitor-a")
    store.admit("alien", "visitor-b")  # another visitor is not held up by the first
    with pytest.raises(FeedbackRefused, match="Unknown answer"):
        store.admit("sepia", "visitor-c")
    for i in range(ALL_CLIENTS[0] - PER_CLIENT[0] - 1):
        store.admit("predator", f"crowd-{i}")
    with pytest.raises(FeedbackRefused, match="from everyone"):
        store.admit("alien", "visitor-new")
    monkeypatch.setattr("space.feedback.MAX_CLIENTS", 10)
    monkeypatch.setattr("space.feedback.ALL_CLIENTS", (10**6, 60.0))
    for i in range(50):
        store.admit("alien", f"many-{i}")
    assert len(store.recent) == 10 and MAX_CLIENTS >= 1000  # old entries go; the table stays bounded
    # The answer and the limit are checked before the picture is even opened.
    with pytest.raises(Exception, match="Unknown answer"):
        app.send_feedback(store, "/nonexistent/not-an-image.jpg", "sepia", "visitor-d")
    store.stop()


def start_space(model: str, env: dict, port: int) -> subprocess.Popen:
    env = {**os.environ, "MODEL_ID": model, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", **env}
    return subprocess.Popen([sys.executable, "-c", "from space.app import main; main()"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def connect(port: int, process: subprocess.Popen, seconds: float = 180):
    from gradio_client import Client

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:
            time.sleep(1)
    raise AssertionError(process.stderr.read().decode()[-3000:] if process.poll() is not None else "no Space")


def send(client, names: dict[str, str]) -> None:
    from gradio_client import handle_file

    for name, label in names.items():
        answer = client.predict(handle_file(str(DATA_DIR / "validation" / name)), label, api_name="/feedback")
        assert "Thank you" in answer


def test_sigterm_within_the_flush_interval_loses_no_correction(trained_model, tmp_path):
    port = free_port()
    process = start_space(trained_model[2], {"FEEDBACK_DATASET": "demo/fb-sigterm", "FEEDBACK_DIR": str(tmp_path),
                                             "FEEDBACK_FLUSH_SECONDS": "3600"}, port)
    try:
        sent = {"alien/5.jpg": "predator", "predator/5.jpg": "alien", "alien/6.jpg": "neither"}
        send(connect(port, process), sent)
        assert stored_rows("demo/fb-sigterm") == []  # an hour before the next push
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert sorted(row["label"] for row in stored_rows("demo/fb-sigterm")) == sorted(sent.values())
    assert HfApi().repo_info("demo/fb-sigterm", repo_type="dataset").private
    assert not list((tmp_path / "pending").iterdir()) and not list((tmp_path / "outbox").iterdir())


def test_a_hub_down_at_start_keeps_corrections_on_disk_until_it_is_back(trained_model, tmp_path):
    from huggingface_hub import snapshot_download

    from localhub.ctl import start

    model = snapshot_download(trained_model[2], local_dir=tmp_path / "model")  # the model from disk: no Hub needed
    hub_port, port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{hub_port}"
    process = start_space(model, {"HF_ENDPOINT": endpoint, "FEEDBACK_DATASET": "demo/fb-later",
                                  "FEEDBACK_DIR": str(tmp_path / "kept"), "FEEDBACK_FLUSH_SECONDS": "1"}, port)
    later = None
    try:
        sent = {"alien/7.jpg": "predator", "predator/7.jpg": "neither"}
        send(connect(port, process), sent)  # the page works with its Hub down
        time.sleep(3)  # a few failed pushes
        assert len(list((tmp_path / "kept").rglob("*.png"))) == 2
        later = start(hub_port, tmp_path / "later-hub", token=TOKEN)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and list((tmp_path / "kept").rglob("*.png")):
            time.sleep(1)
        assert sorted(row["label"] for row in stored_rows("demo/fb-later", endpoint)) == sorted(sent.values())
        assert HfApi(endpoint=endpoint, token=TOKEN).repo_info("demo/fb-later", repo_type="dataset").private
    finally:
        process.kill()
        if later is not None:
            later.terminate()


def test_corrections_left_on_disk_by_a_crash_are_pushed_at_the_next_start(hub, tmp_path, monkeypatch):
    first = FeedbackStore("demo/fb-crash", LABELS, TOKEN, tmp_path, flush_seconds=3600)
    first.stopped.set()  # as if killed: no last push
    for label in ("alien", "predator"):
        first.admit(label, "v")
        first.add(Image.new("RGB", (32, 32), (200, 30, 30)), label, "alien", 0.9, "abc")
    monkeypatch.setattr("space.feedback.MAX_PENDING", 2)  # the disk is full: visitors are asked to wait
    with pytest.raises(FeedbackRefused, match="waiting to be saved"):
        first.admit("alien", "w")
    monkeypatch.undo()
    (tmp_path / "pending" / "half.png").write_bytes(b"interrupted")  # a picture whose row was never written
    second = FeedbackStore("demo/fb-crash", LABELS, TOKEN, tmp_path, flush_seconds=3600)
    deadline = time.monotonic() + 60  # its first push runs at start (the next one is an hour away)
    while time.monotonic() < deadline and len(stored_rows("demo/fb-crash")) < 2:
        time.sleep(0.5)
    assert sorted(row["label"] for row in stored_rows("demo/fb-crash")) == ["alien", "predator"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and second.unsent:  # the count drops once the batch folder is gone
        time.sleep(0.1)
    assert second.unsent == 0 == second.count_on_disk()  # counted from disk at start, down by what was pushed
    second.stop()
