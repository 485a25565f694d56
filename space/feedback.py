"""Visitors' corrections, kept on disk until a private dataset repo has them.

Each correction is written at once under ``pending/`` of the store's folder (``FEEDBACK_DIR``; else
``/data/space-feedback`` where ``/data`` exists, as on Spaces with persistent storage; else ``.feedback/``
beside the Space), so neither a restart nor an unreachable Hub loses it. Every ``FEEDBACK_FLUSH_SECONDS``
(default 300), at shutdown (SIGTERM, SIGINT) and at the next start, the pending corrections become one batch
folder, pushed as ``data/<batch>/`` (pictures as PNG plus one ``metadata.jsonl``); a batch leaves the disk only
once the Hub has it. ``datasets.load_dataset(ID, split="train")`` reads every batch as ``image``, ``label``,
``predicted``, ``confidence``, ``model_revision``, ``created_at``. Nothing else about the visitor is stored.

Nothing is pushed to a dataset that is public or that trains the model: the store checks at start and before
every push, and is off, saying why, when either holds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path

from PIL import Image

from .ood import NEITHER

MAX_PENDING = 500  # corrections on disk, not yet on the Hub; beyond, visitors are asked to wait
PER_CLIENT = (5, 60.0)  # at most 5 corrections per visitor per 60 s
ALL_CLIENTS = (60, 60.0)  # and 60 per 60 s from everyone together
MAX_CLIENTS = 10_000  # visitors remembered for the limit; the longest quiet go first
CONFIG_FILE = "feedback.json"  # written by training.publish_space --feedback_dataset
logger = logging.getLogger("avp-space")


class FeedbackRefused(ValueError):
    """The correction was not stored; the message says why, for the visitor."""


def configured_dataset(space_dir: str) -> str | None:
    """FEEDBACK_DATASET, else the dataset named in this Space's feedback.json, else None."""
    if os.environ.get("FEEDBACK_DATASET"):
        return os.environ["FEEDBACK_DATASET"]
    path = Path(space_dir) / CONFIG_FILE
    return json.loads(path.read_text()).get("dataset_id") if path.is_file() else None


def storage_folder(space_dir: str) -> Path:
    """Where corrections wait: a folder a restart keeps."""
    if os.environ.get("FEEDBACK_DIR"):
        return Path(os.environ["FEEDBACK_DIR"])
    if os.path.isdir("/data") and os.access("/data", os.W_OK):
        return Path("/data/space-feedback")
    return Path(space_dir) / ".feedback"


