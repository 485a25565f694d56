"""``python -m localhub --host 127.0.0.1 --port 8765 --data_dir .hub [--token T] [--orgs timm]``.

The token comes from ``--token``, else ``LOCALHUB_TOKEN``, else ``<data_dir>/token`` (made on
first start, mode 0600 from the start). It is never logged. One server per data dir: a second one
exits with a message naming the first.
"""

import argparse
import os
import secrets
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .storage import HubError


def load_token(data_dir: Path, given: str | None) -> str:
    token = given or os.environ.get("LOCALHUB_TOKEN")
    if token:
        return token
    path = data_dir / "token"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
        with os.fdopen(fd, "w") as f:
            f.write("localhub_" + secrets.token_hex(16))
    return path.read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data_dir", type=Path, default=Path(".hub"))
    parser.add_argument("--token", default=None)
    parser.add_argument("--user", default="demo")
    parser.add_argument("--orgs", nargs="*", default=["timm"], help="namespaces the token may also write to")
    args = parser.parse_args()
    try:
        app = create_app(str(args.data_dir), load_token(args.data_dir, args.token), args.user, tuple(args.orgs),
                         lock_note=f"localhub pid {os.getpid()} on port {args.port}")
    except HubError as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(1)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
