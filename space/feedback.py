"""Visitors' corrections, saved to a private dataset repo with huggingface_hub's CommitScheduler.

Each Space process writes into its own folder ``data/<uuid>/`` (pictures as PNG plus one
``metadata.jsonl``), so restarts and replicas never overwrite each other, and
``datasets.load_dataset(ID, split="train")`` reads them all as ``image``, ``label``, ``predicted``,
``confidence``, ``model_revision``, ``created_at``. Nothing else about the visitor is stored.
The scheduler pushes at most every ``FEEDBACK_FLUSH_SECONDS`` (default 300) and once more at
shutdown: a crash loses at most the unflushed interval.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections import defaultdict, deque
from pathlib import Path

from PIL import Image

from .ood import NEITHER

MAX_PENDING = 500  # corrections written but not yet pushed; beyond this the Space asks visitors to wait
PER_CLIENT = (5, 60.0)  # at most 5 corrections per client per 60 s
CONFIG_FILE = "feedback.json"  # written by training.publish_space --feedback_dataset


class FeedbackRefused(ValueError):
    """The correction was not stored; the message says why, for the visitor."""


def configured_dataset(space_dir: str) -> str | None:
    """FEEDBACK_DATASET, else the dataset named in this Space's feedback.json, else None."""
    if os.environ.get("FEEDBACK_DATASET"):
        return os.environ["FEEDBACK_DATASET"]
    path = Path(space_dir) / CONFIG_FILE
    return json.loads(path.read_text()).get("dataset_id") if path.is_file() else None


class FeedbackStore:
    def __init__(self, dataset_id: str, labels: list[str], token: str, flush_seconds: float | None = None):
        from huggingface_hub import CommitScheduler

        flush_seconds = flush_seconds or float(os.environ.get("FEEDBACK_FLUSH_SECONDS", "300"))
        self.dataset_id, self.labels = dataset_id, [*labels, NEITHER]
        self.root = Path(tempfile.mkdtemp(prefix="space-feedback-"))
        self.folder = self.root / "data" / uuid.uuid4().hex
        self.folder.mkdir(parents=True)
        self.scheduler = CommitScheduler(repo_id=dataset_id, repo_type="dataset", folder_path=self.root,
                                         every=flush_seconds / 60, private=True, token=token,
                                         allow_patterns=["data/**"])
        self.recent: dict[str, deque] = defaultdict(deque)
        self.lock = threading.Lock()

    def pending(self) -> int:
        uploaded = self.scheduler.last_uploaded
        return sum(1 for p in self.folder.glob("*.png") if p not in uploaded and str(p) not in uploaded)

    def check_rate(self, client: str) -> None:
        limit, window = PER_CLIENT
        with self.lock:
            stamps, now = self.recent[client], time.monotonic()
            while stamps and now - stamps[0] > window:
                stamps.popleft()
            if len(stamps) >= limit:
                raise FeedbackRefused(f"Too many corrections from you just now: at most {limit} a minute.")
            stamps.append(now)

    def add(self, image: Image.Image, label: str, predicted: str, confidence: float, model_revision: str | None,
            client: str = "anonymous") -> str:
        """Store one correction; raises FeedbackRefused (nothing stored) for an unknown label or a limit."""
        if label not in self.labels:
            raise FeedbackRefused(f"Unknown answer {label!r}: choose one of {', '.join(self.labels)}.")
        self.check_rate(client)
        if self.pending() >= MAX_PENDING:
            raise FeedbackRefused("Too many corrections are waiting to be saved; please try again in a few minutes.")
        name = f"{uuid.uuid4().hex}.png"
        row = {"file_name": name, "label": label, "predicted": predicted, "confidence": round(float(confidence), 6),
               "model_revision": model_revision or "", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with self.scheduler.lock:  # the scheduler copies files under this lock: never half a row
            image.save(self.folder / name, format="PNG")
            with open(self.folder / "metadata.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return f"Thank you: saved as “{label}”. It reaches the dataset within a few minutes."

    def flush(self) -> None:
        """Push now (and wait); used at shutdown and by tests."""
        self.scheduler.trigger().result()

    def stop(self) -> None:
        self.scheduler.stop()
        self.flush()
