"""Chapter 4: S4D's kernel ablation, softmax against Vandermonde and ``B`` trained or frozen.

The S4D paper (Gu, Gupta, Goel & Ré, arXiv:2206.11893v2, Table 2, top half) trains small models
on sequential CIFAR-10, Speech Commands and BIDMC with the kernel computed either by S4D's
Vandermonde product or by DSS's softmax (:class:`ssm.layers.S4DConfig` ``kernel``), and ``B``
trained or frozen at its initialization ``1`` (``train_B``): four runs. Everything else is the
default S4D layer (S4D-Inv, ZOH, ``Re A = -exp(A_re)``).

The ``ci`` profile trains one small layer on scikit-learn's digits read pixel by pixel (L = 64,
seconds on a CPU: too small to separate the arms), the ``full`` profile four layers on MNIST-1D
stretched to L = 1024, with two seeds per arm so that the spread between seeds says how large a
gap must be to mean something. This module also holds what the three S4D ablations share: the
base config, the training of a list of arms, the comparison with the paper and the plot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import papers, plotting
from ..layers import BackboneConfig, S4DConfig
from . import hippo_ablation
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_dict, train_config

#: The arms of the ablation: the fields of the layer dict that each run changes.
ARMS = [
    {"kernel": "softmax", "train_B": False},
    {"kernel": "vandermonde", "train_B": False},
    {"kernel": "softmax", "train_B": True},
    {"kernel": "vandermonde", "train_B": True},
]
#: The three tasks of the paper's Table 2 (BIDMC is a regression: RMSE, lower is better).
PAPER_TASKS = {"scifar": "sCIFAR", "sc": "SC", "bidmc_rmse": "BIDMC RMSE"}


def base_config(profile: str) -> dict[str, Any]:
    """What the S4D ablations share: data, backbone, default S4D layer and training."""
    check_profile(profile)
    ci = profile == "ci"
    length = 64 if ci else 1024
    backbone = BackboneConfig(
        d_model=32 if ci else 64, n_layers=1 if ci else 4, norm="layer", prenorm=True,
        dropout=0.0, ff="none", pool="mean",
    )  # fmt: skip
    layer = S4DConfig(d_state=16 if ci else 64, l_max=length)
    training = train_config(
        profile,
        steps=150 if ci else 600,
        batch_size=32 if ci else 64,
        lr=3e-2 if ci else 4e-3,  # the ci model is one small layer trained for seconds
        ssm_lr=1e-3,
        weight_decay=0.01,
        warmup_steps=15 if ci else 60,
        eval_every=25 if ci else 50,
    )
    return {
        "profile": profile,
        "data": hippo_ablation.config(profile)["data"],  # digits (ci), MNIST-1D at L = 1024
        "seed": 0,
        "threads": 1 if ci else None,  # one CPU thread: two fight over a shared 2-core machine
        "backbone": dataclasses.asdict(backbone),
        "layer": layer_dict("s4d", layer),
        "train": dataclasses.asdict(training),
        "seeds": [0] if ci else [0, 1],
    }


def config(profile: str = "ci") -> dict[str, Any]:
    return base_config(profile) | {"arms": ARMS}


def label(arm: dict[str, Any]) -> str:
    """A run's name: the fields its arm sets, in words."""
    words = {
        "kernel": lambda v: v,
        "train_B": lambda v: "B trained" if v else "B frozen",
        "discretization": lambda v: "ZOH" if v == "zoh" else v,
        "real_transform": lambda v: {"exp": "Re A = -exp", "relu": "Re A = -relu"}.get(
            v, "Re A free"
        ),
    }
    return ", ".join(words[k](v) for k, v in arm.items() if k in words)


