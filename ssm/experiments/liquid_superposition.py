"""Chapter 5: Liquid-S4's kernels at init, and the one thing they add to S4D: an interaction.

Liquid-S4 (Hasani et al., arXiv:2209.12951v1, Section 3; :mod:`ssm.layers.liquid_s4`) adds to
S4D's convolution the convolutions of the input correlations of up to ``P`` consecutive steps,

    y = K^{(1)} * u + Σ_{p=2..P} K^{(p)} * u^{(p)} + D u,    u^{(p)}_t = u_t u_{t-1} ⋯ u_{t-p+1},

with ``K^{(p)}_m = 2 Re Σ_n C_n B̄_n^p Ā_n^m`` (the "kb" kernel: the terms of the unrolled
liquid recurrence ``x_k = (Ā + B̄ u_k) x_{k-1} + B̄ u_k`` that pick ``B̄ u`` at ``p - 1``
consecutive steps) or ``K^{(p)}_m = 2 Re Σ_n C_n B̄_n^p`` for every lag (the "pb" kernel, the
layer's default: the ``Ā``-powers of the liquid terms dropped). ``K^{(1)}`` is S4D's kernel.

(a) ``|K^{(p)}|`` of one channel of a seeded layer at init (:meth:`LiquidS4.liquid_kernels`)
for ``p = 1, 2, 3`` and both variants: the "kb" kernels have S4D's shape in the lag (``Ā^m``),
each order about a factor ``|B̄|`` below the last; the "pb" ones are flat lines, they never
decay. (b) Superposition, on the SSM part of the layer (the
convolutions plus ``D u``, before its GELU and GLU): two unit impulses ``u₁`` at ``t₁`` and
``u₂`` at ``t₂ = t₁ + 1``, and the gap ``y(u₁ + u₂) - y(u₁) - y(u₂)``. S4D (the same layer at
order 1) is linear: the gap is zero, to round-off. For Liquid-S4 it is not: the sum has one
product the impulses alone do not, ``u_{t₂} u_{t₂-1} = 1``, so the gap is the order-2 term
``K^{(2)}_{t - t₂}``, equal (to round-off) to the prediction from the kernel: a step that
stays for "pb", an oscillation like S4D's response for "kb"; the order-3 correlations of two
impulses vanish. Impulses further apart than one step do not interact at
all (``apart_gap``): the correlations pair consecutive steps only. ``run`` also checks that the
convolution form, and the layer's whole forward pass, equal :func:`liquid_recurrence` (the
layer's recurrent step) on these inputs. Everything in float64, on a CPU, in seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import plotting
from ..layers.liquid_s4 import (
    LIQUID_KERNELS,
    LiquidS4,
    LiquidS4Config,
    correlations,
    liquid_recurrence,
)
from ..ops.fftconv import fftconv
from ._common import check_profile, seed_everything

#: The layers compared in (b): S4D is the Liquid-S4 layer at order 1 (same parameters).
MODELS = ("s4d", *LIQUID_KERNELS)
NAMES = {"s4d": "S4D (order 1)", "pb": "Liquid-S4, pb kernel", "kb": "Liquid-S4, kb kernel"}
COLORS = {
    "s4d": plotting.PALETTE["green"],
    "pb": plotting.PALETTE["blue"],
    "kb": plotting.PALETTE["orange"],
}
ORDER_COLORS = [plotting.PALETTE["black"], plotting.PALETTE["blue"], plotting.PALETTE["vermillion"]]
#: What each variant's order-p kernel is, for the legend of (a) (``2 Re Σ_n`` omitted).
TERMS = {"kb": r"C\bar B^{{{p}}}\bar A^m", "pb": r"C\bar B^{{{p}}}"}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "H": 2 if ci else 8,  # channels (every channel gets the same input)
        "d_state": 16 if ci else 64,  # N
        "L": 256 if ci else 1024,
        "order": 3,  # P: kernels of order 1, 2, 3
        "channel": 0,  # the channel drawn
        "window": 64,  # steps of (b) after t₁ (and 8 before)
        "init": "legs",
        "t1": 8 if ci else 64,  # u₁ at t₁, u₂ at t₁ + 1
        "apart": 4,  # the second pair: u₂ at t₁ + apart
        "seed": 0,
    }


def layer(cfg: dict[str, Any], order: int, variant: str) -> LiquidS4:
    """The seeded layer at init in float64, eval mode; every ``(order, variant)`` gets the same
    parameters (they do not depend on either)."""
    seed_everything(cfg["seed"])
    lay = LiquidS4Config(d_state=cfg["d_state"], l_max=cfg["L"], order=order,
                         liquid_kernel=variant, init=cfg["init"]).build(cfg["H"])  # fmt: skip
    return lay.double().eval()


def ssm_output(lay: LiquidS4, u: torch.Tensor) -> torch.Tensor:
    """The SSM part of the layer's forward pass, its convolution form:
    ``Σ_p K^{(p)} * u^{(p)} + D u``, ``u`` ``(B, H, L)`` → ``(B, H, L)``."""
    P, L = lay.cfg.order, u.shape[-1]
    K = lay.liquid_kernels()[..., :L]  # (P H L)
    U = correlations(u, P)  # (P B H L)
    return sum(fftconv(U[p], K[p]) for p in range(P)) + lay.D[:, None] * u  # (B H L)


def recurrent_output(lay: LiquidS4, u: torch.Tensor) -> torch.Tensor:
    """The same by :func:`liquid_recurrence`, step by step, plus ``D u``."""
    _, Ab, Bb, C = lay.system()  # (H N2) each
    y = liquid_recurrence(u, Ab, Bb, C, lay.cfg.order, lay.cfg.liquid_kernel)  # (B H L)
    return y + lay.D[:, None] * u


def pulses(cfg: dict[str, Any], apart: int = 1) -> torch.Tensor:
    """``u₁``, ``u₂`` and ``u₁ + u₂`` ``(3, H, L)``: unit impulses at ``t₁`` and ``t₁ + apart``."""
    u = torch.zeros(3, cfg["H"], cfg["L"], dtype=torch.float64)
    u[0, :, cfg["t1"]] = 1.0
    u[1, :, cfg["t1"] + apart] = 1.0
    u[2] = u[0] + u[1]
    return u


def interaction(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """The order-2 correlation of ``u₁ + u₂`` minus those of each alone:
    ``u₁_t u₂_{t-1} + u₂_t u₁_{t-1}`` ``(L,)``."""
    s1, s2 = np.concatenate([[0.0], u1[:-1]]), np.concatenate([[0.0], u2[:-1]])
    return u1 * s2 + u2 * s1


def predicted_gap(K2: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """The order-2 term of the gap from the kernel formula: ``Σ_s K^{(2)}_{t-s} c_s`` with
    ``c`` the :func:`interaction`, a direct causal sum ``(L,)``."""
    return np.convolve(interaction(u1, u2), K2)[: len(u1)]


def kernel_formula(lay: LiquidS4, p: int) -> np.ndarray:
    """``K^{(p)}_m`` ``(H, L)`` summed term by term in NumPy (module docstring)."""
    log_Ab, _, Bb, C = (t.detach().numpy() for t in lay.system())  # (H N2)
    m = np.arange(lay.cfg.l_max)
    powers = np.exp(log_Ab[..., None] * m) if p == 1 or lay.cfg.liquid_kernel == "kb" else 1.0
    return 2 * np.real(((C * Bb**p)[..., None] * powers).sum(1))  # (H L)


def gap_of(y: torch.Tensor) -> torch.Tensor:
    """``y(u₁ + u₂) - y(u₁) - y(u₂)`` of the outputs of :func:`pulses` ``(3, H, L)``."""
    return y[2] - y[0] - y[1]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@torch.no_grad()
def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """The kernels of the drawn channel, the gaps and their predictions, and the checks."""
    P = cfg["order"]
    layers = {"s4d": layer(cfg, 1, "pb")} | {v: layer(cfg, P, v) for v in LIQUID_KERNELS}
    c = cfg["channel"]
    dt = layers["s4d"].kernel.system()[3].numpy()  # (H,)
    u, far = pulses(cfg), pulses(cfg, cfg["apart"])
    u1, u2 = u[0, c].numpy(), u[1, c].numpy()
    kernels, gap, prediction, scale = {}, {}, {}, {}
    checks = {k: {} for k in ("prediction", "apart_gap", "recurrence", "forward", "formula")}
    for name, lay in layers.items():
        y = ssm_output(lay, u)  # (3 H L)
        gap[name] = gap_of(y)[c].numpy()  # (L,)
        scale[name] = float(y[2, c].abs().max())
        checks["apart_gap"][name] = float(gap_of(ssm_output(lay, far)).abs().max())
        rec = recurrent_output(lay, u)  # (3 H L)
        checks["recurrence"][name] = float((y - rec).abs().max() / rec.abs().max())
        head = lay.output(lay.activation(rec).transpose(1, 2))  # (3 L H): the rest of the layer
        whole = lay(u.transpose(1, 2))  # (3 L H)
        checks["forward"][name] = float((whole - head).abs().max() / head.abs().max())
        K = lay.liquid_kernels().numpy()  # (P H L)
        checks["formula"][name] = max(
            rel(K[p - 1], kernel_formula(lay, p)) for p in range(1, lay.cfg.order + 1)
        )
        if name != "s4d":
            kernels[name] = K[:, c]  # (P L)
            prediction[name] = predicted_gap(K[1, c], u1, u2)  # (L,)
            checks["prediction"][name] = rel(gap[name], prediction[name])
    return {
        "config": cfg,
        "channel": c,
        "dt": float(dt[c]),
        "kernels": kernels,
        "gap": gap,
        "prediction": prediction,
        "response_peak": scale,  # max |y(u₁ + u₂)| of the drawn channel
        "gap_peak": {name: float(np.abs(g).max()) for name, g in gap.items()},
        "s4d_gap": float(np.abs(gap["s4d"]).max()) / scale["s4d"],  # relative
        "prediction_error": checks["prediction"],  # relative to the gap's peak
        "apart_gap": checks["apart_gap"],  # max |gap| over every channel, impulses apart
        "recurrence_error": checks["recurrence"],  # convolution form vs recurrence
        "forward_error": checks["forward"],  # the layer's forward vs recurrence + its head
        "formula_error": checks["formula"],  # liquid_kernels() vs the NumPy sum
    }


def bound(err: float, tol: float) -> str:
    """Round-off as a bound (``< tol``), anything larger with two significant digits."""
    return f"< {tol:.0e}".replace("e-0", "e-") if err < tol else f"{err:.1e}"


def summary(results: dict[str, Any]) -> str:
    """The gap's peak per layer (3 significant digits; S4D's as a bound), the prediction's
    error, the gap of impulses apart, and the forward pass against the recurrence."""
    cfg = results["config"]
    t1 = cfg["t1"]
    lines = [
        f"float64, H = {cfg['H']}, N = {cfg['d_state']}, L = {cfg['L']}, order {cfg['order']}; "
        f"unit impulses at t1 = {t1} and t2 = {t1 + 1}; channel {results['channel']} "
        f"(Δ = {results['dt']:.3g})",
        f"{'':<22} {'peak |gap|':>12} {'vs order-2 term':>16} {'gap, apart':>11} "
        f"{'conv = rec':>11} {'forward':>8}",
    ]
    for name in MODELS:
        peak = results["gap_peak"][name]
        if name == "s4d":
            shown = "0 (< 1e-12)" if results["s4d_gap"] < 1e-12 else f"{peak:.3g}"
            pred = "—"
        else:
            shown, pred = f"{peak:.3g}", bound(results["prediction_error"][name], 1e-9)
        apart = results["apart_gap"][name]
        lines.append(
            f"{NAMES[name]:<22} {shown:>12} {pred:>16} "
            f"{'0 (< 1e-12)' if apart < 1e-12 else f'{apart:.3g}':>11} "
            f"{bound(results['recurrence_error'][name], 1e-9):>11} "
            f"{bound(results['forward_error'][name], 1e-9):>8}"
        )
    lines.append(
        f"gap: y(u1+u2) - y(u1) - y(u2) of the SSM part; apart: impulses {cfg['apart']} steps "
        "apart; errors relative"
    )
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) ``|K^{(p)}|`` of one channel against the lag (log scale), ``p = 1..P``, "kb" solid
    and "pb" dashed; (b) the superposition gap of S4D and of both Liquid-S4 variants, each with
    the order-2 term predicted from its kernel overlaid."""
    cfg = results["config"]
    fig, (ax, bx) = plotting.subplots(1, 2, height=3.4)
    lags = np.arange(cfg["L"])
    K = results["kernels"]
    ax.semilogy(lags, np.abs(K["kb"][0]) + 1e-12, color=ORDER_COLORS[0], lw=0.9,
                label=r"$K^{(1)}$: $C\bar A^m\bar B$ (S4D)")  # fmt: skip
    for p in range(2, cfg["order"] + 1):
        for variant, ls, lw in (("kb", "-", 0.9), ("pb", "--", 1.8)):
            term = TERMS[variant].format(p=p)
            ax.semilogy(lags, np.abs(K[variant][p - 1]) + 1e-12, color=ORDER_COLORS[p - 1],
                        ls=ls, lw=lw, label=rf"$K^{{({p})}}$ {variant}: ${term}$")  # fmt: skip
    plotting.label(ax, "lag m", r"$|K^{(p)}_m|$", f"kernels at init, channel {results['channel']}")
    ax.legend(loc="lower left", ncol=2, fontsize=8, columnspacing=1.0, handlelength=1.8,
              title="K = 2 Re Σₙ (·)ₙ", title_fontsize=8)  # fmt: skip
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom / 30, top)

    w = slice(max(cfg["t1"] - 8, 0), cfg["t1"] + cfg["window"])
    t = np.arange(cfg["L"])[w]
    bx.plot(t, results["gap"]["s4d"][w], color=COLORS["s4d"], lw=2.0, label=NAMES["s4d"])
    for variant in LIQUID_KERNELS:
        bx.plot(t, results["gap"][variant][w], color=COLORS[variant], lw=4.0, alpha=0.5,
                label=NAMES[variant])  # fmt: skip
    for i, variant in enumerate(LIQUID_KERNELS):
        predicted = r"$K^{(2)}_{t-t_2}$, from the kernel" if i == 0 else None
        bx.plot(t, results["prediction"][variant][w], color=plotting.PALETTE["black"], lw=0.9,
                ls="--", label=predicted)  # fmt: skip
    bx.axvline(cfg["t1"] + 1, color=plotting.PALETTE["black"], ls=":", lw=0.8)
    plotting.label(bx, r"step t (impulses at $t_1$, $t_2 = t_1 + 1$)",
                   r"$y(u_1+u_2) - y(u_1) - y(u_2)$", "superposition gap")  # fmt: skip
    bottom, top = bx.get_ylim()
    bx.set_ylim(bottom, top + 0.6 * (top - bottom))
    bx.legend(loc="upper right", ncol=2, fontsize=8, columnspacing=1.0, handlelength=1.8)
    plotting.panel_letters([ax, bx])
    return fig
