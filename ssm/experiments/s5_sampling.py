"""Chapter 5: S5's initialization from HiPPO-N and its step Δ_k per sample on irregular times.

S5 (Smith, Warrington & Linderman, arXiv:2208.04933v3, :class:`ssm.layers.S5Config`) runs one
MIMO SSM with a diagonal state matrix ``Λ``, discretized per step (Section 3,
:func:`ssm.scan.s5_scan`)::

    x_k = Λ̄_k x_{k-1} + B̄_k u_k,    Λ̄_k = e^{ΛΔ_k},    B̄_k = Λ⁻¹(Λ̄_k - I) B̃,    y_k = 2 Re(C̃ x_k).

(a) ``Λ`` at init is the spectrum of HiPPO-N, the normal part ``A + PᵀP`` of HiPPO-LegS
(:func:`ssm.layers.s5.hippo_n_init`), or of ``J`` blocks of size ``P/J`` on the diagonal. Every
eigenvalue has ``Re λ = -1/2``; the panel draws ``Im λ`` (one of each conjugate pair) against its
rank, beside S4D-Lin's ``-1/2 + iπn`` (:func:`ssm.layers._diagonal.diagonal_init`): HiPPO-N's
frequencies grow much faster than linearly, up to ``≈ 1300`` for ``P = 64``; with blocks the
spectrum is that of a smaller HiPPO-N, each value ``J`` times.

(b, c) The SSM of an S5 layer at init (``Λ``, ``B̃``, ``C̃``, its ``Δ`` per state set to 1, no
``D``) reads ``H`` input channels, each a sum of two sines sampled at irregular times
``t_0 < t_1 < …`` (seeded random gaps) and held over the gap before each sample
(``u(t) = u(t_k)`` on ``(t_{k-1}, t_k]``, ``t_{-1} = 0``), which is what ZOH at step ``k``
assumes. It runs three ways: (1) on a fine regular grid of step ``h`` whose multiples are the
sample times, read at the samples: the continuous system's output, since ZOH is exact for an
input held over each step; (2) on the samples with ``Δ_k = t_k - t_{k-1}``, S5's option for
irregular sampling (the layer's ``dt_scale``); (3) on the samples with one ``Δ`` = the mean gap,
what a time-invariant layer must do. (2) lies on (1) up to round-off (printed only as a bound);
(3) does not, by a good fraction of the output's size. Everything is float64, seconds on a CPU;
the ``full`` profile takes ``P = 256`` and a longer signal.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import plotting
from ..layers import S5Config
from ..layers._diagonal import diagonal_init
from ..layers.s5 import hippo_n_init
from ..scan import s5_scan
from ._common import check_profile, seed_everything

#: The per-step run must match the fine-grid truth to this (float64 round-off is far below).
BOUND = 1e-9

#: The spectra of panel (a), in the order drawn.
SPECTRA = ("hippo_n", "hippo_n_blocks", "s4d_lin")
SPECTRUM_STYLES = {
    "hippo_n": {"color": plotting.PALETTE["black"], "marker": "o", "ms": 4},
    "hippo_n_blocks": {"color": plotting.PALETTE["green"], "marker": "s", "ms": 3},
    "s4d_lin": {"color": plotting.PALETTE["orange"], "marker": "^", "ms": 3.5},
}
INPUT_COLORS = ("0.25", plotting.PALETTE["sky"], plotting.PALETTE["purple"])
#: The two runs on the samples: label and colour.
RUNS = {
    "per_step": (r"per-step $\Delta_k = t_k - t_{k-1}$ (S5)", plotting.PALETTE["blue"]),
    "fixed": (r"fixed $\Delta$ = mean gap (time-invariant)", plotting.PALETTE["vermillion"]),
}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "P": 64 if ci else 256,  # states of HiPPO-N (panel a) and of the S5 system
        "blocks": 4 if ci else 8,  # J of the block-diagonal HiPPO-N drawn beside J = 1
        "H": 2,  # input and output channels of the system
        "dt": 1.0,  # the layer's Δ per state: Δ_k = dt · (t_k - t_{k-1})
        "samples": 60 if ci else 400,  # irregular samples t_0 < ... < t_{L-1}
        "fine_step": 0.01 if ci else 0.005,  # h: every sample time is a multiple of h
        "gap_steps": [5, 60] if ci else [10, 120],  # each gap: a whole number of h, uniform
        "periods": [7.0, 2.5],  # of the two sines of each channel
        "amplitudes": [1.0, 0.5],
        "shown_until": 20.0,  # panels (b, c) draw t <= this
        "seed": 0,
    }


def spectra(P: int, blocks: int) -> dict[str, np.ndarray]:
    """The eigenvalues of panel (a), one of each conjugate pair, sorted by ``Im λ``: HiPPO-N
    (``J = 1`` and ``J = blocks``, as S5 stores them, :func:`ssm.layers.s5.hippo_n_init`) and
    S4D-Lin of state size ``P``; each ``(P/2,)`` complex128."""
    lin, _ = diagonal_init("lin", P, 1)  # (1 P/2)
    found = {
        "hippo_n": hippo_n_init(P, 1, conj_sym=True)[0],
        "hippo_n_blocks": hippo_n_init(P, blocks, conj_sym=True)[0],
        "s4d_lin": lin[0],
    }
    return {name: w[torch.argsort(w.imag)].numpy() for name, w in found.items()}


def s5_system(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Λ`` ``(Ps,)``, ``B̃`` ``(Ps, H)``, ``C̃`` ``(H, Ps)`` complex128 and ``Δ`` ``(Ps,)``
    float64 of an S5 layer at init (built in float64, seeded, ``Δ`` per state = ``cfg["dt"]``)."""
    seed_everything(cfg["seed"])
    layer_cfg = S5Config(d_state=cfg["P"], dt_min=cfg["dt"], dt_max=cfg["dt"])
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer = layer_cfg.build(cfg["H"])
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        Lambda, B, C, dt = layer.system()  # (Ps) (Ps H) (1 H Ps) (Ps)
    return Lambda, B, C[0], dt


