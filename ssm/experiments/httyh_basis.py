"""Chapter 2: the basis functions of S4's HiPPO operators, and what each remembers.

"How to Train Your HiPPO" (Gu, Johnson, Timalsina, Rudra, Ré; arXiv:2206.12037v2) reads an LTI
SSM ``x' = Ax + Bu`` as a convolution: ``x(t) = ∫ K(s) u(t - s) ds`` with the basis functions
``K_n(s) = e_nᵀ exp(sA) B`` (:func:`ssm.hippo.basis`). Each is ``K_n = p_n ω`` with ``p_n``
orthonormal under the weight ``ω`` (:func:`ssm.hippo.orthonormal_functions`,
:func:`ssm.hippo.weight`), so the state holds the coefficients of the projection of the past
onto ``span{p_n}``, and ``Σ_n x_n(t) p_n(s)`` decodes it back into ``u(t - s)``:

- LegS (S4's matrix): ``ω(s) = e^{-s}``: all of the past, with a resolution that decays
  exponentially with the lag (the polynomials live in ``r = e^{-s}``);
- LegT and FouT: ``ω`` uniform on a window ``[0, 1)``: a sliding window, nothing before it.

The S4 code's LegT and FouT matrices have the window ``[0, 2)``; this experiment uses the SSM
``(2A, 2B)`` for them (``scales`` in the config), which is the window ``[0, 1)`` of the paper's
figure. The state is computed by sampling the convolution (trapezoidal rule on a fine grid of
lags), from the operators' exponentials, not from the closed forms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import hippo, plotting
from ._common import check_profile

MEASURES = ("legs", "legt", "fout")
NAMES = {"legs": "LegS", "legt": "LegT", "fout": "FouT"}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "scales": {"legs": 1.0, "legt": 2.0, "fout": 2.0},  # SSM (cA, cB): windows [0, 1)
        "basis_N": 64,  # state size of the SSMs whose first basis functions are drawn
        "basis_shown": 4,  # basis functions drawn per measure (FouT's K_1 = 0 is skipped)
        "t_max": 3.0,  # lags shown
        "basis_points": 601 if ci else 3001,
        "check_sizes": [16, 64],  # N at which basis and closed form are compared
        "check_points": 1501 if ci else 6001,
        "edge": 0.05,  # LegT/FouT compared this far from the window's edges
        "N": 64,  # state size of the reconstructions
        "past": 6.0,  # the input started this long ago (zero before)
        "ds": 2e-3 if ci else 5e-4,  # step of the lag grid of the convolution
        "sines": [[0.8, 1.3, 0.0], [0.4, 3.1, 0.5]],  # (amplitude, cycles per unit lag, phase)
        "bump": [1.0, 0.35, 0.05],  # (height, lag of its centre, width) of a Gaussian bump
        "recent": 1.0,  # errors on lags [0, recent) and [recent, older)
        "older": 3.0,
    }


def signal(cfg: dict[str, Any], s: np.ndarray) -> np.ndarray:
    """The input at lag ``s`` before now, ``u(t - s)``, for ``s ∈ [0, past]``."""
    f = sum(a * np.sin(2 * np.pi * c * s + p) for a, c, p in cfg["sines"])
    h, m, w = cfg["bump"]
    return f + h * np.exp(-(((s - m) / w) ** 2))


def shown_indices(measure: str, count: int) -> list[int]:
    """The first ``count`` indices ``n`` with a nonzero ``K_n`` (FouT's ``K_1`` is 0)."""
    return [n for n in range(count + 1) if not (measure == "fout" and n == 1)][:count]


def formula(measure: str, scale: float) -> str:
    """``K_n(t)`` of :func:`ssm.hippo.basis_closed_form` at ``scale``, as text."""
    c = f"{scale:g}"
    if measure == "legs":
        e = "e^{-t}" if scale == 1 else f"e^{{-{c}t}}"
        lead = "" if scale == 1 else f"{c}·"
        return f"{lead}√(2n+1) P_n(2{e} − 1) {e}"
    half = f"{scale / 2:g}"
    lead = "" if scale == 2 else f"{half}·"
    ct = "t" if scale == 1 else f"{c}t"
    window = f"on [0, {2 / scale:g}), 0 after"
    if measure == "legt":
        return f"{lead}√(2n+1) P_n(1 − {ct}) {window}"
    freq = {1.0: "πkt", 2.0: "2πkt"}.get(scale, f"{c}πkt")
    return f"{lead}(1, 0, √2 cos({freq}), √2 sin({freq}), ...) for k ≥ 1, {window}"


def _check_mask(measure: str, t: np.ndarray, scale: float, edge: float) -> np.ndarray:
    """Where basis and closed form are compared: everywhere for LegS, else away from the
    window's edges ``0`` and ``2/scale`` (and their echoes, multiples of the window)."""
    if measure == "legs":
        return np.ones_like(t, dtype=bool)
    window = 2 / scale
    return np.abs(t / window - np.round(t / window)) * window > edge


def closed_form_gaps(cfg: dict[str, Any]) -> dict[str, list[float]]:
    """Max ``|basis - closed form|`` over the first ``basis_shown`` functions, per measure, one
    per ``N`` of ``check_sizes``, on ``[0, t_max]`` (LegT/FouT: ``edge`` away from each multiple
    of the window)."""
    t = np.linspace(0.0, cfg["t_max"], cfg["check_points"])
    gaps: dict[str, list[float]] = {}
    for m in MEASURES:
        c = cfg["scales"][m]
        mask = _check_mask(m, t, c, cfg["edge"])
        gaps[m] = []
        for N in cfg["check_sizes"]:
            K = hippo.basis(m, N, t, scale=c).numpy()[: cfg["basis_shown"]]  # (n T)
            ref = hippo.basis_closed_form(m, N, t, scale=c).numpy()[: cfg["basis_shown"]]
            gaps[m].append(float(np.abs(K - ref)[:, mask].max()))
    return gaps


def reconstruct(cfg: dict[str, Any], measure: str) -> dict[str, Any]:
    """State ``x_n = ∫ K_n(s) u(t - s) ds`` (trapezoid), decoded as ``Σ_n x_n p_n(s)``, and the
    best fit of the past in ``span{p_n}`` under ``ω`` (weighted least squares), for comparison."""
    c, N = cfg["scales"][measure], cfg["N"]
    s = np.arange(0.0, cfg["past"] + cfg["ds"] / 2, cfg["ds"])  # lags (S)
    u = signal(cfg, s)  # (S)
    K = hippo.basis(measure, N, s, scale=c).numpy()  # (N S)
    x = np.trapezoid(K * u, s, axis=1)  # (N)
    p = hippo.orthonormal_functions(measure, N, s, scale=c).numpy()  # (N S)
    w = hippo.weight(measure, s, scale=c).numpy()  # (S)
    support = w > 0
    pw = p[:, support] * (w[support] * cfg["ds"])  # (N S')
    gram = pw @ p[:, support].T  # (N N): ≈ I (FouT's p_1 = 0 makes it singular)
    coef = np.linalg.lstsq(gram, pw @ u[support], rcond=1e-10)[0]  # normal equations
    return {"s": s, "u": u, "support": support, "decoded": x @ p, "best": coef @ p}


def _rmse(rec: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    r = (rec["s"] >= lo) & (rec["s"] < hi) & rec["support"]
    if not r.any():
        return None
    return float(np.sqrt(np.mean((rec[key][r] - rec["u"][r]) ** 2)))


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    t = np.linspace(0.0, cfg["t_max"], cfg["basis_points"])
    basis, closed = {}, {}
    for m in MEASURES:
        idx = shown_indices(m, cfg["basis_shown"])
        c = cfg["scales"][m]
        basis[m] = hippo.basis(m, cfg["basis_N"], t, scale=c).numpy()[idx]  # (n T)
        closed[m] = hippo.basis_closed_form(m, cfg["basis_N"], t, scale=c).numpy()[idx]
    recon, errors = {}, {}
    for m in MEASURES:
        rec = reconstruct(cfg, m)
        keep = rec["s"] <= cfg["t_max"]
        recon[m] = {k: v[keep] for k, v in rec.items()}
        errors[m] = {
            "decoded_recent": _rmse(rec, "decoded", 0.0, cfg["recent"]),
            "best_recent": _rmse(rec, "best", 0.0, cfg["recent"]),
            "decoded_older": _rmse(rec, "decoded", cfg["recent"], cfg["older"]),
        }
    return {
        "config": cfg,
        "t": t,
        "indices": {m: shown_indices(m, cfg["basis_shown"]) for m in MEASURES},
        "basis": basis,
        "closed_form": closed,
        "gaps": closed_form_gaps(cfg),
        "formulas": {m: formula(m, cfg["scales"][m]) for m in MEASURES},
        "reconstruction": recon,
        "errors": errors,
    }


def _gap_text(gap: float) -> str:
    if gap < 1e-12:
        return "< 1e-12"
    return f"{gap:.3f}" if gap >= 1e-3 else f"{gap:.0e}"


def table(results: dict[str, Any]) -> str:
    """Per measure: ``K_n(t)`` in closed form, and the largest difference between the
    operators' basis functions and it (first functions, each ``N``); LegT and FouT are compared
    away from the window's edges, where the closed form is the limit ``N → ∞``."""
    cfg = results["config"]
    sizes = cfg["check_sizes"]
    head = "  ".join(f"{'N = ' + str(N):>9}" for N in sizes)
    lines = [f"{'measure':<8} {'scale':>5}  {head}  K_n(t)"]
    for m in MEASURES:
        gaps = "  ".join(f"{_gap_text(g):>9}" for g in results["gaps"][m])
        lines.append(f"{NAMES[m]:<8} {cfg['scales'][m]:>5g}  {gaps}  {results['formulas'][m]}")
    lines.append(
        f"max |basis − closed form| over n < {cfg['basis_shown']}, t ∈ [0, {cfg['t_max']:g}]; "
        f"LegT/FouT at more than {cfg['edge']:g} from multiples of the window"
    )
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """Root-mean-square errors of the reconstructions at ``N``, to 3 decimals: decoded from
    the state, and the best fit in the span, on the recent past; decoded, on the older past."""
    cfg = results["config"]
    recent, older = f"[0, {cfg['recent']:g})", f"[{cfg['recent']:g}, {cfg['older']:g})"
    lines = [
        f"N = {cfg['N']}: RMSE of the past u(t − s) reconstructed",
        f"{'measure':<8} {'decoded ' + recent:>16} {'best ' + recent:>13} {'decoded ' + older:>16}",
    ]
    for m in MEASURES:
        e = results["errors"][m]
        cells = [
            "—" if e[k] is None else f"{e[k]:.3f}"
            for k in ("decoded_recent", "best_recent", "decoded_older")
        ]
        lines.append(f"{NAMES[m]:<8} {cells[0]:>16} {cells[1]:>13} {cells[2]:>16}")
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """The first basis functions ``K_n(t)`` of LegS, LegT and FouT (one panel each), from the
    operators' exponentials, with the closed forms dashed."""
    cfg = results["config"]
    t = np.asarray(results["t"])
    fig, axes = plotting.subplots(1, len(MEASURES), height=3.0, sharey=True)
    colors = list(plotting.PALETTE.values())
    for ax, m in zip(np.ravel(axes), MEASURES, strict=True):
        basis, closed = np.asarray(results["basis"][m]), np.asarray(results["closed_form"][m])
        for i, n in enumerate(results["indices"][m]):
            ax.plot(t, basis[i], color=colors[i], lw=1.6, label=f"$K_{n}$")
            ax.plot(
                t,
                closed[i],
                color="black",
                lw=0.8,
                ls="--",
                label="closed form" if i == 0 else None,
            )
        if m != "legs":
            ax.axvspan(0, 2 / cfg["scales"][m], color="0.9", zorder=0)
        ax.set_ylim(-2.5, 3.0)
        title = f"{NAMES[m]}: $K_n$, n = {', '.join(map(str, results['indices'][m]))}"
        plotting.label(ax, "$t$", None, title)
        ax.legend(loc="upper right", fontsize=8, ncol=2)
    np.ravel(axes)[0].set_ylabel("$K_n(t)$")
    plotting.panel_letters(axes)
    return fig


@plotting.styled
def plot_reconstruction(results: dict[str, Any]):
    """One input's past ``u(t - s)`` and, per measure, what its state of size ``N`` decodes to,
    over the lags it remembers (LegT/FouT: the shaded window)."""
    cfg = results["config"]
    fig, axes = plotting.subplots(1, len(MEASURES), height=3.0, sharey=True)
    for ax, m in zip(np.ravel(axes), MEASURES, strict=True):
        rec = results["reconstruction"][m]
        s, u, on = np.asarray(rec["s"]), np.asarray(rec["u"]), np.asarray(rec["support"])
        ax.plot(s, u, color=plotting.COLORS["signal"], lw=2.4, alpha=0.35, label="input $u$")
        ax.plot(
            s[on],
            np.asarray(rec["decoded"])[on],
            color=plotting.COLORS["memory"],
            lw=1.3,
            label="decoded from the state",
        )
        if m != "legs":
            ax.axvspan(0, 2 / cfg["scales"][m], color="0.9", zorder=0)
        err = results["errors"][m]["decoded_recent"]
        plotting.label(
            ax,
            "lag $s$ (time before now)",
            None,
            f"{NAMES[m]}\nRMSE on [0, {cfg['recent']:g}): {err:.3f}",
        )
    np.ravel(axes)[0].set_ylabel("$u(t - s)$")
    plotting.panel_letters(axes)
    plotting.figure_legend(fig, np.ravel(axes)[0])
    return fig
