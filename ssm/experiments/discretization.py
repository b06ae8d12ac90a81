"""Chapter 1: how well do the four discretizations follow the continuous SSM?

A damped oscillator (state size N = 2, ``x = (position, velocity)``, ``y = position``)

    x'(t) = A x(t) + B u(t),   A = [[0, 1], [-ω₀², -2ζω₀]],   B = (0, 1),   C = (1, 0)

is driven from rest by two kinds of input:

- *smooth*: ``u(t) = Σ_j a_j cos(ν_j t + φ_j)``, whose exact response is closed-form (particular
  solution ``Re Σ_j a_j e^{iφ_j} (iν_j - A)⁻¹ B e^{iν_j t}`` minus the free response that cancels
  it at ``t = 0``);
- *held*: piecewise constant, one level per interval of length ``hold`` (the levels are the smooth
  input at each interval's middle); exact response by the matrix exponential on each interval.

Both references use the eigendecomposition of ``A`` (numpy), not :func:`ssm.discretize`. The
discrete systems run with :func:`ssm.recurrence`, ``x_k = Ā x_{k-1} + B̄ u_k`` from ``x_{-1} = 0``,
so ``x_k`` approximates ``x(t_k)`` at ``t_k = (k+1)Δ``. What ``u_k`` is matters: the *midpoint*
sample ``u(t_k - Δ/2)`` or the *endpoint* sample ``u(t_k)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import ssm

from .. import plotting
from ._common import check_profile, progress

METHODS = ("euler", "backward_euler", "bilinear", "zoh")
INPUTS = ("midpoint", "endpoint", "held")
# Errors below this are round-off (it accumulates over thousands of steps): no order is fitted,
# and the convergence figure draws them on this line (a grey band), since their digits vary
# with the CPU and the libraries.
ROUNDOFF = 1e-9
INPUT_TITLES = {
    "midpoint": "smooth $u$, $u_k = u(t_k - \\Delta/2)$",
    "endpoint": "smooth $u$, $u_k = u(t_k)$",
    "held": "held (piecewise-constant) $u$",
}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "omega0": 2.0,  # natural frequency of the oscillator (rad per unit time)
        "zeta": 0.1,  # damping ratio: lightly damped, so errors in phase show
        "amplitudes": [1.0, 0.5],
        "frequencies": [0.7, 2.3],  # input frequencies ν_j, one below and one above ω₀
        "phases": [0.0, 1.0],
        "hold": 0.5,  # length of the intervals on which the held input is constant
        "trajectory_dt": 0.2,  # the one step of Figure 1
        "trajectory_T": 15.0,
        "sweep_T": 10.0,  # horizon of the error sweep
        # Δ = hold · 2^-j, j = 1..levels: every Δ divides the hold interval
        "levels": 6 if profile == "ci" else 12,
        "fit_max_dt": 0.07,  # slopes are fitted on Δ ≤ this (the asymptotic regime)
    }


def system(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, C)`` of the damped oscillator, float64."""
    w0, z = cfg["omega0"], cfg["zeta"]
    A = np.array([[0.0, 1.0], [-(w0**2), -2 * z * w0]])
    return A, np.array([0.0, 1.0]), np.array([1.0, 0.0])


def smooth_input(cfg: dict[str, Any], t: np.ndarray) -> np.ndarray:
    """``u(t) = Σ_j a_j cos(ν_j t + φ_j)``."""
    a, nu, phi = (np.asarray(cfg[k])[:, None] for k in ("amplitudes", "frequencies", "phases"))
    return (a * np.cos(nu * t[None] + phi)).sum(0)


def held_levels(cfg: dict[str, Any], T: float) -> np.ndarray:
    """One level per hold interval: the smooth input at the interval's middle."""
    h = cfg["hold"]
    n = round(T / h)
    return smooth_input(cfg, (np.arange(n) + 0.5) * h)


def exact_smooth(cfg: dict[str, Any], t: np.ndarray) -> np.ndarray:
    """Exact output ``y(t)`` for the smooth input, from rest at ``t = 0``."""
    A, B, C = system(cfg)
    lam, V = np.linalg.eig(A)
    Vinv = np.linalg.inv(V)
    a, nu, phi = (np.asarray(cfg[k]) for k in ("amplitudes", "frequencies", "phases"))
    # particular solution: x_p(t) = Re Σ_j c_j (iν_j I - A)⁻¹ B e^{iν_j t}
    g = np.stack([np.linalg.solve(1j * n * np.eye(2) - A, B) for n in nu])  # (J 2)
    coef = a * np.exp(1j * phi)  # (J)
    xp0 = (coef[:, None] * g).sum(0)  # x_p(0) as a complex vector (its real part is used)
    yp = C @ (coef[:, None, None] * g[:, :, None] * np.exp(1j * nu[:, None, None] * t)).sum(0)
    # free response from x(0) - x_p(0) = -Re x_p(0): C e^{tA} (-Re x_p(0))
    free = (C @ V) @ (np.exp(lam[:, None] * t[None]) * (Vinv @ -xp0.real)[:, None])  # (len t)
    return (yp.real + free.real).astype(np.float64)


