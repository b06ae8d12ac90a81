"""Chapter 3: DSS-exp and DSS-softmax against S4, trained the same way on the same tasks.

Three layers on the shared backbone, with the same backbone, state size and training budget on
each task: S4 (NPLR, HiPPO-LegS, kind ``"s4"``), DSS-exp and DSS-softmax (kind ``"dss"``, ``Λ``
from HiPPO-LegS's normal part). The tasks are

- the long-range classification task of Chapter 2's HiPPO ablation (its data config, imported
  from :mod:`ssm.experiments.hippo_ablation`): scikit-learn's digits read pixel by pixel (L = 64)
  in the ``ci`` profile, MNIST-1D stretched to L = 1024 in the ``full`` one;
- the two tasks of the mini-LRA (:mod:`ssm.experiments.mini_lra`, whose task configs, backbones
  and training settings are imported): ListOps and Pathfinder, generated offline. The ``full``
  profile trains each for 1000 steps rather than mini-LRA's 3000, for the three layers alike.

The DSS paper's Table 1 (LRA) and Table 2 (Speech Commands) are printed beside the reruns
(:mod:`ssm.papers`), with S4 as run by the DSS authors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import papers, plotting
from ..layers import DSSConfig, S4Config
from . import hippo_ablation, mini_lra
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_dict

#: The layers compared, by key, with their names in the DSS paper's tables.
MODELS = {"s4": "S4", "dss_exp": "DSS-exp", "dss_softmax": "DSS-softmax"}
COLORS = {
    "s4": plotting.COLORS["s4"],
    "dss_exp": plotting.PALETTE["blue"],
    "dss_softmax": plotting.PALETTE["orange"],
}
#: The task names, and the LRA column each is compared with (the long-range task, an image read
#: pixel by pixel, with LRA's Image, sequential CIFAR-10).
TASKS = {"long_range": "Long range", "listops": "ListOps", "pathfinder": "Pathfinder"}
PAPER_COLUMNS = {"long_range": "image", "listops": "listops", "pathfinder": "pathfinder"}
#: The rows of the DSS paper's Table 1 for each model (S4 as the DSS authors ran it).
PAPER_ROWS = {"s4": "S4 (as run by the DSS authors)", "dss_exp": "DSS-exp",
              "dss_softmax": "DSS-softmax"}  # fmt: skip
FULL_LRA_STEPS = 1000


def layer(model: str, d_state: int, length: int, bidirectional: bool) -> dict[str, Any]:
    """The layer dict of one of :data:`MODELS` at a task's state size and length."""
    if model == "s4":
        return layer_dict("s4", S4Config(d_state=d_state, l_max=length,
                                         bidirectional=bidirectional))  # fmt: skip
    variant = model.removeprefix("dss_")
    return layer_dict("dss", DSSConfig(d_state=d_state, l_max=length, variant=variant,
                                       bidirectional=bidirectional))  # fmt: skip


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    ablation = hippo_ablation.config(profile)
    tasks = {
        "long_range": {
            "data": ablation["data"],
            "backbone": ablation["backbone"],
            # Chapter 2 slowed its SSM parameters down for a dense trained A; none here.
            "train": {**ablation["train"], "ssm_lr": 1e-3},
            "d_state": ablation["layer"]["d_state"],
            "length": ablation["layer"]["l_max"],
            "bidirectional": False,
        }
    }
    for name, spec in mini_lra.config(profile)["tasks"].items():
        train = dict(spec["train"])
        if not ci:
            train |= {"steps": FULL_LRA_STEPS, "warmup_steps": 100, "eval_every": 100}
        tasks[name] = {
            "data": spec["data"],
            "backbone": spec["backbone"],
            "train": train,
            "d_state": spec["layer"]["d_state"],
            "length": spec["layer"]["l_max"],
            "bidirectional": spec["layer"]["bidirectional"],
        }
    return {"profile": profile, "seed": 0, "threads": 1 if ci else None,
            "models": list(MODELS), "tasks": tasks}  # fmt: skip


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, task in progress(cfg["tasks"].items(), cfg, "DSS vs S4"):
        train_set, val_set = datasets(task["data"], cfg["seed"])
        runs = {}
        with threads(cfg):
            for model in cfg["models"]:
                spec = layer(model, task["d_state"], task["length"], task["bidirectional"])
                runs[model] = fit(train_set, val_set, task["backbone"], spec, task["train"])
        out[name] = {
            "data": train_set.name,
            "length": train_set.seq_len,
            "train": len(train_set),
            "validation": len(val_set),
            "chance": float(np.bincount(val_set.targets.numpy()).max() / len(val_set)),
            "runs": runs,
        }
    return {"tasks": out}


def final_accuracy(results: dict[str, Any]) -> dict[tuple[str, str], float | None]:
    """Final validation accuracy (%) by ``(task, model)``; ``None`` for a run that diverged."""
    return {
        (name, model): None if r.get("diverged") else 100 * r["final"]["val_accuracy"]
        for name, task in results["tasks"].items()
        for model, r in task["runs"].items()
    }


