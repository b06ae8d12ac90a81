"""Modes a caller of an op may be in, which the backend choice must not inherit (the probe of a
kernel runs a backward pass: under ``no_grad`` it once failed and was cached as a fallback)."""

from __future__ import annotations

import pytest
import torch


def caller_modes(device: torch.device) -> dict:
    """The grad, inference and autocast modes of a caller, as context-manager factories."""
    return {
        "no_grad": torch.no_grad,
        "inference_mode": torch.inference_mode,
        "autocast": lambda: torch.autocast(device.type, dtype=torch.bfloat16),
    }


AUTO_MODES = [  # the first call of a process in each of these must still choose the kernel
    pytest.param(torch.no_grad, id="no_grad"),
    pytest.param(torch.inference_mode, id="inference_mode"),
    pytest.param(lambda: torch.autocast("cuda", dtype=torch.bfloat16), id="autocast"),
    pytest.param(torch.enable_grad, id="grad"),
]
