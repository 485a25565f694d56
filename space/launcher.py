"""The Space's ``app.py``: published at the Space's root, beside the ``space`` package that holds the app."""

import sys

# Triton is a GPU kernel compiler this CPU Space never uses, yet torchvision's import (via torch._dynamo)
# loads it when installed (tens of MB of RSS). A None entry makes it "not installed"; only this process.
sys.modules.setdefault("triton", None)

from space.app import main  # noqa: E402

if __name__ == "__main__":
    main()
