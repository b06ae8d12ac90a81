"""Chapter 5: Mega's damped EMA is a convolution, checked numerically.

Mega (Ma et al., arXiv:2209.10655v3, Section 3.1) smooths each channel with a damped EMA,
``h_t = α ⊙ β u_t + φ ⊙ h_{t-1}``, ``φ = 1 - α ⊙ δ``, ``y_t = ηᵀ h_t``. Unrolled from an initial
state ``h_{-1} = h0``,

    y_t = (K * u)_t + ηᵀ (φ^{t+1} ⊙ h0),    K_t = ηᵀ (φ^t ⊙ α ⊙ β),

so the recurrence (:func:`ssm.kernels.ema_recurrence`) equals the FFT convolution
(:func:`ssm.fftconv`) with the kernel :func:`ssm.ema_kernel`, plus the decay of the initial
state. The kernel is a real diagonal SSM's (:func:`ssm.ssm_kernel` with ``Ā = φ``, ``B̄ = α ⊙ β``,
``C = η``) and, under ZOH with a step ``Δ``, S4D's (:func:`ssm.s4d_kernel` with ``A = log φ / Δ``,
``B = -β log φ / (Δ δ)``, ``C = η / 2``). Everything runs in float64 on random parameters; the
errors are round-off, printed as bounds (:func:`ssm.experiments.diagonal_cost.error_bound`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import plotting
from ..kernels import ema_kernel, ema_recurrence, s4d_kernel, ssm_kernel
from ..ops.fftconv import fftconv
from ._common import check_profile, seed_everything
from .diagonal_cost import error_bound

#: The ``(α, δ)`` of the kernels drawn (one EMA dimension, ``β = η = 1``).
DECAYS = [(0.5, 1.0), (0.5, 0.2), (0.1, 1.0), (0.1, 0.2)]
DECAY_COLORS = ["vermillion", "orange", "blue", "green"]


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "H": 4 if ci else 16,
        "N": 8 if ci else 16,
        "L": 256 if ci else 4096,
        "batch": 2,
        "steps": [0.1, 0.5, 2.0],  # Δ of the S4D mapping, one per channel group
        "decays": [list(d) for d in DECAYS],
        "kernel_length": 40,
        "seed": 0,
        "device": "cpu",
        "threads": 1 if ci else None,
    }


def random_system(H: int, N: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``α`` in ``[0.05, 1)``, ``δ`` in ``[0.05, 1)``, ``β`` and ``η`` standard normal, each
    ``(H, N)`` float64."""
    alpha = 0.05 + 0.95 * torch.rand(H, N, generator=g, dtype=torch.float64)
    delta = 0.05 + 0.95 * torch.rand(H, N, generator=g, dtype=torch.float64)
    beta, eta = torch.randn(2, H, N, generator=g, dtype=torch.float64)
    return alpha, delta, beta, eta