def exact_held(cfg: dict[str, Any], t: np.ndarray) -> np.ndarray:
    """Exact output for the held input at times ``t`` (on or inside the hold intervals)."""
    A, B, C = system(cfg)
    lam, V = np.linalg.eig(A)
    Vinv = np.linalg.inv(V)
    h = cfg["hold"]
    T = float(t.max())
    levels = held_levels(cfg, np.ceil(T / h - 1e-9) * h)

    def step(x: np.ndarray, tau: np.ndarray, u: np.ndarray) -> np.ndarray:
        # x(τ) = e^{τA} x + A⁻¹(e^{τA} - I) B u, in the eigenbasis (A is diagonalizable)
        e = np.exp(lam[None] * tau[:, None])  # (n 2)
        xe = (Vinv @ x.T).T if x.ndim == 2 else np.broadcast_to(Vinv @ x, e.shape)
        free = e * xe
        forced = ((e - 1) / lam[None]) * (Vinv @ B)[None] * u[:, None]
        return ((V @ (free + forced).T).T).real

    starts = np.zeros((len(levels), 2))  # state at the start of each interval
    x = np.zeros(2)
    for m in range(len(levels)):
        starts[m] = x
        x = step(x[None], np.array([h]), levels[m : m + 1])[0]
    m = np.minimum(np.floor(t / h + 1e-9).astype(int), len(levels) - 1)
    m = np.where(np.isclose(t, m * h) & (m > 0), m - 1, m)  # interval ends are their own
    tau = t - m * h
    return step(starts[m], tau, levels[m]) @ C


def inputs(cfg: dict[str, Any], dt: float, T: float, kind: str) -> np.ndarray:
    """The samples ``u_k`` fed to step ``k`` (``t_k = (k+1)Δ``) for one kind of input."""
    t = (np.arange(round(T / dt)) + 1) * dt
    if kind == "midpoint":
        return smooth_input(cfg, t - dt / 2)
    if kind == "endpoint":
        return smooth_input(cfg, t)
    if kind == "held":
        return held_levels(cfg, T)[np.floor((t - dt / 2) / cfg["hold"]).astype(int)]
    raise ValueError(f"kind must be one of {INPUTS}, got {kind!r}")


def simulate(
    cfg: dict[str, Any], dt: float, T: float, kinds: tuple[str, ...] = INPUTS
) -> dict[str, dict[str, np.ndarray]]:
    """Outputs ``y_k ≈ y(t_k)`` of the four discretized oscillators, for each kind of input.

    One batched :func:`ssm.recurrence` call runs every (input, method) pair: ``Ā`` is
    ``(methods, 2, 2)`` and ``u`` is ``(kinds, 1, L)``, so the outputs are ``(kinds, methods, L)``.
    """
    A, B, C = (torch.from_numpy(m) for m in system(cfg))
    pairs = [ssm.discretize(A, B, dt, m) for m in METHODS]
    Ab = torch.stack([p[0] for p in pairs])  # (M 2 2)
    Bb = torch.stack([p[1] for p in pairs])  # (M 2)
    u = torch.from_numpy(np.stack([inputs(cfg, dt, T, k) for k in kinds]))[:, None]  # (K 1 L)
    y = ssm.recurrence(Ab, Bb, C, u).numpy()  # (K M L)
    return {k: dict(zip(METHODS, y[i], strict=True)) for i, k in enumerate(kinds)}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    # Figure 1: one step size, all four methods, smooth input sampled at step midpoints.
    dt, T = cfg["trajectory_dt"], cfg["trajectory_T"]
    t_fine = np.linspace(0.0, T, 1501)
    t_steps = (np.arange(round(T / dt)) + 1) * dt
    trajectory = {
        "t_fine": t_fine,
        "y_fine": exact_smooth(cfg, t_fine),
        "t": t_steps,
        "y_exact": exact_smooth(cfg, t_steps),
        "u_fine": smooth_input(cfg, t_fine),
        "y": simulate(cfg, dt, T, ("midpoint",))["midpoint"],
    }

    # Figure 2: max error over [0, T] against Δ, for each kind of input.
    T = cfg["sweep_T"]
    dts = [cfg["hold"] * 2.0**-j for j in range(1, cfg["levels"] + 1)]
    errors: dict[str, dict[str, list[float]]] = {k: {m: [] for m in METHODS} for k in INPUTS}
    for dt in progress(dts, cfg, "step sizes"):
        t = (np.arange(round(T / dt)) + 1) * dt
        ref = {"midpoint": exact_smooth(cfg, t), "held": exact_held(cfg, t)}
        ref["endpoint"] = ref["midpoint"]
        ys = simulate(cfg, dt, T)
        for kind in INPUTS:
            for m in METHODS:
                errors[kind][m].append(float(np.abs(ys[kind][m] - ref[kind]).max()))

    slopes: dict[str, dict[str, float | None]] = {}
    for kind in INPUTS:
        slopes[kind] = {}
        for m in METHODS:
            pts = [
                (d, e) for d, e in zip(dts, errors[kind][m], strict=True) if d <= cfg["fit_max_dt"]
            ]
            pts = [(d, e) for d, e in pts if e > ROUNDOFF]
            slopes[kind][m] = (
                plotting.fit_loglog_slope(*zip(*pts, strict=True)) if len(pts) >= 3 else None
            )
    return {"trajectory": trajectory, "dts": dts, "errors": errors, "slopes": slopes}


