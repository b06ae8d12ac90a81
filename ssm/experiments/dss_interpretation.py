"""Chapter 3: what Re(λ)Δ does to a DSS kernel: a forget gate, and where the softmax looks.

- *DSS-exp*: each state runs ``x_k = e^{λΔ} x_{k-1} + (e^{λΔ} - 1)/λ · u_k``; like an LSTM's
  forget gate, ``|e^{λΔ}| = e^{Re(λ)Δ}`` says how much of the past it keeps. Near 1 (``Re(λ)Δ``
  near 0) the state copies its history over many steps and the kernel is long; small (``Re(λ)Δ ≪
  0``) it forgets at once, ``x_k ≈ -u_k/λ``, and the kernel is a spike at lag 0.
- *DSS-softmax*: the kernel is ``W Λ⁻¹`` times a softmax over the lags ``k`` of ``λkΔ``. For
  ``Re λ > 0`` its mass sits on the largest lags, that is on the earliest inputs (distant
  information); for ``Re λ < 0`` on lag 0, the most recent input (local information); for ``Re
  λ ≈ 0`` it is spread evenly over all ``L`` lags.

Kernels of one state (``N = 1``, ``W = 1``, ``Im λ`` given) from :func:`ssm.dss_kernel`; nothing
is trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import plotting
from ..kernels import dss_kernel
from ._common import check_profile

COLORS = [plotting.PALETTE[c] for c in ("blue", "green", "orange", "vermillion", "purple")]


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "length": 256 if profile == "ci" else 4096,
        "dt": 0.01,
        "imag": 0.0,  # Im λ of every kernel drawn: 0, so the kernels do not oscillate
        # DSS-exp: Re(λ)Δ, from a gate near 1 (long memory) to a small one (forgets at once)
        "exp_real_dt": [-0.003, -0.03, -0.3, -3.0],
        # DSS-softmax: Re λ of either sign, and near 0
        "softmax_real": [-20.0, -2.0, 1e-4, 2.0, 20.0],
        "edge": 0.1,  # the fraction of lags counted as "recent" (first) and "distant" (last)
    }


def kernel(real: float, imag: float, dt: float, L: int, variant: str) -> np.ndarray:
    """The kernel ``(L,)`` of one state ``λ = real + i imag`` with ``W = 1``."""
    Lambda = torch.tensor([[complex(real, imag)]], dtype=torch.complex128)  # (1 1)
    W = torch.ones_like(Lambda)  # (1 1)
    return dss_kernel(Lambda, W, dt, L, variant)[0].numpy()  # (L)


def mass(K: np.ndarray, edge: float) -> dict[str, float]:
    """Where ``|K|`` sits: its fractions on the first (``recent``) and last (``distant``)
    ``edge`` of the lags, and its mean lag over ``L`` (``0.5`` for a uniform kernel)."""
    w = np.abs(K) / np.abs(K).sum()  # (L)
    n = max(1, round(edge * len(K)))
    return {
        "recent": float(w[:n].sum()),
        "distant": float(w[-n:].sum()),
        "mean_lag": float((w * np.arange(len(K))).sum() / len(K)),
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    L, dt, imag = cfg["length"], cfg["dt"], cfg["imag"]
    exp = []
    for rdt in cfg["exp_real_dt"]:
        K = kernel(rdt / dt, imag, dt, L, "exp")
        exp.append({"real_dt": rdt, "gate": float(np.exp(rdt)), "kernel": K,
                    **mass(K, cfg["edge"])})  # fmt: skip
    softmax = []
    for real in cfg["softmax_real"]:
        K = kernel(real, imag, dt, L, "softmax")
        softmax.append({"real": real, "kernel": K, **mass(K, cfg["edge"])})
    return {"length": L, "dt": dt, "edge": cfg["edge"], "exp": exp, "softmax": softmax}


def memory(gate: float) -> float:
    """The number of steps after which a state with forget gate ``gate`` keeps ``1/e`` of an
    input: ``-1/log(gate)``."""
    return float(-1 / np.log(gate))


def summary(results: dict[str, Any]) -> str:
    """Per kernel: its gate (DSS-exp) or Re λ (DSS-softmax), and where its mass lies."""
    pct = f"{100 * results['edge']:.0f} %"
    lines = [
        f"DSS-exp, L = {results['length']}: forget gate e^(Re λ Δ) and memory",
        f"{'Re(λ)Δ':>8} {'gate':>7} {'1/e after':>10} {'first ' + pct:>11} {'last ' + pct:>10}",
    ]
    for r in results["exp"]:
        lines.append(
            f"{r['real_dt']:>8g} {r['gate']:>7.3f} {memory(r['gate']):>6.1f} st. "
            f"{100 * r['recent']:>10.1f}% {100 * r['distant']:>9.1f}%"
        )
    lines += [
        "",
        f"DSS-softmax, L = {results['length']}, Δ = {results['dt']:g}: where |K| lies",
        f"{'Re λ':>8} {'first ' + pct:>11} {'last ' + pct:>10} {'mean lag / L':>13}",
    ]
    for r in results["softmax"]:
        lines.append(
            f"{r['real']:>8g} {100 * r['recent']:>10.1f}% {100 * r['distant']:>9.1f}% "
            f"{r['mean_lag']:>13.2f}"
        )
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) DSS-exp kernels, one per forget gate, each scaled to its largest value; (b)
    DSS-softmax kernels, one per Re λ, as the distribution of ``|K|`` over the lags."""
    fig, (a, b) = plotting.subplots(1, 2, height=3.2)
    L = results["length"]
    lags = np.arange(L)
    for r, color in zip(results["exp"], COLORS, strict=False):
        K = np.asarray(r["kernel"])
        a.plot(lags, K / np.abs(K).max(), color=color,
               label=f"Re(λ)Δ = {r['real_dt']:g}, gate {r['gate']:.3f}")  # fmt: skip
    plotting.label(a, "lag k", "K_k / max |K|", "DSS-exp: the forget gate e^(Re λ Δ)")
    a.legend(fontsize="x-small", loc="upper right")
    for r, color in zip(results["softmax"], COLORS, strict=False):
        K = np.abs(np.asarray(r["kernel"]))
        b.plot(lags, K / K.sum(), color=color, label=f"Re λ = {r['real']:g}")
    b.set_yscale("log")
    plotting.label(b, "lag k (large: the earliest inputs)", "|K_k| / Σ|K|",
                   "DSS-softmax: where the softmax looks")  # fmt: skip
    b.set_ylim(1e-6, 1.0)
    b.legend(fontsize="x-small", loc="upper center", ncol=2)
    plotting.panel_letters([a, b])
    return fig
