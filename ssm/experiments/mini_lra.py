"""Chapter 2: a reduced Long Range Arena, ListOps and Pathfinder generated here, for S4 v2.

Both tasks are generated procedurally (:func:`ssm.tasks.listops`, :func:`ssm.tasks.pathfinder`),
so the benchmark runs offline; they are smaller than LRA's (fewer and shorter sequences) and
the numbers are this book's, not comparable one to one with the paper's table, which the
chapter prints beside them. The model is the S4 layer as updated in 2022 (NPLR, HiPPO-LegS
initialization, bidirectional, log-uniform ``Δ``) on the shared backbone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import papers, plotting
from ..layers import BackboneConfig, S4Config
from ..train import TrainConfig
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_dict

TASKS = {"listops": "ListOps", "pathfinder": "Pathfinder"}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    listops = (
        {"source": "listops", "n_train": 1000, "n_val": 300, "max_depth": 3, "max_args": 5,
         "min_length": 16, "max_length": 64}
        if ci
        else {"source": "listops", "n_train": 40000, "n_val": 2000, "max_depth": 10,
              "max_args": 10, "min_length": 100, "max_length": 512}
    )  # fmt: skip
    pathfinder = (
        {"source": "pathfinder", "n_train": 1000, "n_val": 300, "size": 16}
        if ci
        else {"source": "pathfinder", "n_train": 40000, "n_val": 2000, "size": 32}
    )
    tasks = {"listops": listops, "pathfinder": pathfinder}
    # Pathfinder needs many more images than ListOps before S4 leaves chance: the full profile
    # trains it with 4x larger batches (a step costs about the same on a GPU) and BatchNorm, as
    # the S4 authors' LRA configs do.
    batch = {"listops": 64, "pathfinder": 256}
    ci_steps = {"listops": 100, "pathfinder": 60}  # a CPU shows that it runs, not what it learns
    norm = {"listops": "layer", "pathfinder": "batch"}
    runs = {}
    for name, spec in tasks.items():
        length = spec.get("max_length", spec.get("size", 0) ** 2)
        runs[name] = {
            "data": spec,
            "backbone": dataclasses.asdict(
                BackboneConfig(
                    d_model=32 if ci else 128, n_layers=2 if ci else 4,
                    norm="layer" if ci else norm[name],
                    prenorm=True, dropout=0.0, ff="none", pool="mean",
                )
            ),
            "layer": layer_dict(
                "s4", S4Config(d_state=32 if ci else 64, l_max=length, bidirectional=True)
            ),
            "train": dataclasses.asdict(
                TrainConfig(
                    steps=ci_steps[name] if ci else 3000,
                    batch_size=16 if ci else batch[name], lr=4e-3,
                    ssm_lr=1e-3, weight_decay=0.05, warmup_steps=15 if ci else 300,
                    eval_every=20 if ci else 250, seed=0, device="cpu" if ci else "auto",
                    deterministic=ci,
                    progress=not ci,
                )
            ),
        }  # fmt: skip
    return {"profile": profile, "seed": 0, "threads": 1 if ci else None, "tasks": runs}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, spec in progress(cfg["tasks"].items(), cfg, "mini-LRA"):
        train_set, val_set = datasets(spec["data"], cfg["seed"])
        with threads(cfg):
            result = fit(train_set, val_set, spec["backbone"], spec["layer"], spec["train"])
        out[name] = {
            **result,
            "length": train_set.seq_len,
            "train": len(train_set),
            "validation": len(val_set),
            "chance": float(np.bincount(val_set.targets.numpy()).max() / len(val_set)),
        }
    return {"tasks": out}


def summary(results: dict[str, Any]) -> str:
    """Validation accuracy (%) per task beside its chance level, with the data's size."""
    lines = [f"{'task':<11} {'L':>5} {'train':>6} {'accuracy':>9} {'chance':>7}"]
    for name, r in results["tasks"].items():
        lines.append(
            f"{TASKS[name]:<11} {r['length']:>5} {r['train']:>6} "
            f"{100 * r['final']['val_accuracy']:>9.1f} {100 * r['chance']:>7.1f}"
        )
    return "\n".join(lines)


def paper_comparison(results: dict[str, Any]) -> str:
    """This run's accuracy (%) per task beside the published S4 v1 and v2 numbers on the full
    LRA tasks (``data/papers/s4_lra.csv``)."""
    rows = {r["model"]: r for r in papers.table("s4_lra")}
    v1, v2 = rows["S4 (original v1)"], rows["S4 (updated v2)"]
    lines = [f"{'task':<11} {'S4 v1':>6} {'S4 v2':>6} {'this run':>9}  (our L, train set)"]
    for name, r in results["tasks"].items():
        ours = r["final"]["val_accuracy"]
        lines.append(
            f"{TASKS[name]:<11} {v1[name]:>6.2f} {v2[name]:>6.2f} "
            f"{'div' if ours is None else f'{100 * ours:.1f}':>9}  ({r['length']}, {r['train']:,})"
        )
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """Validation accuracy against training steps, one panel per task, chance level dotted."""
    names = list(results["tasks"])
    fig, axes = plotting.subplots(1, len(names), height=2.8)
    for ax, name in zip(np.ravel(axes), names, strict=True):
        r = results["tasks"][name]
        steps = [h["step"] for h in r["history"]]
        ax.plot(steps, [100 * h["val_accuracy"] for h in r["history"]],
                color=plotting.COLORS["s4"], label="S4 (v2)")  # fmt: skip
        ax.axhline(100 * r["chance"], color=plotting.PALETTE["black"], ls=":", label="chance")
        plotting.label(
            ax, "training step", "validation accuracy (%)", f"{TASKS[name]}, L = {r['length']}"
        )
    plotting.panel_letters(axes)
    plotting.figure_legend(fig, np.ravel(axes)[0])
    return fig