def train_arms(
    cfg: dict[str, Any], arms: list[dict[str, Any]], name: str, labels: list[str]
) -> dict[str, Any]:
    """Train one model per arm and seed (the arm's fields set on ``cfg["layer"]``; the seed
    offsets the training seed, hence the initialization and the batches, not the data); the
    runs carry their arm's fields, ``label`` and ``seed``."""
    train_set, val_set = datasets(cfg["data"], cfg["seed"])
    jobs = [(arm, lab, seed) for arm, lab in zip(arms, labels, strict=True)
            for seed in cfg["seeds"]]  # fmt: skip
    runs = []
    with threads(cfg):
        for arm, lab, seed in progress(jobs, cfg, name):
            training = {**cfg["train"], "seed": cfg["train"]["seed"] + seed}
            result = fit(train_set, val_set, cfg["backbone"], {**cfg["layer"], **arm}, training)
            runs.append({**arm, "label": lab, "seed": seed, **result})
    return {
        "data": {"name": train_set.name, "length": train_set.seq_len, "train": len(train_set),
                 "validation": len(val_set), "classes": train_set.n_classes},
        "runs": runs,
    }  # fmt: skip


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    return train_arms(cfg, cfg["arms"], "S4D kernel ablation", [label(a) for a in cfg["arms"]])


def final_accuracy(results: dict[str, Any]) -> dict[str, list[float | None]]:
    """Final validation accuracy (%) of each label's runs, one per seed; ``None`` for a run
    that diverged."""
    acc: dict[str, list[float | None]] = {}
    for r in results["runs"]:
        value = None if r.get("diverged") else 100 * r["final"]["val_accuracy"]
        acc.setdefault(r["label"], []).append(value)
    return acc


def mean(values: list[float | None]) -> float | None:
    """The mean of a label's runs, ``None`` when one of them diverged."""
    return None if any(v is None for v in values) else float(np.mean(values))


def seed_spread(results: dict[str, Any]) -> float | None:
    """The largest difference between two seeds of one arm (accuracy points): gaps between
    arms smaller than this are not resolved. ``None`` with one seed per arm."""
    spreads = [max(v) - min(v) for v in final_accuracy(results).values()
               if len(v) > 1 and None not in v]  # fmt: skip
    return max(spreads) if spreads else None


def verdict(ours: float | None, paper: float, claim: str, spread: float | None) -> str:
    """Whether this run's gap ``ours`` (points) agrees with the paper's gap ``paper``.

    ``claim`` is ``"differ"`` (the paper's arms differ in the sign of ``paper``) or ``"same"``
    (the paper finds no notable difference). Without a seed spread, or with a gap inside it,
    the run cannot separate the arms and says so.
    """
    if ours is None:
        return "a run diverged: no comparison"
    if spread is None:
        return "one seed per arm: this run cannot separate the arms"
    resolved = abs(ours) > spread
    if claim == "same":
        return "agrees (no gap beyond the seed spread)" if not resolved else "disagrees"
    if not resolved:
        return "gap within the seed spread: not resolved"
    return "agrees" if np.sign(ours) == np.sign(paper) else "disagrees"


def paper_rows(ablation: str) -> list[dict[str, Any]]:
    """The rows of the S4D paper's Table 2 of one half (``kernel_B`` or
    ``discretization_real``), from ``data/papers/s4d_ablations.csv``."""
    return [r for r in papers.table("s4d_ablations") if r["ablation"] == ablation]


def _paper_row(arm: dict[str, Any]) -> dict[str, Any]:
    key = {"kernel": arm["kernel"], "B": "trained" if arm["train_B"] else "frozen"}
    return next(r for r in paper_rows("kernel_B") if all(r[k] == v for k, v in key.items()))


def comparison_table(results: dict[str, Any], arms: list[dict[str, Any]], row) -> str:
    """Per arm: the paper's three numbers (``row(arm)``, a Table 2 row) beside this run's final
    validation accuracy (mean over seeds, and each seed)."""
    acc = final_accuracy(results)
    lines = [
        f"{'':<30} {'paper (S4D Table 2)':^28}  {'this run, val. acc. %':^22}",
        f"{'arm':<30} {'sCIFAR':>8} {'SC':>8} {'BIDMC':>10}  {'mean':>6}  per seed",
    ]
    for arm in arms:
        lab = label(arm)
        p = row(arm)
        m = mean(acc[lab])
        seeds = " ".join("div" if v is None else f"{v:.1f}" for v in acc[lab])
        mean_text = "div" if m is None else f"{m:.1f}"
        lines.append(
            f"{lab:<30} {p['scifar']:>8.2f} {p['sc']:>8.2f} {p['bidmc_rmse']:>10.4f}  "
            f"{mean_text:>6}  {seeds}"
        )
    lines.append("paper: test accuracy % (sCIFAR, SC) and RMSE (BIDMC, lower is better)")
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """This run beside the paper's Table 2, top half."""
    return comparison_table(results, ARMS, _paper_row)


