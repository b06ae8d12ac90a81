"""Chapter 3: bilinear against ZOH, in the recurrent and the convolutional view, by numbers.

DSS discretizes with the zero-order hold where S4 used the bilinear transform. For a diagonal
state matrix each state is a scalar ``λ``, and the two discretizations read

- bilinear: ``Ā = (1 - Δλ/2)⁻¹ (1 + Δλ/2)``, ``B̄ = (1 - Δλ/2)⁻¹ Δ B``, kernel
  ``K̄_k = C Ā^k B̄``;
- ZOH: ``Ā = e^{λΔ}``, ``B̄ = (Ā - 1) λ⁻¹ B``, kernel ``K̄_k = C e^{λkΔ} (e^{λΔ} - 1) λ⁻¹ B``,

with ``C̄ = C`` in both. For a few ``(λ, Δ)`` this experiment computes ``Ā`` and ``B̄`` with
:func:`ssm.discretize` and compares them with the formulas above, compares the kernel read off
the recurrence (:func:`ssm.recurrence` on an impulse) with the closed-form convolution kernel,
checks that the ZOH kernel is DSS-exp's (:func:`ssm.dss_kernel` with ``B = 1``), and measures how
far the two discretizations' kernels are apart. Everything in float64; nothing is trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import plotting
from ..discretize import discretize
from ..kernels import dss_kernel
from ..scan import recurrence
from ._common import bound, check_profile

METHODS = ("bilinear", "zoh")
#: Errors below this are printed as ``< TOL``: float64 round-off, whatever the CPU.
TOL = 1e-12


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "eigenvalues": [[-0.5, 1.0], [-0.5, 10.0], [-2.0, 3.0], [-0.05, 30.0]],  # (re, im)
        "steps": [0.1, 0.01] if profile == "ci" else [0.3, 0.1, 0.03, 0.01, 0.003],
        "length": 200 if profile == "ci" else 2000,
        "C": [0.7, -0.4],  # one complex output weight (re, im), the same for every case
        "plot_eigenvalue": [-0.5, 10.0],  # the eigenvalue whose kernels the figure draws
    }


def closed_form(lam: complex, dt: float, method: str) -> tuple[complex, complex]:
    """``(Ā, B̄)`` of the scalar state ``λ`` with ``B = 1``, written as in the table above."""
    if method == "bilinear":
        return (1 + dt * lam / 2) / (1 - dt * lam / 2), dt / (1 - dt * lam / 2)
    Ab = np.exp(lam * dt)
    return Ab, (Ab - 1) / lam


def convolution_kernel(lam: complex, C: complex, dt: float, L: int, method: str) -> np.ndarray:
    """The closed-form kernel ``(L,)`` complex: ``C Ā^k B̄`` (bilinear) or
    ``C e^{λkΔ}(e^{λΔ} - 1)/λ`` (ZOH)."""
    k = np.arange(L)  # (L)
    Ab, Bb = closed_form(lam, dt, method)
    if method == "bilinear":
        return C * Ab**k * Bb  # (L)
    return C * np.exp(lam * k * dt) * (np.exp(lam * dt) - 1) / lam  # (L)


def rel_err(a: np.ndarray | complex, b: np.ndarray | complex) -> float:
    """``max |a - b| / max |b|``."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def case(lam: complex, C: complex, dt: float, L: int) -> dict[str, Any]:
    """One ``(λ, Δ)``: per method the package's ``Ā``, ``B̄`` against the closed forms, the
    recurrence's impulse response against the convolution kernel; the kernels of both methods."""
    A = torch.tensor([lam], dtype=torch.complex128)  # (1)
    B = torch.ones(1, dtype=torch.complex128)  # (1)
    Ct = torch.tensor([C], dtype=torch.complex128)  # (1)
    impulse = torch.zeros(L, dtype=torch.complex128)  # (L)
    impulse[0] = 1
    out: dict[str, Any] = {"lambda": [lam.real, lam.imag], "dt": dt}
    kernels = {}
    for method in METHODS:
        Ab, Bb = discretize(A, B, dt, method, diagonal=True)  # (1) (1)
        Ab_ref, Bb_ref = closed_form(lam, dt, method)
        from_recurrence = recurrence(Ab, Bb, Ct, impulse).numpy()  # (L): K̄ read off y
        kernels[method] = convolution_kernel(lam, C, dt, L, method)  # (L)
        out[method] = {
            "Ab": [complex(Ab[0]).real, complex(Ab[0]).imag],
            "abs_Ab": abs(complex(Ab[0])),
            "err_Ab": rel_err(complex(Ab[0]), Ab_ref),
            "err_Bb": rel_err(complex(Bb[0]), Bb_ref),
            "err_kernel": rel_err(from_recurrence, kernels[method]),
        }
    dss = dss_kernel(A[None], Ct[None] / 2, dt, L, "exp", eps=0)[0].numpy()  # (L) 2 Re(...)
    out["zoh"]["err_dss_exp"] = rel_err(dss, kernels["zoh"].real)
    out["gap"] = rel_err(kernels["bilinear"], kernels["zoh"])
    out["kernels"] = {m: kernels[m].real for m in METHODS}
    return out


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    C = complex(*cfg["C"])
    cases = [
        case(complex(re, im), C, dt, cfg["length"])
        for re, im in cfg["eigenvalues"]
        for dt in cfg["steps"]
    ]
    return {"length": cfg["length"], "plot_eigenvalue": cfg["plot_eigenvalue"], "cases": cases}