def sample_times(cfg: dict[str, Any]) -> torch.Tensor:
    """The sample times as whole numbers of fine steps ``n_0 < n_1 < …`` ``(L,)`` int64
    (``t_k = n_k h``): the cumulative sum of seeded gaps uniform in ``gap_steps``."""
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    low, high = cfg["gap_steps"]
    gaps = torch.randint(low, high + 1, (cfg["samples"],), generator=g)  # (L)
    return torch.cumsum(gaps, 0)  # (L)


def signal(t: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
    """``u_h(t) = Σ_i a_i sin(2π t / T_i + h π / 2)`` for each channel ``h``: ``(L,)`` →
    ``(L, H)`` float64."""
    phase = torch.arange(cfg["H"], dtype=torch.float64) * math.pi / 2  # (H)
    waves = [
        a * torch.sin(2 * math.pi * t[:, None] / T + phase)  # (L H)
        for a, T in zip(cfg["amplitudes"], cfg["periods"], strict=True)
    ]
    return sum(waves)


def held(u: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The samples ``u`` ``(L, H)`` at sample steps ``n_k`` held on the fine grid: row ``j - 1``
    (time ``j h``, ``j = 1 .. n_{L-1}``) is ``u_k`` for ``n_{k-1} < j ≤ n_k``."""
    j = torch.arange(1, int(steps[-1]) + 1)  # (M)
    return u[torch.searchsorted(steps, j)]  # (M H)


def outputs(cfg: dict[str, Any], refine: int = 1) -> dict[str, Any]:
    """The three runs of the S5 system on the held input: the fine grid (up to ``shown_until``,
    and read at every sample: ``truth``), the per-step ``Δ_k`` and the fixed ``Δ`` = mean gap;
    each ``y`` ``(·, H)``. ``refine`` divides the fine step (the sample times stay)."""
    Lambda, B, C, dt = s5_system(cfg)
    steps = sample_times(cfg)  # (L) int
    t = steps.to(torch.float64) * cfg["fine_step"]  # (L): t_k = n_k h, as the fine grid has it
    h, steps = cfg["fine_step"] / refine, refine * steps  # the fine grid
    gaps = torch.diff(t, prepend=t.new_zeros(1))  # (L): t_k - t_{k-1}, t_{-1} = 0
    u = signal(t, cfg)  # (L H)
    scan = {"conj_sym": True, "method": "zoh"}
    with torch.no_grad():
        fine = s5_scan(Lambda, B, C, held(u, steps), h * dt, **scan)  # (M H)
        per_step = s5_scan(Lambda, B, C, u, gaps[:, None] * dt, **scan)  # (L H), Δ (L Ps)
        fixed = s5_scan(Lambda, B, C, u, float(gaps.mean()) * dt, **scan)  # (L H), Δ (Ps)
    fine_t = h * torch.arange(1, fine.shape[0] + 1, dtype=torch.float64)  # (M)
    shown = fine_t <= cfg["shown_until"]  # the curve is kept where panel (c) draws it
    return {
        "t": t.numpy(),
        "u": u.numpy(),
        "fine_t": fine_t[shown].numpy(),
        "fine": fine[shown].numpy(),  # (M' H)
        "truth": fine[steps - 1].numpy(),  # (L H): the fine grid at the sample times
        "per_step": per_step.numpy(),
        "fixed": fixed.numpy(),
        "mean_gap": float(gaps.mean()),
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Panel (a)'s spectra (real and imaginary parts), the three runs and the largest deviation
    of the two sampled runs from the fine-grid truth at the sample times."""
    ys = outputs(cfg)
    truth = ys["truth"]
    eigs = spectra(cfg["P"], cfg["blocks"])
    return {
        "config": cfg,
        "eigenvalues": {n: {"real": w.real.copy(), "imag": w.imag.copy()} for n, w in eigs.items()},
        **ys,
        "scale": float(np.abs(truth).max()),
        "deviation": {name: float(np.abs(ys[name] - truth).max()) for name in RUNS},
    }


def deviation_text(error: float) -> str:
    """A deviation as printed: below :data:`BOUND` as the bound only (round-off's digits vary
    with the CPU), else two significant digits."""
    return f"< {BOUND:.0e}".replace("e-0", "e-") if error < BOUND else f"{error:#.2g}"


def summary(results: dict[str, Any]) -> str:
    """The sampling, the two deviations from the truth (the per-step one as a bound), and the
    ranges of the spectra."""
    cfg, dev, scale = results["config"], results["deviation"], results["scale"]
    gaps = np.diff(np.asarray(results["t"]), prepend=0.0)
    lines = [
        f"S5 system: P = {cfg['P']} (HiPPO-N), H = {cfg['H']}, ZOH, float64; "
        f"{cfg['samples']} samples, gaps {gaps.min():.2f} to {gaps.max():.2f} "
        f"(mean {results['mean_gap']:.2f}); fine grid h = {cfg['fine_step']:g}",
        f"max |y| at the samples: {scale:.2g}",
        "largest deviation from the fine-grid truth at the samples:",
        f"  Δ_k = t_k - t_(k-1) per step  {deviation_text(dev['per_step']):>8}",
        f"  fixed Δ = mean gap            {deviation_text(dev['fixed']):>8}"
        f"  ({dev['fixed'] / scale:.0%} of max |y|)",
        "eigenvalues, one of each conjugate pair: Re λ, then Im λ from smallest to largest",
    ]
    for name in SPECTRA:
        w = results["eigenvalues"][name]
        re, im = np.asarray(w["real"]), np.asarray(w["imag"])
        span = f"{_num(im.min())} to {_num(im.max())}"
        lines.append(f"  {spectrum_label(name, cfg):<22} {re.max():.2g}  {span}")
    return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def spectrum_label(name: str, cfg: dict[str, Any]) -> str:
    return {
        "hippo_n": "HiPPO-N (S5, J = 1)",
        "hippo_n_blocks": f"HiPPO-N, J = {cfg['blocks']} blocks",
        "s4d_lin": "S4D-Lin, −1/2 + iπn",
    }[name]


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) ``Im λ`` against its rank for HiPPO-N (``J = 1``, ``J`` blocks) and S4D-Lin, all at
    ``Re λ = -1/2``; (b) the held input channels and their samples; (c) the first output channel:
    the fine-grid truth as a line, the per-step and the fixed-``Δ`` runs at the samples."""
    cfg = results["config"]
    fig = Figure(figsize=(plotting.WIDTH, 4.2), dpi=plotting.RC["figure.dpi"], layout="constrained")
    axes = fig.subplot_mosaic(
        [["a", "b"], ["a", "c"]], width_ratios=[1, 1.55], height_ratios=[1, 1.9]
    )
    ax, bx, cx = axes["a"], axes["b"], axes["c"]
    for name in SPECTRA:
        imag = np.asarray(results["eigenvalues"][name]["imag"])
        ax.plot(np.arange(len(imag)), imag, lw=0.8, label=spectrum_label(name, cfg),
                **SPECTRUM_STYLES[name])  # fmt: skip
    ax.set_yscale("symlog", linthresh=1.0)  # linear below 1: S4D-Lin's Im λ_0 = 0 is drawn
    plotting.label(ax, "rank n (one of each conjugate pair)", r"$\mathrm{Im}\,\lambda_n$",
                   f"spectra at init, P = {cfg['P']}, all Re λ = −1/2",
                   legend="upper left")  # fmt: skip

    t, u = np.asarray(results["t"]), np.asarray(results["u"])
    keep = t <= cfg["shown_until"]
    for ch in range(u.shape[1]):
        color = INPUT_COLORS[ch % len(INPUT_COLORS)]
        held_u = u[keep][:, ch]
        bx.step(np.concatenate([[0.0], t[keep]]), np.concatenate([held_u[:1], held_u]),
                where="pre", color=color, lw=1.1, label=f"input $u_{ch + 1}$")  # fmt: skip
        bx.plot(t[keep], held_u, "o", ms=2.5, color=color)
    plotting.label(bx, None, "u(t)", "input held over the gap before each sample")

    cx.plot(results["fine_t"], np.asarray(results["fine"])[:, 0], color=plotting.PALETTE["black"],
            lw=1.2, label=f"fine grid h = {cfg['fine_step']:g}: truth")  # fmt: skip
    for name, (text, color) in RUNS.items():
        hollow = name == "per_step"
        cx.plot(t[keep], np.asarray(results[name])[keep][:, 0], "o" if hollow else "x",
                color=color, mfc="none" if hollow else color, ms=4.5, mew=1.2,
                label=text)  # fmt: skip
    cx.set_xlim(bx.get_xlim())
    plotting.label(cx, "time t", r"$y_1(t)$", "S5 output at the irregular samples")
    (hb, lb), (hc, lc) = bx.get_legend_handles_labels(), cx.get_legend_handles_labels()
    fig.legend(hb + hc, lb + lc, loc="outside lower center", ncol=3)
    plotting.panel_letters([ax, bx, cx])
    return fig
