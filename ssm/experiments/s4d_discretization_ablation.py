"""Chapter 4: S4D's discretization ablation, ZOH against bilinear and the real part of ``A``.

The S4D paper (arXiv:2206.11893v2, Table 2, bottom half) trains the S4D layer with ``(Ā, B̄)``
from the zero-order hold or the bilinear transform (:class:`ssm.layers.S4DConfig`
``discretization``) and with the real part of ``A`` kept negative by ``-exp`` or ``-relu`` of
its parameter, or left free (``real_transform`` ``"none"``): six runs, the rest of the layer at
S4D's defaults (S4D-Inv, Vandermonde kernel, ``B`` trained). Data, model and training are
those of :mod:`ssm.experiments.s4d_kernel_ablation` (``ci``: digits, L = 64, one seed; ``full``:
MNIST-1D at L = 1024, two seeds per arm).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import plotting
from .s4d_kernel_ablation import (
    _gap,
    base_config,
    comparison_table,
    final_accuracy,
    finding_line,
    label,
    paper_rows,
    plot_arms,
    seed_spread,
    train_arms,
)

DISCRETIZATIONS = ("bilinear", "zoh")
REAL_TRANSFORMS = ("exp", "relu", "none")
#: The six arms, in the paper's order.
ARMS = [
    {"discretization": d, "real_transform": r} for d in DISCRETIZATIONS for r in REAL_TRANSFORMS
]


def config(profile: str = "ci") -> dict[str, Any]:
    return base_config(profile) | {"arms": ARMS}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    return train_arms(
        cfg, cfg["arms"], "S4D discretization ablation", [label(a) for a in cfg["arms"]]
    )


def _paper_row(arm: dict[str, Any]) -> dict[str, Any]:
    return next(
        r
        for r in paper_rows("discretization_real")
        if r["discretization"] == arm["discretization"] and r["real_part"] == arm["real_transform"]
    )


def summary(results: dict[str, Any]) -> str:
    """This run beside the paper's Table 2, bottom half."""
    return comparison_table(results, ARMS, _paper_row)


def _arm_label(discretization: str, real: str) -> str:
    return label({"discretization": discretization, "real_transform": real})


def findings(results: dict[str, Any]) -> str:
    """Findings 3 and 4 of the seed, paper (sCIFAR points) and this run, with the verdict:
    (3) bilinear minus ZOH, averaged over the real parts; (4) the free real part minus the
    better of the two restricted ones, averaged over the discretizations."""
    acc = final_accuracy(results)
    paper = {(r["discretization"], r["real_part"]): r["scifar"]
             for r in paper_rows("discretization_real")}  # fmt: skip
    spread = seed_spread(results)

    def average(values):
        return None if None in values else float(np.mean(values))

    disc_ours = average([_gap(acc, _arm_label("bilinear", r), _arm_label("zoh", r))
                         for r in REAL_TRANSFORMS])  # fmt: skip
    disc_paper = float(np.mean([paper["bilinear", r] - paper["zoh", r] for r in REAL_TRANSFORMS]))

    def free_gap(d: str) -> float | None:
        gaps = [_gap(acc, _arm_label(d, "none"), _arm_label(d, r)) for r in ("exp", "relu")]
        return None if None in gaps else min(gaps)

    real_ours = average([free_gap(d) for d in DISCRETIZATIONS])
    real_paper = float(np.mean([paper[d, "none"] - max(paper[d, "exp"], paper[d, "relu"])
                                for d in DISCRETIZATIONS]))  # fmt: skip
    spread_text = "n/a (one seed)" if spread is None else f"{spread:.1f} points"
    return "\n".join([
        f"largest spread between seeds of one arm: {spread_text}",
        finding_line("(3) bilinear - ZOH", disc_paper, disc_ours, "same", spread),
        finding_line("(4) Re A free - best restricted", real_paper, real_ours, "differ", spread),
    ])  # fmt: skip


def plot(results: dict[str, Any]):
    """The six runs: colour by the real part, solid for bilinear, dashed for ZOH."""
    colors = dict(zip(REAL_TRANSFORMS, (plotting.PALETTE[c] for c in ("blue", "orange", "green")),
                      strict=True))  # fmt: skip
    return plot_arms(
        results,
        "discretization and Re A (S4D Table 2, bottom)",
        lambda r: (colors[r["real_transform"]], "-" if r["discretization"] == "bilinear" else "--"),
    )
