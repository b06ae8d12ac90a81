"""Chapter 1: the recurrent and the convolutional view compute the same outputs, at different cost.

``H`` independent channels, each a HiPPO-LegS SSM (state size ``N``, bilinear step ``Δ``) with its
own random readout ``C``, read a random input ``u`` ``(H, L)``. The recurrence
(:func:`ssm.recurrence`, ``L`` sequential steps) and the causal convolution with the kernel
``K̄ = (C B̄, C Ā B̄, …)`` (:func:`ssm.ssm_kernel` then :func:`ssm.fft_conv`) must agree to
round-off in float64. Then each is timed as ``L`` grows.
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
        "N": 16,  # state size
        "H": 8 if ci else 64,  # channels, one SSM each
        "dt": 0.05,
        "L_check": 1024,  # length of the equality check
        "L_show": 200,  # length shown in the output figure
        "lengths": [2**k for k in range(7, 12 if ci else 17)],  # timed lengths
        "repeats": 10 if ci else 5,  # timing rounds (the best of them is kept)
        "device": "cpu" if ci else "auto",
        **({"threads": 1} if ci else {}),  # ci timings on one thread (see _common.threads)
    }


def build(cfg: dict[str, Any], gen: torch.Generator, dev: torch.device):
    """The discrete system ``(Ā, B̄, C)``: LegS ``A, B`` shared, ``C`` ``(H, N)`` random."""
    A, B = ssm.hippo.transition("legs", cfg["N"])
    Ab, Bb = ssm.discretize(A, B, cfg["dt"], "bilinear")  # (N N) (N)
    C = torch.randn(cfg["H"], cfg["N"], generator=gen, dtype=torch.float64)  # (H N)
    return Ab.to(dev), Bb.to(dev), C.to(dev)


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    gen = seed_everything(cfg["seed"])
    dev = device(cfg)
    Ab, Bb, C = build(cfg, gen, dev)

    L = cfg["L_check"]
    u = torch.randn(cfg["H"], L, generator=gen, dtype=torch.float64).to(dev)  # (H L)
    y_rec = ssm.recurrence(Ab, Bb, C, u)  # (H L)
    K = ssm.ssm_kernel(Ab, Bb, C, L)  # (H L)
    y_conv = ssm.fft_conv(u, K)  # (H L)
    diff = float((y_rec - y_conv).abs().max())
    scale = float(y_rec.abs().max())

    cases = {}
    for n in cfg["lengths"]:
        v = torch.randn(cfg["H"], n, generator=gen, dtype=torch.float64).to(dev)  # (H n)
        Kn = ssm.ssm_kernel(Ab, Bb, C, n)  # (H n)
        cases["recurrence", n] = (ssm.recurrence, (Ab, Bb, C, v), {})
        cases["fft_conv", n] = (ssm.fft_conv, (v, Kn), {})
        cases["ssm_kernel", n] = (ssm.ssm_kernel, (Ab, Bb, C, n), {})
    with threads(cfg):
        best = time_cases(cases, cfg, dev, "timing rounds")
        where, measured = describe(dev), clock(dev)
    timings = {
        key: [best[key, n] for n in cfg["lengths"]]
        for key in ("recurrence", "fft_conv", "ssm_kernel")
    }

    show = cfg["L_show"]
    return {
        "max_abs_diff": diff,
        "output_scale": scale,
        "u": u[0, :show].cpu().numpy(),
        "y_recurrent": y_rec[0, :show].cpu().numpy(),
        "y_convolutional": y_conv[0, :show].cpu().numpy(),
        "kernel": K[0, :show].cpu().numpy(),
        "lengths": list(cfg["lengths"]),
        "timings": timings,
        "device": where,
        "clock": measured,
    }


@plotting.styled
def plot_outputs(results: dict[str, Any]):
    """The kernel of channel 0 and the outputs of both views on the same input."""
    K = np.asarray(results["kernel"])
    y_r, y_c = np.asarray(results["y_recurrent"]), np.asarray(results["y_convolutional"])
    fig, (ax_k, ax_y) = plotting.subplots(
        1, 2, height=3.2, width=plotting.WIDTH, gridspec_kw={"width_ratios": [1, 2]}
    )
    ax_k.plot(np.arange(len(K)), K, color=plotting.PALETTE["green"])
    plotting.label(ax_k, "lag $\\ell$", "$\\bar K_\\ell = C \\bar A^\\ell \\bar B$", "Kernel")
    k = np.arange(len(y_r))
    ax_y.plot(k, y_r, color=plotting.COLORS["recurrent"], lw=2.6, label="recurrent view")
    ax_y.plot(
        k, y_c, color=plotting.COLORS["convolutional"], lw=1.2, ls="--", label="convolutional view"
    )
    plotting.label(
        ax_y, "step $k$", "output $y_k$", "Both views on one random input", legend="upper right"
    )
    plotting.panel_letters([ax_k, ax_y])
    return fig


@plotting.styled
def plot_timings(results: dict[str, Any]):
    """Wall time of each view against ``L`` (log-log), with ``L`` and ``L log L`` guides."""
    Ls = np.asarray(results["lengths"], dtype=float)
    t = results["timings"]
    fig, ax = plotting.subplots(1, 1, width=6.5, height=4.6)
    styles = {
        "recurrence": ("recurrence (sequential, $O(N^2 L)$)", plotting.COLORS["recurrent"]),
        "ssm_kernel": ("power-series kernel $\\bar K$ ($O(N^2 L)$)", plotting.COLORS["naive"]),
        "fft_conv": (
            "FFT convolution, $\\bar K$ given ($O(L \\log L)$)",
            plotting.COLORS["convolutional"],
        ),
    }
    for key, (lab, color) in styles.items():
        ax.loglog(Ls, t[key], marker="o", ms=4, color=color, label=lab)
    plotting.slope_guide(ax, Ls, 1, (Ls[0], t["recurrence"][0] * 0.4), label="$\\propto L$")
    ax.plot(
        Ls,
        t["fft_conv"][-1] * 2.5 * (Ls * np.log2(Ls)) / (Ls[-1] * np.log2(Ls[-1])),
        ls="--",
        lw=1,
        color="0.6",
        label="$\\propto L \\log L$",
    )
    ax.set_xscale("log", base=2)
    plotting.label(
        ax,
        "sequence length $L$",
        f"{results.get('clock', 'wall time')} (s, best of rounds)",
        f"Cost of the two views on {results['device']}",
    )
    plotting.figure_legend(fig, ax, ncol=2)
    return fig


def plot(results: dict[str, Any]):
    return plot_timings(results)
