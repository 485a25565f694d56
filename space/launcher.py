"""The Space's ``app.py``: published at the Space's root, beside the ``space`` package that holds the app."""

import os

# No usage analytics: the Space talks to its Hub and nothing else (offline, Gradio would try Plausible).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from space.app import main  # noqa: E402

if __name__ == "__main__":
    main()