def summary(results: dict[str, Any]) -> str:
    """The fitted orders as a small text table (slopes rounded to 0.1)."""
    lines = [f"{'method':<16}" + "".join(f"{k:>12}" for k in INPUTS)]
    for m in METHODS:
        row = f"{plotting.METHOD_LABELS[m]:<16}"
        for k in INPUTS:
            s = results["slopes"][k][m]
            if s is None:
                worst = max(results["errors"][k][m])
                row += f"{'exact' if worst < ROUNDOFF else 'n/a':>12}"
            else:
                row += f"{s:>12.1f}"
        lines.append(row)
    return "\n".join(lines)


@plotting.styled
def plot_trajectory(results: dict[str, Any]):
    """Figure 1: the exact output and the four discretizations at one step size."""
    tr = results["trajectory"]
    fig, (ax, ax_err) = plotting.subplots(1, 2, height=3.6)
    ax.plot(tr["t_fine"], tr["y_fine"], color=plotting.COLORS["exact"], lw=2.2, label="exact")
    bound = 1.6 * np.abs(tr["y_fine"]).max()
    t = np.asarray(tr["t"])
    dt = t[1] - t[0]
    for m in METHODS:
        y = np.asarray(tr["y"][m])
        kw = {"color": plotting.METHOD_COLORS[m], "label": plotting.METHOD_LABELS[m]}
        ax.plot(t, y, ls="-", lw=0.9, marker="o", ms=2.5, **kw)
        ax_err.semilogy(t, np.abs(y - np.asarray(tr["y_exact"])), lw=1.2, **kw)
    ax.set_ylim(-bound, bound)
    plotting.label(ax, "time $t$", "output $y$", f"Outputs at step $\\Delta = {dt:g}$")
    plotting.label(ax_err, "time $t$", "error $|y_k - y(t_k)|$", "Errors (log scale)")
    plotting.panel_letters([ax, ax_err])
    plotting.figure_legend(fig, ax)
    return fig


@plotting.styled
def plot_convergence(results: dict[str, Any]):
    """Figure 2: max error against step size, one panel per kind of input, with guides."""
    dts = np.asarray(results["dts"])
    fig, axes = plotting.subplots(1, 3, height=3.7, sharey=True)
    for ax, kind in zip(axes, INPUTS, strict=True):
        notes = []
        for m in METHODS:
            err = np.maximum(np.asarray(results["errors"][kind][m]), ROUNDOFF)
            s = results["slopes"][kind][m]
            ax.loglog(
                dts,
                err,
                marker="o",
                ms=3,
                color=plotting.METHOD_COLORS[m],
                label=plotting.METHOD_LABELS[m],
            )
            notes.append(
                (f"slope {s:.1f}" if s is not None else "round-off only", plotting.METHOD_COLORS[m])
            )
        plotting.slope_guide(ax, dts, 1, (dts[0], 3.0), label="$\\propto \\Delta$")
        plotting.slope_guide(ax, dts, 2, (dts[0], 0.1), label="$\\propto \\Delta^2$", ls="--")
        for i, (text, color) in enumerate(notes):
            ax.text(
                0.97,
                0.5 - 0.07 * i,
                text,
                color=color,
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=8.5,
            )
        ax.axhspan(1e-11, ROUNDOFF, color="0.92", zorder=0)
        plotting.label(ax, "step $\\Delta$", None, INPUT_TITLES[kind])
    axes[0].set_ylabel("largest error $|y_k - y(t_k)|$")
    axes[0].set_ylim(1e-11, 30)
    axes[-1].text(
        0.03,
        0.04,
        "round-off: drawn on the band's edge",
        fontsize=7.5,
        transform=axes[-1].transAxes,
        color="0.35",
    )
    plotting.panel_letters(axes)
    plotting.figure_legend(fig, axes[0])
    return fig


def plot(results: dict[str, Any]):
    """Figure 2 (the convergence orders), the experiment's main result."""
    return plot_convergence(results)
