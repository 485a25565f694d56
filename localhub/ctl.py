"""Start / stop a local Hub in the background: ``python -m localhub.ctl start|stop --port P --data_dir D``.

``start`` is idempotent: if a server already answers on the port, it is reused. It prints the
``export`` lines a shell needs (the token is read from ``<data_dir>/token``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .__main__ import load_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_up(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/api/validate-yaml", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # something answers HTTP (405 for GET): the server is up
    except OSError:
        return False


def start(port: int, data_dir: Path, token: str | None = None, timeout: float = 30) -> subprocess.Popen | None:
    """Start the server unless it is already up; returns the new process (None if reused)."""
    if is_up(port):
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    load_token(data_dir, token)  # make the token file before the server reads it
    env = {**os.environ, **({"LOCALHUB_TOKEN": token} if token else {})}
    log = open(data_dir / "server.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "localhub", "--host", "127.0.0.1", "--port", str(port), "--data_dir", str(data_dir)],
        stdout=log, stderr=log, env=env, start_new_session=True,
    )
    (data_dir / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not is_up(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"local Hub failed to start on port {port}; see {data_dir / 'server.log'}")
        time.sleep(0.1)
    return process


def stop(data_dir: Path) -> bool:
    pid_file = data_dir / "server.pid"
    if not pid_file.is_file():
        return False
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    except ProcessLookupError:
        pass
    pid_file.unlink()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data_dir", type=Path, default=Path(".hub"))
    args = parser.parse_args()
    if args.command == "stop":
        print("local Hub stopped" if stop(args.data_dir) else "no local Hub was running from this folder")
        return
    start(args.port, args.data_dir)
    print(f"export HF_ENDPOINT=http://127.0.0.1:{args.port}")
    print(f"export HF_TOKEN=$(cat {args.data_dir.resolve() / 'token'})")
    print("export HF_HUB_DISABLE_XET=1")


if __name__ == "__main__":
    main()
