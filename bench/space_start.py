"""The Space as a process, side by side: today's ONNX Runtime Space against the torch Space it replaced.

    python -m bench.space_start [--model_id demo/alien-vs-predator-classifier] [--runs 2]

Each variant is started as the Hub starts a Space (``python app.py`` in a folder laid out as
``training.publish_space`` publishes it), loading one model from the Hub at ``HF_ENDPOINT`` (run
``make demo`` first; its files are downloaded once beforehand, so no variant pays for the network).
Cold start: from process start to the first ``/classify`` answer. Peak RSS: the process's high-water
mark after ``/classify`` and ``/predict`` with every CAM method. The torch Space is the ``space/``
package at ``--baseline_ref`` (git), the last commit that ran it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, SHARED, machine, table
from localhub.ctl import free_port

BASELINE_REF = "dce0226"  # the last commit whose Space ran on torch + timm
IMAGE = SHARED / "data" / "alien-vs-predator" / "validation" / "alien" / "3.jpg"


def space_folder(package: Path, folder: Path) -> Path:
    """The Space repo's layout: app.py (the launcher) at the root, the package in space/."""
    shutil.copytree(package, folder / "space", ignore=shutil.ignore_patterns("__pycache__", "README.md",
                                                                               "requirements.txt"))
    shutil.copy(package / "launcher.py", folder / "app.py")
    return folder


def baseline_package(ref: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "space"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "space"


def measure(folder: Path, model_id: str, methods: list[str]) -> dict:
    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "MODEL_ID": model_id, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        client = None
        while client is None:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode()[-2000:])
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:
                time.sleep(0.2)
        answer = client.predict(handle_file(str(IMAGE)), api_name="/classify")
        cold = time.monotonic() - started
        for method in methods:
            client.predict(handle_file(str(IMAGE)), method, 0.5, api_name="/predict")
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) // 1024
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        return {"cold_s": cold, "peak_mib": peak, "label": answer["label"], "torch": "libtorch" in maps}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_id", default="demo/alien-vs-predator-classifier")
    parser.add_argument("--baseline_ref", default=BASELINE_REF)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    from huggingface_hub import snapshot_download

    from space.cam import CAM_METHODS

    snapshot_download(args.model_id)  # both variants read these files from the cache, none from the network
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        variants = {"onnxruntime Space": space_folder(ROOT / "space", tmp / "onnx"),
                    f"torch Space ({args.baseline_ref})": space_folder(
                        baseline_package(args.baseline_ref, tmp / "baseline"), tmp / "torch")}
        results: dict[str, list[dict]] = {name: [] for name in variants}
        for _ in range(args.runs):  # alternate, so a busy moment of the machine hits both
            for name, folder in variants.items():
                results[name].append(measure(folder, args.model_id, list(CAM_METHODS)))
    ours = results["onnxruntime Space"]
    rows = []
    for name, runs in results.items():
        cold, peak = min(r["cold_s"] for r in runs), max(r["peak_mib"] for r in runs)
        rows.append([name, " / ".join(f"{r['cold_s']:.1f}" for r in runs), f"{peak}",
                     "yes" if any(r["torch"] for r in runs) else "no", runs[0]["label"],
                     f"{cold / min(r['cold_s'] for r in ours):.2f}", f"{peak / max(r['peak_mib'] for r in ours):.2f}"])
    print(f"the Space as a process, {args.model_id}; {machine()}")
    print(table(rows, ["variant", "cold start s (each run)", "peak RSS MiB", "torch loaded", "label",
                       "cold start × onnxruntime", "peak RSS × onnxruntime"]))


if __name__ == "__main__":
    main()
