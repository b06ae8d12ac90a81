"""Chapter 1: HiPPO-LegS as an online memory of everything seen so far.

A signal on ``[0, 1]`` (two sines and a narrow bump, no noise) is fed sample by sample to the LegS
recurrence (:func:`ssm.hippo.legs_memory`). At any time ``t`` the state ``x(t)`` (``N`` numbers)
holds the coefficients of the best degree-``N-1`` polynomial approximation of the whole history
``u|[0, t]`` in the scaled Legendre basis; :func:`ssm.hippo.legs_reconstruct` turns it back into a
curve. Because LegS's ``A`` is lower triangular, the first ``N`` coordinates of a larger memory
evolve exactly like a memory of size ``N``, so one run at the largest ``N`` gives all sizes.
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.animation import FuncAnimation

import ssm

from .. import plotting
from ._common import check_profile


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "L": 200 if ci else 4000,  # samples of the signal on (0, 1]
        "sizes": [8, 16, 32, 64],  # state sizes N compared
        "sines": [[0.8, 2.0, 0.0], [0.4, 5.0, 0.5]],  # (amplitude, cycles on [0, 1], phase)
        "bump": [1.2, 0.62, 0.04],  # (height, centre, width) of a Gaussian bump
        "anim_N": 32,  # state size shown in the animation
        "anim_frames": 12 if ci else 24,
        "anim_points": 160,  # points per reconstructed curve in the animation
    }


def signal(cfg: dict[str, Any], s: np.ndarray) -> np.ndarray:
    """The test signal at times ``s ∈ [0, 1]``."""
    f = sum(a * np.sin(2 * np.pi * c * s + p) for a, c, p in cfg["sines"])
    h, m, w = cfg["bump"]
    return f + h * np.exp(-(((s - m) / w) ** 2))


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    L, sizes = cfg["L"], cfg["sizes"]
    s_samples = np.arange(1, L + 1) / L  # sample k seen at time k / L
    u = signal(cfg, s_samples)
    states = ssm.hippo.legs_memory(torch.from_numpy(u), max(sizes))  # (L N_max)

    grid = np.linspace(0.0, 1.0, L)  # where the reconstruction at t = 1 is evaluated
    truth = signal(cfg, grid)
    recon, rmse, max_err = {}, {}, {}
    for N in sizes:
        r = ssm.hippo.legs_reconstruct(states[-1, :N], L).numpy()  # (L)
        recon[N] = r
        rmse[N] = float(np.sqrt(np.mean((r - truth) ** 2)))
        max_err[N] = float(np.abs(r - truth).max())

    # Animation frames: what a memory of size anim_N holds at a few times t.
    n_anim, pts = cfg["anim_N"], cfg["anim_points"]
    ks = np.linspace(L / cfg["anim_frames"], L, cfg["anim_frames"]).round().astype(int)
    frames = [
        {
            "t": float(k / L),
            "s": np.linspace(0.0, k / L, pts),
            "memory": ssm.hippo.legs_reconstruct(states[k - 1, :n_anim], pts).numpy(),
        }
        for k in ks
    ]
    return {
        "grid": grid,
        "truth": truth,
        "sizes": list(sizes),
        "reconstruction": recon,
        "rmse": rmse,
        "max_error": max_err,
        "anim_N": n_anim,
        "frames": frames,
    }


def summary(results: dict[str, Any]) -> str:
    """Root-mean-square reconstruction error at ``t = 1`` per state size, to 3 decimals."""
    lines = [f"{'N':>4} {'RMSE':>8}"]
    for N in results["sizes"]:
        lines.append(f"{N:>4} {results['rmse'][N]:>8.3f}")
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """The signal and what a LegS memory of each size remembers of it at ``t = 1``."""
    sizes = results["sizes"]
    fig, axes = plotting.subplots(1, len(sizes), height=2.9, sharey=True)
    grid, truth = np.asarray(results["grid"]), np.asarray(results["truth"])
    for ax, N in zip(np.ravel(axes), sizes, strict=True):
        ax.plot(
            grid, truth, color=plotting.COLORS["signal"], lw=2.4, alpha=0.35, label="signal $u$"
        )
        ax.plot(
            grid,
            results["reconstruction"][N],
            color=plotting.COLORS["memory"],
            lw=1.4,
            label="memory $x(1)$, decoded",
        )
        plotting.label(ax, "time $s$", None, f"$N = {N}$\nRMSE {results['rmse'][N]:.3f}")
    np.ravel(axes)[0].set_ylabel("value")
    plotting.panel_letters(axes)
    plotting.figure_legend(fig, np.ravel(axes)[0])
    return fig


def animation(results: dict[str, Any], *, frame: int | None = None) -> Any:
    """HTML player: the memory's reconstruction of the past as time advances (self-contained).

    With ``frame``, the figure of that one frame instead (to look at or save).
    """
    frames = results["frames"]
    grid, truth = np.asarray(results["grid"]), np.asarray(results["truth"])
    with plotting.style(), mpl.rc_context({"savefig.dpi": 90 * plotting.PIXEL_RATIO}):
        fig, ax = plotting.subplots(1, 1, width=6.0, height=3.0)
        ax.plot(grid, truth, color="0.75", lw=1.2, label="signal (future in grey)")
        (seen,) = ax.plot(
            [], [], color=plotting.COLORS["signal"], lw=4.5, alpha=0.3, label="signal seen so far"
        )
        (mem,) = ax.plot(
            [],
            [],
            color=plotting.COLORS["memory"],
            lw=1.5,
            label=f"reconstruction from $x(t)$, $N = {results['anim_N']}$",
        )
        now = ax.axvline(0.0, color=plotting.PALETTE["vermillion"], lw=1, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(truth.min() - 0.5, truth.max() + 0.5)
        plotting.label(ax, "time $s$", "value")
        plotting.figure_legend(fig, ax, fontsize=8.5)  # below the axes, clear of the moving line

        def draw(i: int):
            fr = frames[i]
            mask = grid <= fr["t"]
            seen.set_data(grid[mask], truth[mask])
            mem.set_data(fr["s"], fr["memory"])
            now.set_xdata([fr["t"], fr["t"]])
            ax.set_title(f"What the state remembers at $t = {fr['t']:.2f}$")
            return seen, mem, now

        if frame is not None:
            draw(frame)
            return fig
        anim = FuncAnimation(fig, draw, frames=len(frames), interval=250, blit=False)
        return plotting.animation_html(anim, fig, name="hippo_memory")
