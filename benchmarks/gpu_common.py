"""Helpers shared by the GPU check and benchmark scripts of this folder."""

from __future__ import annotations

import contextlib

import torch
from triton.testing import do_bench


@contextlib.contextmanager
def poisoned_empty():
    """``torch.empty``/``empty_like`` return NaN-filled floating tensors while active, so an
    output element that no kernel writes shows up as NaN."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan(out: torch.Tensor) -> torch.Tensor:
        return out.fill_(float("nan")) if (out.is_floating_point() or out.is_complex()) else out

    torch.empty = lambda *a, **k: nan(empty(*a, **k))
    torch.empty_like = lambda *a, **k: nan(empty_like(*a, **k))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = empty, empty_like


def rel_err(x: torch.Tensor, truth: torch.Tensor) -> float:
    """``‖x - truth‖ / ‖truth‖`` in float64; NaN when ``x`` has a non-finite element."""
    x, truth = x.double(), truth.double()
    if not x.isfinite().all():
        return float("nan")
    return ((x - truth).norm() / truth.norm()).item()


def copy_bandwidth(device: str = "cuda") -> dict[str, float]:
    """Device-to-device copy of 1 GiB, counting bytes read plus bytes written."""
    x = torch.randn(2**28, device=device)
    y = torch.empty_like(x)
    ms = float(do_bench(lambda: y.copy_(x), warmup=25, rep=100, return_mode="median"))
    moved = 2 * x.numel() * 4
    return {"bytes": moved, "ms": ms, "TB_per_s": moved / ms / 1e9}
