"""Chapter 5: the 2022 layers side by side, on one long-range task at one parameter budget.

Eight layers on the shared backbone (:class:`ssm.layers.Backbone`), trained the same way on the
same data: S4, DSS, S4D, GSS, S5, Liquid-S4, Mega and SGConv (the training kinds of
:data:`ssm.experiments._training.LAYERS`). Each model's width ``d_model`` is chosen by
:func:`width_for_budget` so that its trained parameters are as close as the widths allow to one
common budget (within :data:`TOLERANCE`): what is compared is what a layer does with the same
number of parameters, not how wide it is.

The task is Chapter 2's long-range classification task (the data config of
:mod:`ssm.experiments.hippo_ablation`): scikit-learn's digits read pixel by pixel (L = 64) in
the ``ci`` profile, tiny models trained for seconds, too small to rank the layers reliably
(GSS, whose output is the product of two branches that start small, stays near chance for its
first hundred steps there and leaves the plateau later than the others); MNIST-1D stretched to
L = 1024 in the ``full`` one (about 100K parameters, one GPU). Each run records its final
validation accuracy, its parameter count and its training time per step (from the history's
``elapsed_s``). The papers' LRA averages are printed beside, where :mod:`ssm.papers` has a
table for the layer. The times vary from run to run: :func:`summary` and :func:`plot` leave them
out with ``timing=False``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import papers, plotting
from ..layers import (
    Backbone,
    BackboneConfig,
    DSSConfig,
    GSSConfig,
    LiquidS4Config,
    MegaConfig,
    S4Config,
    S4DConfig,
    S5Config,
    SGConvConfig,
    parameter_count,
)
from . import hippo_ablation
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_config, layer_dict, train_config

#: The layers compared, by training kind, with their names.
MODELS = {
    "s4": "S4",
    "dss": "DSS",
    "s4d": "S4D",
    "gss": "GSS",
    "s5": "S5",
    "liquid_s4": "Liquid-S4",
    "mega": "Mega",
    "sgconv": "SGConv",
}
COLORS = dict(zip(MODELS, plotting.PALETTE.values(), strict=False))
#: Largest relative distance of a model's trained parameters from the budget.
TOLERANCE = 0.15
#: The widths :func:`width_for_budget` chooses among: even, as some layers need.
WIDTHS = range(4, 513, 2)
#: Where a layer's LRA average is in :mod:`ssm.papers`: ``(table, row)``. The layers missing
#: here have no row in ``data/papers``: GSS reports no LRA results, and for Liquid-S4 only the
#: average of its abstract (87.32) was seen, without its tasks.
PAPER_ROWS = {
    "s4": ("s4_lra", "S4 (updated v2)"),
    "dss": ("dss_lra", "DSS-exp"),
    "s4d": ("s4d_lra", "S4D-Inv"),
    "mega": ("lra_2022", "Mega"),
    "s5": ("lra_2022", "S5"),
    "sgconv": ("lra_2022", "SGConv"),
}


def layers(profile: str) -> dict[str, Any]:
    """The layer config of every model of :data:`MODELS` in ``profile`` (``l_max`` left to the
    data set): small states in ``ci``, the defaults' order of size in ``full``."""
    ci = profile == "ci"
    N = 16 if ci else 64
    return {
        "s4": S4Config(d_state=N),
        "dss": DSSConfig(d_state=N),
        "s4d": S4DConfig(d_state=N),
        "gss": GSSConfig(d_ssm=16 if ci else 32, expansion=2, d_state=N),
        "s5": S5Config(d_state=N),
        "liquid_s4": LiquidS4Config(d_state=N),
        "mega": MegaConfig(d_state=8 if ci else 16, d_qk=16 if ci else 32),
        "sgconv": SGConvConfig(kernel_dim=16 if ci else 32),
    }


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    ablation = hippo_ablation.config(profile)
    backbone = BackboneConfig(
        d_model=32, n_layers=1 if ci else 4, norm="layer", prenorm=True, dropout=0.0,
        ff="none", pool="mean",
    )  # fmt: skip
    training = train_config(
        profile,
        steps=150 if ci else 600,
        batch_size=32 if ci else 64,
        lr=2e-2 if ci else 4e-3,
        ssm_lr=1e-3,
        weight_decay=0.01,
        warmup_steps=20 if ci else 60,
        eval_every=50 if ci else 100,
    )
    return {
        "profile": profile,
        "data": ablation["data"],
        "seed": 0,
        "threads": 1 if ci else None,
        "budget": 6_000 if ci else 100_000,
        "backbone": dataclasses.asdict(backbone),
        "layers": {kind: layer_dict(kind, cfg) for kind, cfg in layers(profile).items()},
        "train": dataclasses.asdict(training),
    }


def count(backbone: dict[str, Any], layer: dict[str, Any], d_model: int, dataset) -> int:
    """Trained parameters of the backbone at width ``d_model`` around ``layer`` for
    ``dataset``."""
    cfg = BackboneConfig(**{**backbone, "d_model": d_model})
    return parameter_count(Backbone.for_data(cfg, layer_config(layer), dataset))["total"]


