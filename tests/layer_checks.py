"""Checks that the layer tests share."""

from __future__ import annotations

import torch
from torch import nn


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return float(((a - b).abs().max() / b.abs().max()).detach())


def assert_device_matches_float64(exact: nn.Module, fast: nn.Module, device, d_model: int):
    """``fast`` (float32, on ``device``) takes ``exact``'s (float64, CPU) parameters; its forward
    pass and every gradient must match ``exact``'s on the same random input ``(3, L, d_model)``,
    ``L`` the layers' ``l_max``."""
    fast.load_state_dict({k: v.to(device) for k, v in exact.state_dict().items()})
    x = torch.randn(3, exact.cfg.l_max, d_model, dtype=torch.float64, requires_grad=True)
    x_fast = x.detach().float().to(device).requires_grad_()
    exact(x).square().sum().backward()
    fast(x_fast).square().sum().backward()
    assert rel_err(fast(x_fast).double().cpu(), exact(x)) < 1e-4
    assert rel_err(x_fast.grad.double().cpu(), x.grad) < 1e-4
    for (name, p), q in zip(exact.named_parameters(), fast.parameters(), strict=True):
        assert rel_err(q.grad.double().cpu(), p.grad) < 1e-3, name


def long_length(device) -> int:
    """The sequence length of the long-sequence checks: 16 384 on a GPU, 2048 on the CPU."""
    return 16384 if device.type == "cuda" else 2048


def assert_bf16_finite(layer: nn.Module, length: int, d_model: int, device) -> None:
    """Under bfloat16 autocast, ``layer`` on a random ``(2, length, d_model)`` input gives finite
    outputs, and every parameter a finite gradient of the mean squared output."""
    x = torch.randn(2, length, d_model, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y = layer(x)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
