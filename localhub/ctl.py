"""Start / stop a local Hub in the background: ``python -m localhub.ctl start|stop --port P --data_dir D``.

``start`` reuses a server already on the port only after checking that it is this folder's Hub
(``whoami`` with this folder's token); anything else on the port, or this folder already served
on another port, is an error and no exports are printed. ``stop`` signals only the process that
holds this folder's lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .__main__ import load_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on the port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def is_this_hub(port: int, token: str, host: str = "127.0.0.1") -> bool:
    """The server on the port accepts this folder's token: it is this folder's Hub."""
    request = urllib.request.Request(f"http://{host}:{port}/api/whoami-v2",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status == 200 and "name" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def lock_holder(data_dir: Path) -> str | None:
    """Who holds the folder's server lock (its note: pid and port), or None when no server does."""
    path = data_dir / "server.lock"
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def start(port: int, data_dir: Path, token: str | None = None, timeout: float = 30,
          orgs: tuple[str, ...] = ("timm",)) -> subprocess.Popen | None:
    """Start the server unless this folder's Hub is already up on the port; returns the new process (None if reused)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = load_token(data_dir, token)
    if answers(port):
        if is_this_hub(port, token):
            return None
        raise SystemExit(f"port {port} is taken by something that is not the local Hub of {data_dir} "
                         "(it refused this folder's token); choose another port")
    holder = lock_holder(data_dir)
    if holder:
        raise SystemExit(f"{data_dir} is already served by {holder}; use that port, or stop it first "
                         f"(python -m localhub.ctl stop --data_dir {data_dir})")
    log = open(data_dir / "server.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "localhub", "--host", "127.0.0.1", "--port", str(port), "--data_dir", str(data_dir),
         "--orgs", *orgs],
        stdout=log, stderr=log, env={**os.environ, "LOCALHUB_TOKEN": token}, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not is_this_hub(port, token):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"local Hub failed to start on port {port}; see {data_dir / 'server.log'}")
        time.sleep(0.1)
    return process


def stop(data_dir: Path, timeout: float = 10) -> bool:
    """SIGTERM the process holding this folder's lock (and only it); True if one was running."""
    holder = lock_holder(data_dir)
    if holder is None or not holder.startswith("localhub pid "):
        return False
    pid = int(holder.split()[2])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while lock_holder(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data_dir", type=Path, default=Path(".hub"))
    parser.add_argument("--hf_home", type=Path, default=None, help="print HF_HOME for the local Hub's own cache")
    args = parser.parse_args()
    if args.command == "stop":
        print("local Hub stopped" if stop(args.data_dir) else "no local Hub was running from this folder")
        return
    start(args.port, args.data_dir)
    print(f"export HF_ENDPOINT=http://127.0.0.1:{args.port}")
    if os.environ.get("LOCALHUB_TOKEN"):
        print('export HF_TOKEN="$LOCALHUB_TOKEN"')  # the token itself is never printed
    else:
        print(f"export HF_TOKEN=$(cat {args.data_dir.resolve() / 'token'})")
    print("export HF_HUB_DISABLE_XET=1")
    if args.hf_home:  # the Hub cache does not key on the endpoint: keep the local Hub's apart
        print(f"export HF_HOME={args.hf_home.resolve()}")


if __name__ == "__main__":
    main()