def width_for_budget(
    backbone: dict[str, Any], layer: dict[str, Any], budget: int, dataset, widths=WIDTHS
) -> tuple[int, int]:
    """``(d_model, parameters)``: the width of ``widths`` (increasing; :data:`WIDTHS` by
    default) whose model has the trained parameter count nearest ``budget``, by bisection (the
    count grows with the width)."""
    widths = list(widths)
    lo, hi = 0, len(widths) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(backbone, layer, widths[mid], dataset) < budget:
            lo = mid
        else:
            hi = mid
    candidates = {w: count(backbone, layer, w, dataset) for w in (widths[lo], widths[hi])}
    best = min(candidates, key=lambda w: abs(candidates[w] - budget))
    return best, candidates[best]


def ms_per_step(history: list[dict[str, Any]]) -> float:
    """Training time per step (ms) between the first and the last evaluation of a history
    (evaluations are included; the first step's warm-up is not)."""
    first, last = history[0], history[-1]
    steps = last["step"] - first["step"]
    if steps <= 0:
        return 1e3 * last["elapsed_s"] / max(last["step"], 1)
    return 1e3 * (last["elapsed_s"] - first["elapsed_s"]) / steps


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    train_set, val_set = datasets(cfg["data"], cfg["seed"])
    runs = {}
    with threads(cfg):
        for kind, layer in progress(cfg["layers"].items(), cfg, "2022 layers"):
            width, _ = width_for_budget(cfg["backbone"], layer, cfg["budget"], train_set)
            backbone = {**cfg["backbone"], "d_model": width}
            r = fit(train_set, val_set, backbone, layer, cfg["train"])
            runs[kind] = {
                "d_model": width,
                "accuracy": None if r["diverged"] else r["final"]["val_accuracy"],
                "parameters": r["parameters"]["total"],
                "ms_per_step": ms_per_step(r["history"]),
                "history": r["history"],
                "diverged": r["diverged"],
            }
    return {
        "data": {"name": train_set.name, "length": train_set.seq_len, "train": len(train_set),
                 "validation": len(val_set), "classes": train_set.n_classes},
        "budget": cfg["budget"],
        "runs": runs,
    }  # fmt: skip


def paper_average(kind: str) -> float | None:
    """The published LRA average of layer ``kind`` (:data:`PAPER_ROWS`), ``None`` where
    :mod:`ssm.papers` has no table for it."""
    if kind not in PAPER_ROWS:
        return None
    table, model = PAPER_ROWS[kind]
    return next(r["avg"] for r in papers.table(table) if r["model"] == model)


def kinds(results: dict[str, Any]) -> list[str]:
    """The layers of ``results`` in the order of :data:`MODELS` (a stored record's keys are
    sorted)."""
    return [k for k in MODELS if k in results["runs"]]


def summary(results: dict[str, Any], timing: bool = True) -> str:
    """One line per layer: width, trained parameters, final validation accuracy (%), training
    time per step (ms, left out with ``timing=False``) and the paper's LRA average ("n/a" where
    none is stored)."""
    d = results["data"]
    ms = f" {'ms/step':>8}" if timing else ""
    lines = [
        f"{d['name']}, L = {d['length']}, budget {results['budget']:,} parameters",
        f"{'layer':<10} {'d_model':>7} {'params':>8} {'acc (%)':>8}{ms} {'LRA avg (paper)':>16}",
    ]
    for kind in kinds(results):
        r = results["runs"][kind]
        acc = "div" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
        avg = paper_average(kind)
        ms = f" {r['ms_per_step']:>8.1f}" if timing else ""
        lines.append(
            f"{MODELS[kind]:<10} {r['d_model']:>7} {r['parameters']:>8,} {acc:>8}{ms} "
            f"{'n/a' if avg is None else f'{avg:.2f}':>16}"
        )
    return "\n".join(lines)


def _accuracy_panel(ax, results: dict[str, Any]) -> None:
    """Final validation accuracy against trained parameters, one point per layer (a cross at 0
    for a run that diverged), the budget dashed."""
    for kind in kinds(results):
        r = results["runs"][kind]
        acc = 0.0 if r["accuracy"] is None else 100 * r["accuracy"]
        ax.plot([r["parameters"]], [acc], "o" if r["accuracy"] is not None else "x",
                color=COLORS[kind], ms=7, label=MODELS[kind])  # fmt: skip
        ax.annotate(MODELS[kind], (r["parameters"], acc), textcoords="offset points",
                    xytext=(4, 3), fontsize="x-small")  # fmt: skip
    ax.axvline(results["budget"], color=plotting.PALETTE["black"], ls="--", lw=1)
    plotting.label(ax, "trained parameters", "validation accuracy (%)", "accuracy at the budget")


def _timing_panel(ax, results: dict[str, Any]) -> None:
    """Training time per step of each layer, as bars."""
    order = kinds(results)
    x = np.arange(len(order))
    ax.bar(x, [results["runs"][k]["ms_per_step"] for k in order],
           color=[COLORS[k] for k in order])  # fmt: skip
    ax.set_xticks(x, [MODELS[k] for k in order], rotation=45, ha="right")
    plotting.label(ax, "layer", "ms per training step", "training time")


@plotting.styled
def plot(results: dict[str, Any], timing: bool = True):
    """(a) final validation accuracy against trained parameters, one point per layer, the
    budget dashed; (b) training time per step of each layer, as bars (left out with
    ``timing=False``: the one panel is then the same on every run of the same results)."""
    if not timing:
        fig, ax = plotting.subplots(1, 1, width=5.0, height=3.4)
        _accuracy_panel(ax, results)
        return fig
    fig, (ax, bx) = plotting.subplots(1, 2, height=3.4)
    _accuracy_panel(ax, results)
    _timing_panel(bx, results)
    plotting.panel_letters([ax, bx])
    return fig