def summary(results: dict[str, Any]) -> str:
    """Final validation accuracy (%) of every layer on every task, beside the chance level,
    with the data's name, length and size; the trained parameters of each model last."""
    acc = final_accuracy(results)
    models = list(next(iter(results["tasks"].values()))["runs"])
    head = f"{'task':<11} {'data':<17} {'L':>5} {'train':>6}"
    head += "".join(f"{MODELS[m]:>12}" for m in models) + f"{'chance':>8}"
    lines = [head]
    for name, task in results["tasks"].items():
        cells = "".join(
            f"{'div':>12}" if acc[name, m] is None else f"{acc[name, m]:>12.1f}" for m in models
        )
        lines.append(
            f"{TASKS[name]:<11} {task['data']:<17} {task['length']:>5} {task['train']:>6}"
            f"{cells}{100 * task['chance']:>8.1f}"
        )
    lines.append("trained parameters per task: " + "; ".join(
        f"{TASKS[n]} " + ", ".join(
            f"{MODELS[m]} {t['runs'][m]['parameters']['total']:,}" for m in models)
        for n, t in results["tasks"].items()
    ))  # fmt: skip
    return "\n".join(lines)


def paper_rows() -> dict[str, dict[str, Any]]:
    """The DSS paper's Table 1 rows of the three models, by model key."""
    rows = papers.table("dss_lra")
    return {m: next(r for r in rows if r["model"] == PAPER_ROWS[m]) for m in MODELS}


def ranking(scores: dict[str, float | None]) -> list[str]:
    """Model keys, best first; a diverged run (``None``) last."""
    return sorted(scores, key=lambda m: -np.inf if scores[m] is None else scores[m], reverse=True)


def tied(scores: dict[str, float | None]) -> bool:
    """Whether two models score the same to the printed 0.1 point (or both diverged)."""
    printed = [None if v is None else round(v, 1) for v in scores.values()]
    return len(set(printed)) < len(printed)


def orderings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per task: the paper's ranking of the three models on its LRA column and this run's, with
    their accuracies (%), and whether the two rankings are the same (``None`` where this run has
    a tie, which orders nothing)."""
    acc, rows = final_accuracy(results), paper_rows()
    out = []
    for name in results["tasks"]:
        models = list(results["tasks"][name]["runs"])
        paper = {m: rows[m][PAPER_COLUMNS[name]] for m in models}
        ours = {m: acc[name, m] for m in models}
        out.append({"task": name, "column": PAPER_COLUMNS[name], "paper": paper, "ours": ours,
                    "agrees": None if tied(ours) else ranking(paper) == ranking(ours)})  # fmt: skip
    return out


def _order(scores: dict[str, float | None]) -> str:
    return " > ".join(
        f"{MODELS[m]} {'div' if scores[m] is None else f'{scores[m]:.1f}'}" for m in ranking(scores)
    )


VERDICTS = {True: "the same ordering", False: "a different ordering",
            None: "a tie in this run: no ordering to compare"}  # fmt: skip


def paper_comparison(results: dict[str, Any]) -> str:
    """For every task, the paper's ordering of the three models (DSS Table 1, on the LRA task
    named) and this run's, with the accuracies, and whether they agree."""
    lines = []
    for o in orderings(results):
        column = papers.LRA_HEADINGS[o["column"]]
        lines += [
            f"{TASKS[o['task']]} (paper: LRA {column})",
            f"  paper:    {_order(o['paper'])}",
            f"  this run: {_order(o['ours'])}",
            f"  -> {VERDICTS[o['agrees']]}",
        ]
    return "\n".join(lines)


def speech_commands() -> str:
    """The DSS paper's Table 2 rows of S4 and the two DSS (raw audio, 16 000 steps)."""
    wanted = ("S4", "S4 (as run by the DSS authors)", "DSS-softmax", "DSS-exp")
    rows = [r for r in papers.table("dss_speech") if r["input"] == "raw" and r["model"] in wanted]
    lines = [f"{'model':<32} {'accuracy (%)':>12}"]
    lines += [f"{r['model']:<32} {r['accuracy']:>12.2f}  {r['trust']}" for r in rows]
    lines.append(papers.cite(rows[0]))
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """Validation accuracy against training steps, one panel per task, one line per layer, the
    chance level dotted; a cross where a run diverged."""
    names = list(results["tasks"])
    fig, axes = plotting.subplots(1, len(names), height=3.0, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        task = results["tasks"][name]
        for model, r in task["runs"].items():
            steps = [h["step"] for h in r["history"]]
            acc = [100 * h["val_accuracy"] for h in r["history"]]
            ax.plot(steps, acc, color=COLORS[model], label=MODELS[model],
                    ls="--" if model == "s4" else "-")  # fmt: skip
            if r.get("diverged"):
                ax.plot([r["diverged"]["step"]], [acc[-1] if acc else 0.0], "x",
                        color=COLORS[model], ms=7, mew=2)  # fmt: skip
        ax.axhline(100 * task["chance"], color=plotting.PALETTE["black"], ls=":", label="chance")
        plotting.label(ax, "training step", None, f"{TASKS[name]}, L = {task['length']}")
    axes[0][0].set_ylabel("validation accuracy (%)")
    plotting.panel_letters(axes[0])
    plotting.figure_legend(fig, axes[0][0])
    return fig
