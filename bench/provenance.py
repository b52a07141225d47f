"""Reproducibility columns recorded with every result row (see DESIGN.md)."""

from __future__ import annotations

import platform
import socket
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import bench


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The package checkout's commit, with '+dirty' when it has uncommitted changes."""
    root = Path(bench.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not rev:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict[str, Any]:
    return {
        "bench_version": bench.__version__,
        "git_revision": git_revision(),
        "python_version": platform.python_version(),
        "torch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "submitted_from": socket.gethostname(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    }
