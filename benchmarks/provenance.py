"""The commit a benchmark ran at, recorded in its JSON."""

from __future__ import annotations

import os
import subprocess


def git_commit() -> str:
    """``SSM_COMMIT`` when set (a copy of the tree on a GPU machine may have no .git, or a stale
    one), else ``git rev-parse HEAD``, else ``"unknown"``."""
    if os.environ.get("SSM_COMMIT"):
        return os.environ["SSM_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
