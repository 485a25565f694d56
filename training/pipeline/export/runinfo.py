"""What produced a run: versions, git commit, machine — saved next to every checkpoint."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__))
        return out.stdout.strip() or None
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_rss_mib() -> int:
    """This process's peak resident memory. VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss``
    over an exec, so a child started from a big process would report its parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def run_info() -> dict:
    packages = ("torch", "torchvision", "timm", "transformers", "datasets", "accelerate", "evaluate", "huggingface_hub")
    return {"git_commit": git_commit(), "versions": {p: version(p) for p in packages},
            "python": platform.python_version(), "machine": {"cpu": cpu_model(), "cores": os.cpu_count()}}
