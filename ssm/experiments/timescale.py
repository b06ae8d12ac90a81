"""Chapter 2: the step ``Δ`` as a timescale ("How to Train Your HiPPO", Section 4).

HTTYH (arXiv:2206.12037v2, Section 4) reads ``Δ`` apart from any discretization: the discrete
kernel of an SSM is ``K̄[l] ≈ Δ·K(lΔ)`` with ``K(t) = C exp(tA) B`` the continuous one, so
``Δ`` only says how many steps one unit of the SSM's time lasts, and the kernel is ``1/Δ``
steps wide. Here: the S4 kernel of HiPPO-LegS (:func:`ssm.s4_kernel` with
:func:`ssm.hippo.nplr`: the normal-plus-low-rank kernel, bilinear), one fixed random ``C``,
for ``Δ`` on a log grid. Its *width* is the smallest lag ``w`` (in steps) such that
``Σ_{l<w} |K̄[l]| >= 0.9 Σ_l |K̄[l]|``; LegS's slowest mode is ``e^{-t}``, so ``w·Δ ≈ ln 10``.
At large ``Δ`` with a large state the scaling breaks: the bilinear map sends LegS's fast modes
(``|Δλ| ≫ 1``) near ``Ā = -1``, which rings (``N = 64`` at ``Δ = 0.1`` is 3.6 times too wide);
the config keeps ``N`` and the ``Δ`` range where it holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import ssm

from .. import plotting
from ._common import check_profile


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "N": 32,  # LegS state size
        "L": 2048 if ci else 16384,  # kernel length (steps): > 6/Δ, where e^{-t} has died out
        "log10_dt": [-2.5, -1.0, 7] if ci else [-3.0, -1.0, 17],  # (first, last, count)
        "mass": 0.9,  # the width holds this share of Σ|K̄|
        "shown": [-2.5, -2.0, -1.5, -1.0],  # log10 Δ of the kernels drawn together
        "default": -2.0,  # log10 Δ of the slider's start and of the static twin
        "seed": 0,  # of C
    }


def dt_grid(cfg: dict[str, Any]) -> np.ndarray:
    """The ``log10 Δ`` grid ``(D,)``."""
    first, last, count = cfg["log10_dt"]
    return np.linspace(first, last, int(count))


def kernel(cfg: dict[str, Any], dt: float) -> np.ndarray:
    """The S4-LegS kernel ``(L,)`` at step ``dt``: ``K̄[l] = C Ā^l B̄`` of the bilinear
    discretization of ``A = V (diag(w) - P Pᴴ) Vᴴ``, by S4's algorithm."""
    w, P, B, V = ssm.hippo.nplr("legs", cfg["N"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    C = torch.randn(cfg["N"], generator=gen, dtype=torch.float64).to(torch.complex128) @ V  # (N)
    return ssm.s4_kernel(w, P, B, C, float(dt), cfg["L"]).real.numpy()  # (L)


def width(K: np.ndarray, mass: float = 0.9) -> int:
    """The smallest ``w`` with ``Σ_{l<w} |K[l]| >= mass · Σ_l |K[l]|`` (steps)."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass!r}")
    a = np.abs(np.asarray(K, dtype=np.float64))
    if a.ndim != 1 or not a.sum() > 0:
        raise ValueError(f"K must be a nonzero 1-D kernel, got shape {a.shape}")
    share = np.cumsum(a) / a.sum()
    return int(np.searchsorted(share, mass * (1 - 1e-12))) + 1


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    logs = dt_grid(cfg)
    extra = [g for g in [*cfg["shown"], cfg["default"]] if np.abs(logs - g).min() > 1e-9]
    stored = np.array(sorted({*logs.tolist(), *extra}))  # (D')
    kernels = np.stack([kernel(cfg, 10.0**g) for g in stored])  # (D' L)
    index = [int(np.abs(stored - g).argmin()) for g in logs]
    widths = [width(kernels[i], cfg["mass"]) for i in index]
    dts = 10.0**logs
    return {
        "config": cfg,
        "log10_dt": logs,
        "dt": dts,
        "width": np.array(widths),
        "width_time": np.array(widths) * dts,
        "slope": plotting.fit_loglog_slope(dts, widths),
        "kernel_log10_dt": stored,
        "kernels": kernels,
    }


def summary(results: dict[str, Any]) -> str:
    """Width in steps and in time (``w·Δ``) per ``Δ``, and the fitted log-log slope."""
    lines = [f"{'Δ':>9} {'width (steps)':>14} {'width·Δ':>8}"]
    for dt, w, wt in zip(results["dt"], results["width"], results["width_time"], strict=True):
        lines.append(f"{dt:>9.2e} {int(w):>14d} {wt:>8.2f}")
    lines.append(f"fitted slope of log width vs log Δ: {results['slope']:.3f} (1/Δ: -1)")
    return "\n".join(lines)


def _kernel_at(results: dict[str, Any], log10_dt: float) -> tuple[float, np.ndarray]:
    """The stored kernel nearest to ``log10_dt``: ``(its log10 Δ, K̄)``."""
    keys = np.asarray(results["kernel_log10_dt"])
    i = int(np.abs(keys - log10_dt).argmin())
    return float(keys[i]), np.asarray(results["kernels"][i])


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) Kernels for a few ``Δ``, each scaled to its peak, on a log lag axis, their widths
    dotted; (b) width against ``Δ`` on log-log axes, with the ``1/Δ`` guide."""
    cfg = results["config"]
    fig, (ax, bx) = plotting.subplots(1, 2, height=3.2)
    colors = list(plotting.PALETTE.values())
    lags = np.arange(1, cfg["L"] + 1)
    for i, g in enumerate(cfg["shown"]):
        g, K = _kernel_at(results, g)
        ax.plot(lags, K / np.abs(K).max(), color=colors[i], lw=1.0, label=f"Δ = $10^{{{g:g}}}$")
        ax.axvline(width(K, cfg["mass"]), color=colors[i], lw=1, ls=":")
    ax.set_xscale("log")
    plotting.label(ax, "lag $l$ (steps)", r"$\bar K[l]\,/\,\max|\bar K|$", "S4-LegS kernels")
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.set_ylim(-1.1, 1.6)
    dts, widths = np.asarray(results["dt"]), np.asarray(results["width"])
    bx.loglog(dts, widths, "o", color=plotting.COLORS["s4"], label="width (90 % of Σ|K̄|)")
    plotting.slope_guide(bx, dts, -1.0, (dts[0], widths[0]), label="slope −1 (∝ 1/Δ)")
    plotting.label(
        bx, "step Δ", "width (steps)", f"Width ∝ 1/Δ: fitted slope {results['slope']:.2f}"
    )
    bx.legend(loc="upper right", fontsize=8.5)
    plotting.panel_letters([ax, bx])
    return fig


@plotting.styled
def kernel_figure(results: dict[str, Any], log10_dt: float):
    """The kernel at the stored ``Δ`` nearest to ``10^log10_dt``, its width marked."""
    cfg = results["config"]
    g, K = _kernel_at(results, log10_dt)
    w = width(K, cfg["mass"])
    fig, ax = plotting.subplots(1, 1, width=6.0, height=2.8)
    ax.plot(np.arange(cfg["L"]), K, color=plotting.COLORS["s4"], lw=1.3)
    ax.axvline(w, color=plotting.PALETTE["vermillion"], lw=1, ls="--", label=f"width {w} steps")
    ax.set_xlim(0, min(cfg["L"], 4 * w))
    plotting.label(ax, "lag $l$ (steps)", r"$\bar K[l]$", f"S4-LegS kernel, Δ = $10^{{{g:g}}}$")
    ax.legend(loc="upper right")
    return fig


def static_twin(results: dict[str, Any]):
    """The widget's figure at the slider's default value (for the website)."""
    return kernel_figure(results, results["config"]["default"])


def widget(results: dict[str, Any]) -> Any:
    """A slider over ``log10 Δ`` (the stored grid) that redraws the kernel (ipywidgets)."""
    import ipywidgets

    class TimescaleExplorer(ipywidgets.VBox):
        def __repr__(self) -> str:  # short and stable: the notebooks' tests compare it
            return f"TimescaleExplorer(log10 Δ = {slider.value:.2f})"

    cfg = results["config"]
    keys = np.asarray(results["kernel_log10_dt"])
    steps = np.diff(dt_grid(cfg))
    slider = ipywidgets.FloatSlider(
        value=cfg["default"],
        min=float(keys.min()),
        max=float(keys.max()),
        step=float(steps[0]) if len(steps) else 0.25,
        description="log10 Δ",
        continuous_update=False,
        readout_format=".2f",
    )
    image = ipywidgets.Image(format="png")

    def draw(change: Any = None) -> None:
        image.value = plotting.png_bytes(kernel_figure(results, slider.value))

    slider.observe(draw, names="value")
    draw()
    return TimescaleExplorer([slider, image])
