"""Chapter 4: the basis functions of S4D's initializations, against S4-LegS's and S4-FouT's.

A diagonal SSM ``x' = Ax + Bu`` with ``A = diag(A_n)`` has the basis functions
``K_n(t) = e^{t A_n} B_n`` (S4D paper, arXiv:2206.11893v2, Section 4; "How to Train Your HiPPO",
arXiv:2206.12037v2, Definition 1), one damped complex exponential per state: ``Re A_n`` sets its
decay, ``Im A_n`` its frequency. The S4D initializations (:func:`ssm.layers._diagonal.
diagonal_init`):

- S4D-LegS: the eigenvalues of the normal part of HiPPO-LegS (``-1/2 + i ω_n``) and LegS's ``B``
  in their eigenbasis;
- S4D-Inv: ``A_n = -1/2 + i (N/π)(N/(2n+1) - 1)``, a closed form of S4D-LegS's imaginary parts;
- S4D-Lin: ``A_n = -1/2 + i π n``, the frequencies of S4-FouT (whose normal part has the
  eigenvalues ``± i π n``) damped like LegS's;

``B_n = 1`` for Inv and Lin. The S4 bases (:func:`ssm.hippo.basis`) are drawn beside them, and
the spectra compared: how far S4D-Inv's imaginary parts are from S4D-LegS's, and S4D-Lin's from
FouT's normal part, at several ``N``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import hippo, plotting
from ..layers._diagonal import diagonal_init
from ._common import check_profile

INITS = ("legs", "inv", "lin")
NAMES = {"legs": "S4D-LegS", "inv": "S4D-Inv", "lin": "S4D-Lin"}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "N": 64,  # state size (the diagonal SSMs store N/2 eigenvalues)
        "shown": 4,  # basis functions drawn per panel
        "t_max": 4.0,
        "points": 801 if ci else 4001,
        "spectrum_sizes": [16, 64, 256],  # N at which the spectra are compared
    }


def diagonal_basis(init: str, N: int, t: np.ndarray) -> np.ndarray:
    """``K_n(t) = e^{t A_n} B_n`` ``(N/2, T)`` complex of the S4D initialization ``init``."""
    A, B = diagonal_init(init, N, 1)  # (1 N2) each
    times = torch.as_tensor(np.asarray(t, dtype=np.float64))  # (T)
    return (B[0, :, None] * torch.exp(A[0, :, None] * times)).numpy()  # (N2 T)


def slowest(init: str, N: int, count: int) -> list[int]:
    """Indices of the ``count`` eigenvalues of smallest ``|Im A_n|`` (the slowest
    oscillations, drawn in the figure), slowest first."""
    A, _ = diagonal_init(init, N, 1)
    return [int(i) for i in torch.argsort(A[0].imag.abs())[:count]]


def fout_frequencies(N: int) -> np.ndarray:
    """The nonnegative imaginary parts of the eigenvalues of S4-FouT's normal part, sorted
    ``(N/2,)``."""
    w, _, _, _ = hippo.nplr("fout", N)
    imag = np.sort(w.imag.numpy())
    return imag[N // 2 :]


def spectrum_gaps(N: int) -> dict[str, float]:
    """How close the closed forms are: the largest relative gap between S4D-Inv's and
    S4D-LegS's imaginary parts (both sorted), and the largest absolute gap between S4D-Lin's and
    FouT's normal part's, and of their real parts."""
    legs, _ = diagonal_init("legs", N, 1)
    inv, _ = diagonal_init("inv", N, 1)
    lin, _ = diagonal_init("lin", N, 1)
    w_legs, w_inv = np.sort(legs[0].imag.numpy()), np.sort(inv[0].imag.numpy())
    return {
        "inv_vs_legs_rel": float(np.max(np.abs(w_inv - w_legs) / np.abs(w_legs))),
        "inv_vs_legs_median_rel": float(np.median(np.abs(w_inv - w_legs) / np.abs(w_legs))),
        "lin_vs_fout_abs": float(
            np.max(np.abs(np.sort(lin[0].imag.numpy()) - fout_frequencies(N)))
        ),
        "legs_real_parts": float(np.max(np.abs(legs[0].real.numpy() + 0.5))),
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    t = np.linspace(0.0, cfg["t_max"], cfg["points"])
    N, count = cfg["N"], cfg["shown"]
    diagonal, indices, spectra = {}, {}, {}
    for init in INITS:
        idx = slowest(init, N, count)
        indices[init] = idx
        diagonal[init] = diagonal_basis(init, N, t)[idx].real  # (count T)
        A, _ = diagonal_init(init, N, 1)
        spectra[init] = np.sort(A[0].imag.numpy())[::-1]  # (N2) largest first
    s4 = {
        "legs": hippo.basis("legs", N, t).numpy()[:count],
        "fout": hippo.basis("fout", N, t).numpy()[[0, *range(2, count + 1)]],  # K_1 = 0
    }
    return {
        "config": cfg,
        "t": t,
        "indices": indices,
        "diagonal": diagonal,
        "s4": s4,
        "spectra": spectra,
        "fout_spectrum": fout_frequencies(N)[::-1],
        "gaps": {str(n): spectrum_gaps(n) for n in cfg["spectrum_sizes"]},
    }


def table(results: dict[str, Any]) -> str:
    """The spectra compared at each ``N``: S4D-Inv against S4D-LegS (relative gap of the
    imaginary parts), S4D-Lin against FouT's normal part (absolute gap), S4D-LegS's real parts
    against ``-1/2``."""
    lines = [
        f"{'N':>5} {'Inv vs LegS: max rel.':>22} {'median rel.':>12} {'Lin vs FouT: max abs.':>22}"
        f" {'|Re A_LegS + 1/2|':>18}"
    ]
    for n, g in results["gaps"].items():
        lines.append(
            f"{n:>5} {g['inv_vs_legs_rel']:>22.3f} {g['inv_vs_legs_median_rel']:>12.3f} "
            f"{g['lin_vs_fout_abs']:>22.1e} {g['legs_real_parts']:>18.1e}"
        )
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """Top: S4-LegS's basis functions, and the real parts of S4D-LegS's and S4D-Inv's slowest
    ones; bottom: S4-FouT's, S4D-Lin's, and the imaginary parts of the three spectra."""
    t = np.asarray(results["t"])
    N = results["config"]["N"]
    fig, axes = plotting.subplots(2, 3, height=5.6, sharex=False)
    colors = list(plotting.PALETTE.values())
    panels = [
        (axes[0, 0], np.asarray(results["s4"]["legs"]), "S4-LegS: $K_n$, n = 0-3"),
        (axes[0, 1], np.asarray(results["diagonal"]["legs"]), "S4D-LegS: Re $K_n$, slowest"),
        (axes[0, 2], np.asarray(results["diagonal"]["inv"]), "S4D-Inv: Re $K_n$, slowest"),
        (axes[1, 0], np.asarray(results["s4"]["fout"]), "S4-FouT: $K_n$, first"),
        (axes[1, 1], np.asarray(results["diagonal"]["lin"]), "S4D-Lin: Re $K_n$, n = 0-3"),
    ]
    for ax, curves, title in panels:
        for i, curve in enumerate(curves):
            ax.plot(t, curve, color=colors[i], lw=1.4)
        plotting.label(ax, "$t$", None, title)
    axes[1, 0].axvspan(0, 2, color="0.9", zorder=0)
    ax = axes[1, 2]
    n = np.arange(N // 2)
    spectra = [
        (NAMES[i], results["spectra"][i], c, "-")
        for i, c in zip(INITS, ("black", "blue", "green"), strict=True)
    ]
    spectra.append(("S4-FouT, normal part", results["fout_spectrum"], "orange", ":"))
    for name, values, color, ls in spectra:
        values = np.abs(np.asarray(values))
        keep = values > 0  # log axes: S4D-Lin's and FouT's zero frequency left out
        ax.semilogy(n[keep], values[keep], color=plotting.PALETTE[color], ls=ls,
                    lw=2.0 if ls == ":" else 1.4, label=name)  # fmt: skip
    plotting.label(ax, "n (sorted)", "$|\\mathrm{Im}\\, A_n|$", f"spectra, N = {N}")
    ax.legend(fontsize="x-small")
    plotting.panel_letters(axes)
    return fig
