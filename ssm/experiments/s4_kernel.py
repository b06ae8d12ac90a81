"""Chapter 1: S4's kernel algorithm against the definition, and what it saves.

For HiPPO-LegS (``A, B`` from :func:`ssm.hippo.transition`, a random readout ``C``), the kernel
``K̄_ℓ = C Ā^ℓ B̄`` (bilinear ``Ā, B̄``) is computed twice:

- *naive*: :func:`ssm.ssm_kernel`, ``L`` dense matrix-vector products, ``O(N² L)``, sequential;
- *S4*: :func:`ssm.s4_kernel` from the normal-plus-low-rank form :func:`ssm.hippo.nplr`
  (``C ← C V`` in the eigenbasis): the truncated generating function at the ``L``-th roots of
  unity by a Cauchy kernel and the Woodbury identity (``O(N L)``, all frequencies in parallel),
  then one inverse FFT (``O(L log L)``).

The timings call ``s4_kernel`` with ``c_tilde=True``, as in S4 training, where the parameter is
``C̃ = C (I - Ā^L)`` itself, so the ``Ā^L`` needed to form it is not paid at every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import ssm

from .. import plotting
from ._common import check_profile, clock, describe, device, seed_everything, threads, time_cases


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "seed": 0,
        "N": 64,
        "L": 1024 if ci else 4096,
        "dt": 0.01,
        "lengths": [2**k for k in range(8, 12 if ci else 16)],  # timed at N = N
        "sizes": [16, 32, 64, 128] if ci else [16, 32, 64, 128, 256, 512],  # timed at L = L
        "repeats": 10 if ci else 5,  # timing rounds (the best of them is kept)
        "device": "cpu" if ci else "auto",
        **({"threads": 1} if ci else {}),  # ci timings on one thread (see _common.threads)
    }


def parameters(N: int, gen: torch.Generator, dev: torch.device) -> dict[str, torch.Tensor]:
    """Dense ``(A, B, C)`` and the NPLR ``(w, P, B_e, C_e)`` of a LegS SSM, float64/complex128."""
    A, B = ssm.hippo.transition("legs", N)
    C = torch.randn(N, generator=gen, dtype=torch.float64)
    w, P, Be, V = ssm.hippo.nplr("legs", N)
    Ce = C.to(V.dtype) @ V  # C in the eigenbasis of the normal part
    p = {"A": A, "B": B, "C": C, "w": w, "P": P, "Be": Be, "Ce": Ce}
    return {k: v.to(dev) for k, v in p.items()}


def naive_kernel(p: dict[str, torch.Tensor], dt: float, L: int) -> torch.Tensor:
    """The definition: discretize (bilinear), then ``C Ā^ℓ B̄`` by repeated products."""
    Ab, Bb = ssm.discretize(p["A"], p["B"], dt, "bilinear")
    return ssm.ssm_kernel(Ab, Bb, p["C"], L)


def c_tilde(p: dict[str, torch.Tensor], dt: float, L: int) -> torch.Tensor:
    """``C̃ = C (I - Ā^L)`` in the eigenbasis, the parameter S4 learns."""
    A = torch.diag_embed(p["w"]) - p["P"].T @ p["P"].conj()
    Ab, _ = ssm.discretize(A, p["Be"], dt, "bilinear")
    return p["Ce"] - p["Ce"] @ torch.linalg.matrix_power(Ab, L)


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    gen = seed_everything(cfg["seed"])
    dev = device(cfg)
    N, L, dt = cfg["N"], cfg["L"], cfg["dt"]
    p = parameters(N, gen, dev)
    K_naive = naive_kernel(p, dt, L)  # (L) real
    K_s4 = ssm.s4_kernel(p["w"], p["P"], p["Be"], p["Ce"], dt, L)  # (L) complex
    diff = (K_s4.real - K_naive).abs()

    cases = {}
    for n_state, length in [(N, n) for n in cfg["lengths"]] + [(n, L) for n in cfg["sizes"]]:
        q = parameters(n_state, gen, dev) if n_state != N else p
        ct = c_tilde(q, dt, length)
        cases["naive", n_state, length] = (naive_kernel, (q, dt, length), {})
        s4_args = (q["w"], q["P"], q["Be"], ct, dt, length)
        cases["s4", n_state, length] = (ssm.s4_kernel, s4_args, {"c_tilde": True})
    with threads(cfg):
        best = time_cases(cases, cfg, dev, "timing rounds")
        where, measured = describe(dev), clock(dev)

    def series(points: list[tuple[int, int]]) -> dict[str, list[float]]:
        return {key: [best[key, n, length] for n, length in points] for key in ("naive", "s4")}

    return {
        "N": N,
        "L": L,
        "dt": dt,
        "kernel_naive": K_naive.cpu().numpy(),
        "kernel_s4": K_s4.real.cpu().numpy(),
        "abs_diff": diff.cpu().numpy(),
        "max_abs_diff": float(diff.max()),
        "max_imag": float(K_s4.imag.abs().max()),
        "kernel_scale": float(K_naive.abs().max()),
        "lengths": list(cfg["lengths"]),
        "timings_L": series([(N, n) for n in cfg["lengths"]]),
        "sizes": list(cfg["sizes"]),
        "timings_N": series([(n, L) for n in cfg["sizes"]]),
        "device": where,
        "clock": measured,
    }


@plotting.styled
def plot_kernels(results: dict[str, Any]):
    """Both kernels on top of each other, and their difference (log scale)."""
    Kn, Ks = np.asarray(results["kernel_naive"]), np.asarray(results["kernel_s4"])
    lags = np.arange(len(Kn))
    fig, (ax, ax_d) = plotting.subplots(1, 2, height=3.2)
    ax.plot(
        lags,
        Kn,
        color=plotting.COLORS["naive"],
        lw=3,
        alpha=0.6,
        label="naive: $C\\bar A^\\ell \\bar B$",
    )
    ax.plot(lags, Ks, color=plotting.COLORS["s4"], lw=1.2, ls="--", label="S4 algorithm")
    plotting.label(
        ax,
        "lag $\\ell$ (log scale)",
        "$\\bar K_\\ell$",
        f"HiPPO-LegS kernel, $N = {results['N']}$, $\\Delta = {results['dt']:g}$",
        legend="upper right",
    )
    ax.set_xscale("symlog", linthresh=10)
    ax_d.semilogy(
        lags,
        np.maximum(np.asarray(results["abs_diff"]), 1e-20),
        color=plotting.PALETTE["purple"],
        lw=0.8,
    )
    ax_d.axhline(
        np.finfo(np.float64).eps * results["kernel_scale"],
        color="0.4",
        ls=":",
        label="machine epsilon × max $|\\bar K|$",
    )
    plotting.label(
        ax_d,
        "lag $\\ell$",
        "$|\\bar K^{S4}_\\ell - \\bar K^{naive}_\\ell|$",
        "Difference (float64)",
        legend="upper right",
    )
    ax_d.set_ylim(1e-20, 1e-12)
    plotting.panel_letters([ax, ax_d])
    return fig


@plotting.styled
def plot_timings(results: dict[str, Any]):
    """Wall time of both kernel computations against ``L`` and against ``N``."""
    fig, (ax_l, ax_n) = plotting.subplots(1, 2, height=3.5)
    for ax, xs, t, xlabel, title in (
        (
            ax_l,
            results["lengths"],
            results["timings_L"],
            "kernel length $L$",
            f"Growing $L$ at $N = {results['N']}$",
        ),
        (
            ax_n,
            results["sizes"],
            results["timings_N"],
            "state size $N$",
            f"Growing $N$ at $L = {results['L']}$",
        ),
    ):
        xs = np.asarray(xs, dtype=float)
        ax.loglog(
            xs,
            t["naive"],
            marker="o",
            ms=4,
            color=plotting.COLORS["naive"],
            label="naive power series",
        )
        ax.loglog(
            xs,
            t["s4"],
            marker="o",
            ms=4,
            color=plotting.COLORS["s4"],
            label="S4: Cauchy + Woodbury + iFFT",
        )
        ax.set_xscale("log", base=2)
        plotting.label(ax, xlabel, f"{results.get('clock', 'wall time')} (s)", title)
    plotting.panel_letters([ax_l, ax_n])
    fig.suptitle(f"Cost of one kernel on {results['device']}", fontsize=11)
    plotting.figure_legend(fig, ax_l)
    return fig


def plot(results: dict[str, Any]):
    return plot_kernels(results)
