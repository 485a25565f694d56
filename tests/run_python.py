"""``python -m tests.run_python CODE``: run code in a fresh interpreter (its own HF_HOME, imports)."""

import sys

exec(sys.argv[1])
