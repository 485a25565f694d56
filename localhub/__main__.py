"""``python -m localhub --host 127.0.0.1 --port 8765 --data_dir .hub [--token T]``.

The token comes from ``--token``, else ``LOCALHUB_TOKEN``, else ``<data_dir>/token`` (made
on first start). It is never logged.
"""

import argparse
import os
import secrets
from pathlib import Path

import uvicorn

from .app import create_app


def load_token(data_dir: Path, given: str | None) -> str:
    token = given or os.environ.get("LOCALHUB_TOKEN")
    if token:
        return token
    path = data_dir / "token"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("localhub_" + secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data_dir", type=Path, default=Path(".hub"))
    parser.add_argument("--token", default=None)
    parser.add_argument("--user", default="demo")
    args = parser.parse_args()
    app = create_app(str(args.data_dir), load_token(args.data_dir, args.token), args.user)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
