"""Chapter 4: S4D's initializations and the paper's perturbations of them.

The S4D paper (arXiv:2206.11893v2, Section 5) compares its three initializations of ``A``,
S4D-LegS (the diagonal part of HiPPO-LegS in NPLR form), S4D-Inv and S4D-Lin
(:func:`ssm.layers._diagonal.diagonal_init`), and perturbs them: the imaginary parts scaled by a
constant, the imaginary parts drawn at random (``Im A ~ U[0, N/2)``), the real parts drawn at
random (``Re A ~ -U(0, 1)``), or both. Here the perturbations are applied to S4D-Inv, the
layer's default; the rest of the layer, the data, the model and the training are those of
:mod:`ssm.experiments.s4d_kernel_ablation`. The paper's numbers for these variants are not
reproduced in this book (no source of them could be checked); only this rerun is reported.
"""

from __future__ import annotations

from typing import Any

from .. import plotting
from .s4d_kernel_ablation import (
    _gap,
    base_config,
    final_accuracy,
    mean,
    plot_arms,
    seed_spread,
    train_arms,
)

#: The arms by label: the fields of the layer dict each run sets.
ARMS = {
    "S4D-LegS": {"init": "legs"},
    "S4D-Inv": {"init": "inv"},
    "S4D-Lin": {"init": "lin"},
    "Inv, Im A x 0.1": {"init": "inv", "imag_scale": 0.1},
    "Inv, Im A x 10": {"init": "inv", "imag_scale": 10.0},
    "Inv, random Im A": {"init": "inv", "random_imag": True},
    "Inv, random Re A": {"init": "inv", "random_real": True},
    "Inv, random Re and Im": {"init": "inv", "random_real": True, "random_imag": True},
}
BASELINES = ("S4D-LegS", "S4D-Inv", "S4D-Lin")
COLORS = {
    "S4D-LegS": plotting.PALETTE["black"],
    "S4D-Inv": plotting.PALETTE["blue"],
    "S4D-Lin": plotting.PALETTE["green"],
    "Inv, Im A x 0.1": plotting.PALETTE["orange"],
    "Inv, Im A x 10": plotting.PALETTE["vermillion"],
    "Inv, random Im A": plotting.PALETTE["purple"],
    "Inv, random Re A": plotting.PALETTE["sky"],
    "Inv, random Re and Im": plotting.PALETTE["yellow"],
}


def config(profile: str = "ci") -> dict[str, Any]:
    return base_config(profile) | {"arms": ARMS}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    labels = list(cfg["arms"])
    return train_arms(cfg, [cfg["arms"][k] for k in labels], "S4D init ablation", labels)


def summary(results: dict[str, Any]) -> str:
    """Final validation accuracy of every arm (mean over seeds, and each seed), and its gap to
    S4D-Inv, whose perturbations the last five are."""
    acc = final_accuracy(results)
    lines = [f"{'initialization of A':<24} {'mean %':>7} {'vs Inv':>7}  per seed"]
    for lab, values in acc.items():
        m, gap = mean(values), _gap(acc, lab, "S4D-Inv")
        seeds = " ".join("div" if v is None else f"{v:.1f}" for v in values)
        m_text = "div" if m is None else f"{m:.1f}"
        gap_text = "" if lab == "S4D-Inv" else ("n/a" if gap is None else f"{gap:+.1f}")
        lines.append(f"{lab:<24} {m_text:>7} {gap_text:>7}  {seeds}")
    return "\n".join(line.rstrip() for line in lines)


def findings(results: dict[str, Any]) -> str:
    """Finding 5 of the seed (every perturbation does worse than the initialization it
    perturbs): per perturbation, this run's gap to S4D-Inv and whether it is beyond the spread
    between seeds."""
    acc = final_accuracy(results)
    spread = seed_spread(results)
    spread_text = "n/a (one seed)" if spread is None else f"{spread:.1f} points"
    lines = [f"largest spread between seeds of one arm: {spread_text}"]
    for lab in acc:
        if lab in BASELINES:
            continue
        gap = _gap(acc, lab, "S4D-Inv")
        if gap is None:
            word = "a run diverged (worse, as the seed says)"
        elif spread is None:
            word = "one seed per arm: not resolved"
        elif abs(gap) <= spread:
            word = "within the seed spread: not resolved"
        else:
            word = "worse, as the seed says" if gap < 0 else "better: the seed's claim fails"
        gap_text = "n/a" if gap is None else f"{gap:+.1f}"
        lines.append(f"(5) {lab} - S4D-Inv: this run {gap_text} -> {word}")
    return "\n".join(lines)


def plot(results: dict[str, Any]):
    """The eight runs: the three initializations solid, the perturbations of S4D-Inv dashed."""
    return plot_arms(
        results,
        "initializations of A",
        lambda r: (COLORS[r["label"]], "-" if r["label"] in BASELINES else "--"),
    )