def initial_state_term(alpha, delta, eta, h0: torch.Tensor, L: int) -> torch.Tensor:
    """``ηᵀ (φ^{t+1} ⊙ h0)`` for ``t = 0 .. L-1``: ``h0`` ``(B, H, N)`` → ``(B, H, L)``."""
    t = torch.arange(L, dtype=torch.float64)
    decay = (1 - alpha * delta)[..., None] ** (t + 1)  # (H N L)
    return (eta[..., None] * decay * h0[..., None]).sum(-2)  # (B H L)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max(1, max |b|)``: absolute error, relative where ``b`` is large."""
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def s4d_mapping_error(system: tuple[torch.Tensor, ...], steps: list[float], L: int) -> float:
    """Error of S4D's kernel (ZOH, real eigenvalues ``A = log φ / Δ``) against the EMA kernel,
    the channels ``(H,)`` split among the steps ``Δ``."""
    alpha, delta, beta, eta = system
    H = alpha.shape[0]
    dt = torch.tensor(steps, dtype=torch.float64).repeat_interleave(-(-H // len(steps)))[:H]
    log_phi = torch.log(1 - alpha * delta)  # (H N), real and negative
    A = (log_phi / dt[:, None]).to(torch.complex128)  # (H N)
    B = -beta * log_phi / (dt[:, None] * delta)  # (H N)
    return max_error(s4d_kernel(A, B, eta / 2, dt, L, "zoh"), ema_kernel(*system, L))


def checks(cfg: dict[str, Any]) -> dict[str, float]:
    """The largest errors of the four identities on one random system and input."""
    g = seed_everything(cfg["seed"])
    H, N, L, B = cfg["H"], cfg["N"], cfg["L"], cfg["batch"]
    system = random_system(H, N, g)
    alpha, delta, beta, eta = system
    u = torch.randn(B, H, L, generator=g, dtype=torch.float64)  # (B H L)
    h0 = torch.randn(B, H, N, generator=g, dtype=torch.float64)  # (B H N)
    K = ema_kernel(*system, L)  # (H L)
    conv = fftconv(u, K)  # (B H L)
    with_h0 = conv + initial_state_term(alpha, delta, eta, h0, L)  # (B H L)
    diagonal = ssm_kernel(1 - alpha * delta, alpha * beta, eta, L, diagonal=True)  # (H L)
    return {
        "recurrence vs convolution": max_error(ema_recurrence(*system, u), conv),
        "with h0: recurrence vs convolution + decay": max_error(
            ema_recurrence(*system, u, h0), with_h0
        ),
        "diagonal SSM kernel (Ā = φ, B̄ = αβ, C = η)": max_error(diagonal, K),
        "S4D kernel (ZOH, A = log φ / Δ)": s4d_mapping_error(system, cfg["steps"], L),
    }


def kernels(decays: list[list[float]], L: int) -> list[list[float]]:
    """``K_t = α (1 - α δ)^t`` of one EMA dimension (``β = η = 1``) per ``(α, δ)``."""

    def full(value: float) -> torch.Tensor:
        return torch.full((1, 1), value, dtype=torch.float64)  # (H N) = (1 1)

    return [ema_kernel(full(a), full(d), full(1.0), full(1.0), L)[0].tolist() for a, d in decays]


def example(cfg: dict[str, Any], L: int = 80) -> dict[str, list[float]]:
    """One channel's output by the recurrence and by the convolution (with an initial state),
    for a step input that switches on at ``L // 4``."""
    g = seed_everything(cfg["seed"] + 1)
    system = random_system(1, 4, g)
    alpha, delta, _, eta = system
    u = torch.zeros(1, 1, L, dtype=torch.float64)
    u[..., L // 4 :] = 1.0
    h0 = torch.randn(1, 1, 4, generator=g, dtype=torch.float64)
    conv = fftconv(u, ema_kernel(*system, L)) + initial_state_term(alpha, delta, eta, h0, L)
    return {
        "input": u[0, 0].tolist(),
        "recurrence": ema_recurrence(*system, u, h0)[0, 0].tolist(),
        "convolution": conv[0, 0].tolist(),
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": cfg,
        "errors": checks(cfg),
        "kernels": kernels(cfg["decays"], cfg["kernel_length"]),
        "example": example(cfg),
    }


def summary(results: dict[str, Any]) -> str:
    """Each identity's largest error (float64), as a bound."""
    cfg = results["config"]
    lines = [f"float64, H = {cfg['H']}, N = {cfg['N']}, L = {cfg['L']}: largest error"]
    lines += [f"  {error_bound(e):>8}  {name}" for name, e in results["errors"].items()]
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) The EMA kernel ``α (1 - α δ)^t`` for a few ``(α, δ)``: ``α`` scales the first tap,
    ``α δ`` sets the decay. (b) One channel by the recurrence and by the convolution plus the
    initial-state term, overlaid."""
    fig, (ax_k, ax_y) = plotting.subplots(1, 2, height=3.2)
    for (a, d), K, color in zip(results["config"]["decays"], results["kernels"], DECAY_COLORS,
                                strict=True):  # fmt: skip
        ax_k.plot(np.arange(len(K)), K, marker="o", ms=2.5, color=plotting.PALETTE[color],
                  label=f"α = {a:g}, δ = {d:g}")  # fmt: skip
    plotting.label(ax_k, "lag t", "K_t", "EMA kernel (β = η = 1)", legend="upper right")
    ex = results["example"]
    t = np.arange(len(ex["input"]))
    ax_y.plot(t, ex["input"], color=plotting.COLORS["signal"], lw=1.0, ls=":", label="input u")
    ax_y.plot(t, ex["recurrence"], color=plotting.COLORS["recurrent"], lw=3.5, alpha=0.5,
              label="recurrence")  # fmt: skip
    ax_y.plot(t, ex["convolution"], color=plotting.COLORS["convolutional"], ls="--",
              label="convolution + h0 term")  # fmt: skip
    plotting.label(ax_y, "step t", None, "one channel, from h0 ≠ 0", legend="lower right")
    plotting.panel_letters([ax_k, ax_y])
    return fig
