"""Chapter 1: how the step ``Δ`` and the state size ``N`` shape a HiPPO-LegS kernel.

The kernel ``K̄_ℓ = C Ā^ℓ B̄`` of a LegS SSM (bilinear, computed by :func:`ssm.s4_kernel`) with a
fixed random readout ``C`` approximates ``Δ · K(ℓΔ)``, where ``K(t) = C e^{tA} B`` is the
continuous kernel; so ``K̄/Δ`` plotted against the lag ``ℓ`` is ``K`` read at speed ``Δ``: a
larger ``Δ`` squeezes the same shape into fewer lags (shorter memory), a smaller one stretches it.
``N`` sets how many basis functions (exponentially warped Legendre polynomials) ``C`` mixes, so how
fine the kernel's detail can be.

:func:`widget` gives sliders for both (in a live notebook); :func:`plot` is its static twin.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

import ssm

from .. import plotting
from ._common import check_profile


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "seed": 0,
        "L": 512,
        "dt": 0.01,  # the widget's initial Δ, and the Δ of the N panel
        "N": 16,  # the widget's initial N, and the N of the Δ panel
        "dts": [0.0025, 0.01, 0.04],  # compared at N = N
        "sizes": [4, 16, 64],  # compared at Δ = dt
        "dt_range": [1e-3, 0.3],  # slider limits
        "N_range": [2, 128],
    }


@functools.lru_cache(maxsize=32)
def _nplr(N: int) -> tuple[torch.Tensor, ...]:
    return ssm.hippo.nplr("legs", N)


def readout(N: int, seed: int) -> torch.Tensor:
    """The random readout ``C`` ``(N,)`` with ``N(0, 1/N)`` entries, fixed by ``seed`` and ``N``."""
    gen = torch.Generator().manual_seed(seed * 1000 + N)
    return torch.randn(N, generator=gen, dtype=torch.float64) / N**0.5


def kernel(dt: float, N: int, L: int, seed: int = 0) -> np.ndarray:
    """``K̄`` ``(L,)`` of the LegS SSM of size ``N`` at step ``dt``, by S4's algorithm."""
    w, P, Be, V = _nplr(N)
    Ce = readout(N, seed).to(V.dtype) @ V
    return ssm.s4_kernel(w, P, Be, Ce, float(dt), L).real.numpy()


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    L, seed = cfg["L"], cfg["seed"]
    return {
        "L": L,
        "N": cfg["N"],
        "dt": cfg["dt"],
        "by_dt": {dt: kernel(dt, cfg["N"], L, seed) for dt in cfg["dts"]},
        "by_N": {N: kernel(cfg["dt"], N, L, seed) for N in cfg["sizes"]},
    }


@plotting.styled
def plot(results: dict[str, Any]):
    """Static twin of the widget: ``K̄/Δ`` for several ``Δ`` (fixed ``N``), several ``N``."""
    fig, (ax_dt, ax_n) = plotting.subplots(1, 2, height=3.7)
    lags = np.arange(results["L"])
    colors = [plotting.PALETTE[c] for c in ("blue", "orange", "green", "purple", "vermillion")]
    for color, (dt, K) in zip(colors, results["by_dt"].items(), strict=False):
        ax_dt.plot(lags, np.asarray(K) / float(dt), color=color, label=f"$\\Delta = {dt:g}$")
    plotting.label(
        ax_dt,
        "lag $\\ell$ (log scale)",
        "$\\bar K_\\ell / \\Delta$",
        f"Step $\\Delta$ sets the time scale ($N = {results['N']}$)",
    )
    for color, (N, K) in zip(colors, results["by_N"].items(), strict=False):
        ax_n.plot(lags, np.asarray(K) / results["dt"], color=color, label=f"$N = {N}$")
    plotting.label(
        ax_n,
        "lag $\\ell$ (log scale)",
        "$\\bar K_\\ell / \\Delta$",
        f"State size $N$ sets the detail ($\\Delta = {results['dt']:g}$)",
    )
    for ax in (ax_dt, ax_n):
        _log_lags(ax, results["L"])
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    plotting.panel_letters([ax_dt, ax_n])
    return fig


@plotting.styled
def plot_one(dt: float, N: int, L: int, seed: int = 0):
    """The kernel for one ``(Δ, N)``: what the widget draws."""
    K = kernel(dt, N, L, seed)
    fig, ax = plotting.subplots(1, 1, width=6.5, height=2.8)
    ax.plot(np.arange(L), K / dt, color=plotting.PALETTE["blue"])
    ax.axhline(0, color="0.5", lw=0.6)
    plotting.label(
        ax,
        "lag $\\ell$ (log scale)",
        "$\\bar K_\\ell / \\Delta$",
        f"HiPPO-LegS kernel, $\\Delta = {dt:.3g}$, $N = {N}$",
    )
    _log_lags(ax, L)
    return fig


def _log_lags(ax: Any, L: int) -> None:
    """Lags on a log axis (linear between 0 and 1, so lag 0 shows): ``K̄/Δ ≈ K(ℓΔ)``, so changing
    ``Δ`` shifts the curve sideways without changing its shape."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.3)
    ax.set_xlim(0, L)


def _display_data(fig) -> dict[str, Any]:
    """A notebook ``display_data`` output holding the figure as PNG (sized as in a notebook)."""
    w, h = fig.get_size_inches() * fig.dpi
    png, size = plotting.png_display(fig)
    return {
        "output_type": "display_data",
        "data": {"image/png": png, "text/plain": f"<Figure size {w:.0f}x{h:.0f}>"},
        "metadata": {"image/png": size},
    }


def widget(cfg: dict[str, Any]):
    """Sliders for ``Δ`` (log scale) and ``N`` above the kernel they produce.

    Like ``ipywidgets.interact`` with a ``FloatLogSlider`` and an ``IntSlider``, but the figure is
    put into the ``Output`` widget from the kernel side (its ``outputs`` state), not captured from
    the frontend. So a saved notebook keeps the picture in its widget state (the static book shows
    the initial view), and a notebook test sees no output besides the widget itself.
    """
    import ipywidgets as widgets

    class KernelExplorer(widgets.VBox):
        def __repr__(self) -> str:
            return f"KernelExplorer(dt={dt.value:.3g}, N={n.value})"

    lo, hi = cfg["dt_range"]
    dt = widgets.FloatLogSlider(
        value=cfg["dt"],
        base=10,
        min=np.log10(lo),
        max=np.log10(hi),
        step=0.05,
        description="Δ",
        continuous_update=False,
        readout_format=".3g",
    )
    n = widgets.IntSlider(
        value=cfg["N"],
        min=cfg["N_range"][0],
        max=cfg["N_range"][1],
        step=1,
        description="N",
        continuous_update=False,
    )
    out = widgets.Output()

    def update(_change: Any = None) -> None:
        out.outputs = (_display_data(plot_one(dt.value, n.value, cfg["L"], cfg["seed"])),)

    dt.observe(update, names="value")
    n.observe(update, names="value")
    update()
    return KernelExplorer([widgets.HBox([dt, n]), out])
