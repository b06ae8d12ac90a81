"""Chapter 3: DSS's recurrent views, and why DSS-softmax needs two cases by the sign of Re(λ).

Two checks, in float64:

- *recurrence = convolution*: :func:`ssm.dss_recurrence` (the step systems of
  :func:`ssm.scan.dss_step_system`, with DSS-softmax's intermediate state ``x̃_k``) against ``u``
  convolved with :func:`ssm.dss_kernel`, for DSS-exp and for DSS-softmax with eigenvalues on
  both sides of the imaginary axis;
- *overflow*: at ``L = 65 536`` with ``Re λ ≫ 0``, the recurrence written as for ``Re λ ≤ 0``
  (:func:`naive_softmax_recurrence`) grows its state as ``e^{Re(λ)Δk}`` until it is ``inf`` and
  its output ``NaN``, while the stable one (the state run with ``e^{-kλΔ}`` and read out with
  ``e^{λΔ(k-(L-1))}``) stays finite and equals the convolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import plotting
from ..conv import causal_conv, fft_conv
from ..kernels import dss_kernel
from ..scan import dss_recurrence
from ._common import bound, check_profile, seed_everything

#: Errors below this are printed as ``< TOL``: float64 round-off, whatever the CPU.
TOL = 1e-12
#: The largest finite float64, where the naive state stops.
FLOAT64_MAX = float(np.finfo(np.float64).max)


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "seed": 0,
        "check_length": 256,  # recurrence against convolution
        "check_state": 8,  # N complex eigenvalues per channel, H = 3 channels
        "length": 65536,  # the overflow run
        "real_parts": [1.0, 2.0, 5.0],  # Re λ of the overflow run, one channel each
        "dt": 0.02,
        "every": 256 if profile == "ci" else 16,  # the state's size is recorded every this many
    }


def naive_softmax_recurrence(
    Lambda: torch.Tensor, W: torch.Tensor, dt: float, u: torch.Tensor, L: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """DSS-softmax's recurrence as written for ``Re λ ≤ 0``, used whatever the sign of Re(λ).

    ``x̃_k = e^{λΔ} x̃_{k-1} + u_k`` and ``y_k = 2 Re Σ_i W_i x̃_{i,k} (e^{λ_iΔ} - 1) /
    (λ_i (e^{λ_iΔL} - 1))`` (DSS paper, §3.3). For ``Re λ > 0`` the state grows as
    ``e^{Re(λ)Δk}`` and overflows once ``Re(λ)Δk > log(float max) ≈ 709``; so does
    ``e^{λΔL}`` in the normalizer, which turns every output into ``NaN``. ``Lambda``, ``W``
    ``(H, N)`` complex, ``u`` ``(H, T)`` real; run step by step in NumPy (float64, its overflow
    warnings silenced: the overflow is the point).

    Returns ``y`` ``(H, T)`` and ``max_i |x̃_{i,k}|`` ``(H, T)``.
    """
    lam, w, u = Lambda.numpy(), W.numpy(), u.numpy()
    y = np.empty(u.shape)  # (H T)
    sizes = np.empty(u.shape)  # (H T)
    with np.errstate(over="ignore", invalid="ignore"):
        Ab = np.exp(lam * dt)  # (H N)
        readout = w * (Ab - 1) / (lam * (np.exp(lam * dt * L) - 1))  # (H N)
        x = np.zeros_like(lam)  # (H N)
        for k in range(u.shape[-1]):
            x = Ab * x + u[:, k : k + 1]  # (H N)
            y[:, k] = 2 * (readout * x).sum(-1).real  # (H)
            sizes[:, k] = np.abs(x).max(-1)  # (H)
    return torch.from_numpy(y), torch.from_numpy(sizes)  # (H T) (H T)


def random_system(H: int, N: int, real: tuple[float, float], g: torch.Generator):
    """``Λ`` ``(H, N)`` with ``Re λ`` uniform in ``real`` and ``Im λ ~ N(0, 3²)``; ``W`` ``(H, N)``
    complex normal; ``Δ`` ``(H,)`` log-uniform in ``[1e-3, 1e-1]``."""
    re = real[0] + (real[1] - real[0]) * torch.rand(H, N, generator=g, dtype=torch.float64)
    Lambda = torch.complex(re, 3 * torch.randn(H, N, generator=g, dtype=torch.float64))
    W = torch.randn(H, N, generator=g, dtype=torch.complex128)
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(-6.9, -2.3, generator=g))
    return Lambda, W, dt


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return float((a - b).abs().max() / b.abs().max())


def check(cfg: dict[str, Any], g: torch.Generator) -> list[dict[str, Any]]:
    """Recurrence against convolution for DSS-exp and DSS-softmax, ``Re λ`` of either sign."""
    L, N = cfg["check_length"], cfg["check_state"]
    cases = [("exp", (-1.0, -0.01)), ("softmax", (-1.0, -0.01)), ("softmax", (0.01, 1.0)),
             ("softmax", (-1.0, 1.0))]  # fmt: skip
    out = []
    for variant, real in cases:
        Lambda, W, dt = random_system(3, N, real, g)
        u = torch.randn(2, 3, L, generator=g, dtype=torch.float64)  # (B H L)
        y = dss_recurrence(Lambda, W, dt, u, variant)  # (B H L)
        K = dss_kernel(Lambda, W, dt, L, variant)  # (H L)
        out.append({"variant": variant, "real": list(real), "err": rel_err(y, causal_conv(u, K))})
    return out


def overflow(cfg: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
    """The naive and the stable DSS-softmax recurrences at ``L = cfg["length"]``, one channel per
    real part of ``cfg["real_parts"]``."""
    L, every = cfg["length"], cfg["every"]
    re = torch.tensor(cfg["real_parts"], dtype=torch.float64)[:, None]  # (H 1)
    Lambda = torch.complex(re, torch.ones_like(re))  # (H 1): λ = Re λ + i
    W = torch.ones_like(Lambda)  # (H 1)
    u = torch.randn(len(re), L, generator=g, dtype=torch.float64)  # (H L)
    with torch.no_grad():
        naive, sizes = naive_softmax_recurrence(Lambda, W, cfg["dt"], u, L)  # (H L) (H L)
        stable = dss_recurrence(Lambda, W, cfg["dt"], u, "softmax")  # (H L)
        conv = fft_conv(u, dss_kernel(Lambda, W, cfg["dt"], L, "softmax"))  # (H L)
    channels = []
    for h, r in enumerate(cfg["real_parts"]):
        bad_state = (~torch.isfinite(sizes[h])).nonzero()
        bad_out = (~torch.isfinite(naive[h])).nonzero()
        channels.append({
            "real": r,
            "state_overflow_step": int(bad_state[0]) if len(bad_state) else None,
            "predicted_step": int(np.ceil(np.log(FLOAT64_MAX) / (r * cfg["dt"]))),
            "naive_nonfinite": float((~torch.isfinite(naive[h])).double().mean()),
            "naive_first_nonfinite": int(bad_out[0]) if len(bad_out) else None,
            "stable_finite": bool(torch.isfinite(stable[h]).all()),
            "stable_err": rel_err(stable[h], conv[h]),
            "stable_max": float(stable[h].abs().max()),
            "log10_state": torch.log10(sizes[h, ::every]).tolist(),
        })  # fmt: skip
    return {"length": L, "dt": cfg["dt"], "every": every, "channels": channels}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    g = seed_everything(cfg["seed"])
    return {"check": check(cfg, g), "overflow": overflow(cfg, g)}


def summary(results: dict[str, Any]) -> str:
    """Two tables: recurrence against convolution; the naive and stable runs at length L."""
    lines = [f"{'variant':<8} {'Re λ in':<14} {'recurrence vs convolution':>26}"]
    for c in results["check"]:
        span = f"[{c['real'][0]:g}, {c['real'][1]:g}]"
        lines.append(f"{c['variant']:<8} {span:<14} {bound(c['err']):>26}")
    o = results["overflow"]
    lines += [
        "",
        f"L = {o['length']:,}, Δ = {o['dt']:g}: naive recurrence against the stable one",
        f"{'Re λ':>5} {'state inf at k':>15} {'709/(ReλΔ)':>11} {'naive NaN/inf':>14} "
        f"{'stable finite':>14} {'stable vs conv':>15}",
    ]
    for c in o["channels"]:
        step = "never" if c["state_overflow_step"] is None else f"{c['state_overflow_step']:,}"
        lines.append(
            f"{c['real']:>5.1f} {step:>15} {c['predicted_step']:>11,} "
            f"{100 * c['naive_nonfinite']:>13.1f}% {c['stable_finite']!s:>14} "
            f"{bound(c['stable_err']):>15}"
        )
    return "\n".join(line.rstrip() for line in lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """The size of the naive state ``max |x̃_k|`` against ``k`` (log scale), one line per Re(λ),
    up to the largest float64, where it becomes ``inf`` (a cross)."""
    o = results["overflow"]
    fig, ax = plotting.subplots(1, 1, height=3.0)
    colors = [plotting.PALETTE[c] for c in ("blue", "orange", "vermillion", "green", "purple")]
    for c, color in zip(o["channels"], colors, strict=False):
        size = np.array([np.inf if v is None or v == "inf" else v for v in c["log10_state"]])
        k = np.arange(len(size)) * o["every"]
        finite = np.isfinite(size)
        ax.plot(k[finite], size[finite], color=color, label=f"Re λ = {c['real']:g}")
        if c["state_overflow_step"] is not None:
            ax.plot([c["state_overflow_step"]], [np.log10(FLOAT64_MAX)], "x", color=color,
                    ms=8, mew=2)  # fmt: skip
    ax.axhline(np.log10(FLOAT64_MAX), color=plotting.PALETTE["black"], ls=":",
               label="largest float64")  # fmt: skip
    ax.axvline(o["length"], color="0.5", ls="--", lw=1.0, label=f"L = {o['length']:,}")
    title = f"naive DSS-softmax recurrence, Δ = {o['dt']:g}"
    plotting.label(ax, "step k", "log10 max |x̃_k|", title, legend="lower right")
    return fig
