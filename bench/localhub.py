"""The local Hub under load: a 200 MB LFS upload's memory, and latency while heavy requests run.

    python -m bench.localhub [--upload_mb 200]

Starts its own server on a temporary folder; prints the server's peak RSS growth (VmHWM) for the
upload, and repo_info's latency alone and while a 10,000-file commit and a 400 KB YAML check are
in flight (side by side in one run).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # read when huggingface_hub is imported; this Hub has no xet
from huggingface_hub import HfApi  # noqa: E402

from bench.common import machine, table  # noqa: E402
from localhub.ctl import free_port, start  # noqa: E402


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(url: str, headers: dict, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        httpx.get(f"{url}/api/models/demo/bench", headers=headers, timeout=60).raise_for_status()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def during(url: str, headers: dict, request) -> float:
    """repo_info latency (ms) measured while ``request()`` runs in another thread."""
    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.2)
    started = time.perf_counter()
    httpx.get(f"{url}/api/models/demo/bench", headers=headers, timeout=120).raise_for_status()
    elapsed = (time.perf_counter() - started) * 1000
    thread.join()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upload_mb", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="localhub-bench-"))
    port = free_port()
    process = start(port, folder / "hub", token="bench")
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer bench"}
    api = HfApi(endpoint=url, token="bench")
    try:
        api.create_repo("demo/bench")
        big = folder / "big.bin"
        with open(big, "wb") as f:
            for _ in range(args.upload_mb):
                f.write(os.urandom(1024 * 1024))
        before = vm_hwm_mib(process.pid)
        started = time.perf_counter()
        api.upload_file(path_or_fileobj=str(big), path_in_repo="big.bin", repo_id="demo/bench")
        upload_s = time.perf_counter() - started
        growth = vm_hwm_mib(process.pid) - before

        alone = latency(url, headers)
        lines = [{"key": "header", "value": {"summary": "many"}}] + [
            {"key": "file", "value": {"path": f"many/{i:05d}.txt", "content": base64.b64encode(b"%d" % i).decode(),
                                      "encoding": "base64"}} for i in range(10_000)]
        body = "\n".join(json.dumps(line) for line in lines)
        commit = during(url, headers, lambda: httpx.post(f"{url}/api/models/demo/bench/commit/main", content=body,
                                                         headers=headers, timeout=300))
        yaml_body = {"content": "key: " + "v" * 400_000}
        yaml = during(url, headers, lambda: httpx.post(f"{url}/api/validate-yaml", json=yaml_body, timeout=300))
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"{machine()}\n")
    print(table([[f"{args.upload_mb} MB LFS upload: server peak RSS growth", f"{growth:.0f} MiB",
                  f"{upload_s:.1f} s, {args.upload_mb / upload_s:.0f} MB/s"],
                 ["repo_info alone (best of 5)", f"{alone:.1f} ms", "1.00x"],
                 ["repo_info during a 10,000-file commit", f"{commit:.1f} ms", f"{commit / alone:.2f}x"],
                 ["repo_info during a 400 KB YAML check", f"{yaml:.1f} ms", f"{yaml / alone:.2f}x"]],
                ["what", "measured", "note"]))


if __name__ == "__main__":
    main()