def _gap(acc: dict[str, list[float | None]], a: str, b: str) -> float | None:
    ma, mb = mean(acc[a]), mean(acc[b])
    return None if ma is None or mb is None else ma - mb


def finding_line(name: str, paper: float, ours: float | None, claim: str, spread) -> str:
    """One finding: the paper's gap (sCIFAR points), ours, and the verdict."""
    ours_text = "n/a" if ours is None else f"{ours:+.1f}"
    return (
        f"{name}: paper {paper:+.2f}, this run {ours_text} -> {verdict(ours, paper, claim, spread)}"
    )


def findings(results: dict[str, Any]) -> str:
    """Findings 1 and 2 of the seed: the gaps averaged over the other factor, paper (sCIFAR)
    and this run, with the verdict."""
    acc = final_accuracy(results)
    paper = {(r["kernel"], r["B"]): r["scifar"] for r in paper_rows("kernel_B")}
    spread = seed_spread(results)

    def both(f):
        values = [f(b) for b in (False, True)]
        return None if None in values else float(np.mean(values))

    kernel_ours = both(lambda b: _gap(acc, label(ARMS[0 + 2 * b]), label(ARMS[1 + 2 * b])))
    kernel_paper = float(np.mean([paper["softmax", b] - paper["vandermonde", b]
                                  for b in ("frozen", "trained")]))  # fmt: skip
    b_ours = both(lambda k: _gap(acc, label(ARMS[2 + k]), label(ARMS[k])))
    b_paper = float(np.mean([paper[k, "trained"] - paper[k, "frozen"]
                             for k in ("softmax", "vandermonde")]))  # fmt: skip
    spread_text = "n/a (one seed)" if spread is None else f"{spread:.1f} points"
    return "\n".join([
        f"largest spread between seeds of one arm: {spread_text}",
        finding_line("(1) softmax - Vandermonde", kernel_paper, kernel_ours, "same", spread),
        finding_line("(2) B trained - B frozen", b_paper, b_ours, "differ", spread),
    ])  # fmt: skip


@plotting.styled
def plot_arms(results: dict[str, Any], title: str, style):
    """Validation accuracy against training steps, one curve per run; ``style(run)`` gives
    ``(color, linestyle)``. Seeds after the first are drawn thinner."""
    fig, ax = plotting.subplots(1, 1, width=5.0, height=3.2)
    for r in results["runs"]:
        color, ls = style(r)
        steps = [h["step"] for h in r["history"]]
        acc = [100 * h["val_accuracy"] for h in r["history"]]
        first = r["seed"] == results["runs"][0]["seed"]
        ax.plot(steps, acc, color=color, ls=ls, lw=1.6 if first else 0.8,
                label=r["label"] if first else None)  # fmt: skip
        if r.get("diverged"):  # a cross where the loss stopped being finite
            ax.plot([r["diverged"]["step"]], [acc[-1] if acc else 0.0], "x", color=color,
                    ms=7, mew=2)  # fmt: skip
    plotting.label(ax, "training step", "validation accuracy (%)", title)
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def plot(results: dict[str, Any]):
    """The four runs: colour by kernel, solid for ``B`` trained, dashed for frozen."""
    colors = {"softmax": plotting.PALETTE["orange"], "vandermonde": plotting.PALETTE["blue"]}
    return plot_arms(
        results,
        "kernel and B (S4D Table 2, top)",
        lambda r: (colors[r["kernel"]], "-" if r["train_B"] else "--"),
    )
