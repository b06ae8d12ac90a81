"""What a benchmark records about where it ran: the commit, the versions, the device."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


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


def versions(device: str) -> dict:
    """torch, CUDA, Python and Triton versions and the device's name."""
    meta = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else platform.processor() or "cpu",
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception as err:  # CPU machines may lack it
        meta["triton"] = repr(err)[:200]
    return meta