def summary(results: dict[str, Any]) -> str:
    """The table: per ``(λ, Δ)`` and method ``|Ā|`` and the relative errors of ``Ā``, ``B̄`` and
    the recurrence's kernel against the closed forms; for ZOH also against DSS-exp; and the gap
    between the two methods' kernels."""
    lines = [
        f"{'λ':>11} {'Δ':>6} {'method':>8} {'|Ā|':>8} {'err Ā':>8} {'err B̄':>8} "
        f"{'err K̄':>8} {'DSS-exp':>8} {'gap':>8}"
    ]
    for c in results["cases"]:
        lam = complex(*c["lambda"])
        for method in METHODS:
            r = c[method]
            dss = bound(r["err_dss_exp"]) if method == "zoh" else ""
            gap = f"{c['gap']:.1e}" if method == "zoh" else ""
            lines.append(
                f"{lam.real:>5.2f}{lam.imag:+5.1f}i {c['dt']:>6.3f} {method:>8} "
                f"{r['abs_Ab']:>8.5f} {bound(r['err_Ab']):>8} {bound(r['err_Bb']):>8} "
                f"{bound(r['err_kernel']):>8} {dss:>8} {gap:>8}"
            )
    lines.append(
        "(errors relative to the closed forms; gap: max |K̄_bilinear - K̄_ZOH| / max |K̄_ZOH|)"
    )
    return "\n".join(line.rstrip() for line in lines)


def max_error(results: dict[str, Any]) -> float:
    """The largest error of the table, over every case, method and quantity."""
    errs = [
        c[m][key]
        for c in results["cases"]
        for m in METHODS
        for key in ("err_Ab", "err_Bb", "err_kernel", "err_dss_exp")
        if key in c[m]
    ]
    return max(errs)


@plotting.styled
def plot(results: dict[str, Any]):
    """The real part of the bilinear and ZOH kernels of ``results["plot_eigenvalue"]``, one
    panel per step, over the time the shortest kernel covers: they drift apart for a large
    ``Δ`` and coincide for a small one."""
    lam = results["plot_eigenvalue"]
    cases = [c for c in results["cases"] if c["lambda"] == lam]
    span = min(results["length"] * c["dt"] for c in cases)  # the time every panel covers
    fig, axes = plotting.subplots(1, len(cases), height=2.8, squeeze=False, sharey=True)
    for ax, c in zip(axes[0], cases, strict=True):
        for method in METHODS:
            kernel = np.asarray(c["kernels"][method])
            k = np.arange(round(span / c["dt"]))  # the lags within the span
            ax.plot(
                k * c["dt"],
                kernel[k] / c["dt"],
                color=plotting.METHOD_COLORS[method],
                ls="-" if method == "zoh" else "--",
                label=plotting.METHOD_LABELS[method],
            )
        title = f"λ = {lam[0]:g}{lam[1]:+g}i, Δ = {c['dt']:g}, gap {c['gap']:.1e}"
        plotting.label(ax, "time kΔ", "Re K̄_k / Δ", title)
    plotting.panel_letters(axes[0])
    plotting.figure_legend(fig, axes[0][0])
    return fig