class FeedbackStore:
    def __init__(self, dataset_id: str, labels: list[str], token: str, folder: Path,
                 training_datasets: tuple[str, ...] = (), flush_seconds: float | None = None,
                 endpoint: str | None = None):
        from huggingface_hub import HfApi

        self.dataset_id, self.labels, self.training_datasets = dataset_id, [*labels, NEITHER], training_datasets
        self.api = HfApi(endpoint=endpoint, token=token)
        self.folder, self.pending_dir, self.outbox = folder, folder / "pending", folder / "outbox"
        for made in (self.pending_dir, self.outbox):
            made.mkdir(parents=True, exist_ok=True)
        self.off_reason: str | None = None  # why corrections are off, for the page
        self.verified = False
        self.lock, self.push_lock = threading.Lock(), threading.Lock()
        self.recent: OrderedDict[str, deque] = OrderedDict()
        self.everyone: deque = deque()
        self.unsent = self.count_on_disk()  # kept by add and flush: admit never reads the disk
        self.verify()
        self.stopped = threading.Event()
        flush_seconds = flush_seconds or float(os.environ.get("FEEDBACK_FLUSH_SECONDS", "300"))
        self.thread = threading.Thread(target=self.every, args=(flush_seconds,), daemon=True, name="feedback-push")
        self.thread.start()  # its first push sends what an earlier run left on disk

    def verify(self) -> None:
        """Corrections are off for a dataset that trains the model or is public (a missing one is made private);
        an unreachable Hub decides nothing, and the check runs again before the next push."""
        from huggingface_hub.errors import RepositoryNotFoundError

        if self.dataset_id in self.training_datasets:
            self.off_reason = (f"Corrections are off: the feedback dataset {self.dataset_id} is the dataset this "
                               "model is trained and published from.")
            self.verified = True
            return
        try:
            try:
                private = self.api.repo_info(self.dataset_id, repo_type="dataset").private
            except RepositoryNotFoundError:
                self.api.create_repo(self.dataset_id, repo_type="dataset", private=True, exist_ok=True)
                private = self.api.repo_info(self.dataset_id, repo_type="dataset").private
        except Exception as e:  # down, timeout, 5xx: keep corrections on disk, decide later
            logger.warning("feedback dataset %s not checked (%s); corrections wait on disk", self.dataset_id,
                           type(e).__name__)
            return
        self.verified = True
        self.off_reason = None if private else (
            f"Corrections are off: the feedback dataset {self.dataset_id} is public, and pictures sent here must "
            "stay private.")

    def admit(self, label: str | None, client: str) -> None:
        """Before anything is decoded: the answer is known, corrections are on, and neither this visitor nor
        everyone together is over the limit, nor the disk over ``MAX_PENDING``. Raises FeedbackRefused."""
        if self.off_reason:
            raise FeedbackRefused(self.off_reason)
        if label not in self.labels:
            raise FeedbackRefused(f"Unknown answer {label!r}: choose one of {', '.join(self.labels)}.")
        if self.unsent >= MAX_PENDING:
            raise FeedbackRefused("Too many corrections are waiting to be saved; please try again in a few minutes.")
        now = time.monotonic()
        with self.lock:
            stamps = self.recent.pop(client, deque())
            for queue, window in ((stamps, PER_CLIENT[1]), (self.everyone, ALL_CLIENTS[1])):
                while queue and now - queue[0] > window:
                    queue.popleft()
            self.recent[client] = stamps  # most recent last: the quiet ones are forgotten first
            while len(self.recent) > MAX_CLIENTS:
                self.recent.popitem(last=False)
            if len(stamps) >= PER_CLIENT[0]:
                raise FeedbackRefused(f"Too many corrections from you just now: at most {PER_CLIENT[0]} a minute.")
            if len(self.everyone) >= ALL_CLIENTS[0]:
                raise FeedbackRefused("Too many corrections from everyone just now; please try again in a minute.")
            stamps.append(now)
            self.everyone.append(now)

    def add(self, image: Image.Image, label: str, predicted: str, confidence: float,
            model_revision: str | None) -> str:
        """Store one admitted correction on disk: the picture first, then its row (a picture without a row is
        an interrupted write, never pushed)."""
        name = uuid.uuid4().hex
        row = {"file_name": f"{name}.png", "label": label, "predicted": predicted,
               "confidence": round(float(confidence), 6), "model_revision": model_revision or "",
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        image.save(self.pending_dir / f"{name}.png", format="PNG")
        temporary = self.pending_dir / f".{name}.json"
        temporary.write_text(json.dumps(row))
        os.replace(temporary, self.pending_dir / f"{name}.json")
        with self.lock:
            self.unsent += 1
        return f"Thank you: saved as “{label}”. It reaches the dataset within a few minutes."

    def count_on_disk(self) -> int:
        """Corrections on disk that the Hub does not have yet (an earlier run's included)."""
        return len(list(self.pending_dir.glob("*.json"))) + sum(self.rows_in(b) for b in self.batches())

    @staticmethod
    def rows_in(batch: Path) -> int:
        return len((batch / "metadata.jsonl").read_text().splitlines())

    def batches(self) -> list[Path]:
        return sorted(b for b in self.outbox.iterdir() if (b / "metadata.jsonl").is_file())

    def seal(self) -> None:
        """The pending corrections become one batch folder (moved, then its metadata.jsonl written last)."""
        rows = sorted(self.pending_dir.glob("*.json"))
        if not rows:
            return
        batch = self.outbox / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        batch.mkdir()
        lines = []
        for row_file in rows:
            row = json.loads(row_file.read_text())
            os.replace(self.pending_dir / row["file_name"], batch / row["file_name"])
            lines.append(json.dumps(row))
            row_file.unlink()
        (batch / ".metadata.tmp").write_text("\n".join(lines) + "\n")
        os.replace(batch / ".metadata.tmp", batch / "metadata.jsonl")

    def flush(self) -> int:
        """Seal what is pending and push every batch the Hub lacks; returns how many were pushed. A batch that
        cannot be pushed stays on disk for the next flush."""
        with self.push_lock:
            with self.lock:
                self.seal()
            if not self.verified:
                self.verify()
            if not self.verified or self.off_reason:
                return 0
            pushed = 0
            for batch in self.batches():
                try:
                    self.api.upload_folder(repo_id=self.dataset_id, repo_type="dataset", folder_path=batch,
                                           path_in_repo=f"data/{batch.name}", allow_patterns=["*.png", "*.jsonl"],
                                           commit_message=f"Visitors' corrections {batch.name}")
                except Exception as e:
                    logger.warning("corrections batch %s not pushed (%s: %s); kept on disk", batch.name,
                                   type(e).__name__, str(e)[:200])
                    break
                sent = self.rows_in(batch)
                shutil.rmtree(batch)
                with self.lock:
                    self.unsent -= sent
                pushed += 1
            return pushed

    def every(self, seconds: float) -> None:
        while True:
            try:
                self.flush()
            except Exception:  # a full disk, say: log, keep the thread
                logger.exception("pushing corrections failed")
            if self.stopped.wait(seconds):
                return

    def stop(self) -> None:
        """At shutdown: one last push; whatever the Hub did not take stays on disk for the next start."""
        self.stopped.set()
        self.flush()
