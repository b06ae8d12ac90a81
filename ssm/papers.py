"""Published numbers, printed beside the book's own reruns (never instead of them).

Each table is ``data/papers/NAME.csv`` with its source (paper, table or figure), the citation key
of ``book/references.bib`` and a trust mark (``P``: the paper's own text or its authors'
repository; ``S``: restated by another paper). It is read through
:func:`ssm.experiments._results.data_path`, so an installed wheel reads its copy in
``ssm/_data/papers``. Cells are typed on reading: numbers become floats, ``✗`` (the source
marks the run failed or out of memory) and empty cells become ``None``, the rest stays text.

Tables:

* ``s4_lra`` (Long Range Arena accuracies of S4 v1 and v2, S4-FouT, S4-LegS/FouT and the
  Transformer) and ``s4_hippo_ablation`` (S4's HiPPO ablations on sCIFAR, Figs. 3 and 4 read off
  the plots, and the statements of its Section 4.4). Chapter *S4 v2: how to train your HiPPO*.
* ``dss_lra`` (DSS Table 1: S4 as run by the DSS authors, DSS-softmax, DSS-exp, DSS-exp without
  scaling; and the DSS repository's README row) and ``dss_speech`` (DSS Table 2: Speech Commands
  on raw audio and on MFCC features). Chapter *DSS*.
* ``s4d_ablations`` (S4D Table 2: softmax vs Vandermonde kernel x trained vs frozen B, and
  bilinear vs ZOH x the constraint on Re(A), on sCIFAR, Speech Commands and BIDMC) and
  ``s4d_lra`` (Long Range Arena accuracies of S4D-LegS, S4D-Inv, S4D-Lin and S4-LegS, as restated
  by arXiv 2508.20441). Chapter *S4D*.

A row's ``avg`` is the average its source prints, or, where its note says so, the mean of its
six tasks computed here; it is ``None`` where the row has a failed task and no printed average.
"""

from __future__ import annotations

import csv
import re
from typing import Any

from .experiments._results import data_path

#: The six Long Range Arena tasks, in the column order of the tables.
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")

#: What a failed task (``✗``) counts for in the LRA averages the papers print: chance on the
#: binary Path-X (the LRA paper's convention, followed by S4 and HTTYH).
LRA_FAILED = 50.0

FAILED = "✗"

#: The references the tables cite: key -> (authors, title, year, arXiv id).
REFERENCES: dict[str, tuple[str, str, int, str]] = {
    "gu2022s4": (
        "Gu, Goel, Ré",
        "Efficiently Modeling Long Sequences with Structured State Spaces",
        2022,
        "2111.00396",
    ),
    "gu2023hippo2": (
        "Gu, Johnson, Timalsina, Rudra, Ré",
        "How to Train Your HiPPO: State Space Models with Generalized Orthogonal Basis Projections",
        2023,
        "2206.12037",
    ),
    "gupta2022dss": (
        "Gupta, Gu, Berant",
        "Diagonal State Spaces are as Effective as Structured State Spaces",
        2022,
        "2203.14343",
    ),
    "gu2022s4d": (
        "Gu, Gupta, Goel, Ré",
        "On the Parameterization and Initialization of Diagonal State Space Models",
        2022,
        "2206.11893",
    ),
    "ma2023mega": (
        "Ma, Zhou, Kong, He, Gui, Neubig, May, Zettlemoyer",
        "Mega: Moving Average Equipped Gated Attention",
        2023,
        "2209.10655",
    ),
    "smith2023s5": (
        "Smith, Warrington, Linderman",
        "Simplified State Space Layers for Sequence Modeling",
        2023,
        "2208.04933",
    ),
    "hasani2023liquid": (
        "Hasani, Lechner, Wang, Chahine, Amini, Rus",
        "Liquid Structural State-Space Models",
        2023,
        "2209.12951",
    ),
    "li2023sgconv": (
        "Li, Cai, Zhang, Chen, Dey",
        "What Makes Convolutional Models Great on Long Sequence Modeling?",
        2023,
        "2210.09298",
    ),
    "tay2021lra": (
        "Tay, Dehghani, Abnar, Shen, Bahri, Pham, Rao, Yang, Ruder, Metzler",
        "Long Range Arena: A Benchmark for Efficient Transformers",
        2021,
        "2011.04006",
    ),
}

_NAME = re.compile(r"[a-z0-9_]+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _cell(text: str) -> float | str | None:
    text = text.strip()
    if text in ("", FAILED):
        return None
    return float(text) if _NUMBER.fullmatch(text) else text


def table(name: str) -> list[dict[str, Any]]:
    """The rows of ``data/papers/NAME.csv``, one dict per row, with typed values.

    Raises ``ValueError`` for a name that is not a table, listing those there are.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be a table name such as 's4_lra', got {name!r}")
    path = data_path(f"data/papers/{name}.csv")
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.csv"))
        raise ValueError(f"no paper table {name!r}; available: {', '.join(found) or 'none'}")
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def cite(row: dict[str, Any]) -> str:
    """Where a row's numbers come from, in one line: its source, then the reference."""
    key = row.get("citation")
    if key not in REFERENCES:
        raise ValueError(f"row's citation must be one of {tuple(REFERENCES)}, got {key!r}")
    authors, title, year, arxiv = REFERENCES[key]
    return f"{row['source']}. {authors}, \u201c{title}\u201d, {year}, arXiv:{arxiv}"


def lra_average(row: dict[str, Any], failed: float = LRA_FAILED) -> float:
    """The mean of a row's six LRA tasks, a failed one (``None``) counting ``failed``."""
    values = [failed if row[t] is None else row[t] for t in LRA_TASKS]
    return sum(values) / len(values)


def _row(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    matches = [r for r in rows if r.get("model") == model]
    if len(matches) != 1:
        models = [r.get("model") for r in rows]
        raise ValueError(f"model must name exactly one row among {models}, got {model!r}")
    return matches[0]


def lra_gain(rows: list[dict[str, Any]], old: str, new: str) -> dict[str, Any]:
    """Gains of model ``new`` over model ``old``, in accuracy points, rounded to 2 decimals
    (the tables' precision): ``{"avg": ..., "tasks": {task: gain or None}, "largest": task}``.

    A task failed by either model has gain ``None``, and so has ``avg`` where either row has no
    average; ``largest`` is the task of the largest gain among the others.
    """
    a, b = _row(rows, old), _row(rows, new)
    tasks = {t: None if a[t] is None or b[t] is None else round(b[t] - a[t], 2) for t in LRA_TASKS}
    known = {t: g for t, g in tasks.items() if g is not None}
    return {
        "old": old,
        "new": new,
        "avg": None if a["avg"] is None or b["avg"] is None else round(b["avg"] - a["avg"], 2),
        "tasks": tasks,
        "largest": max(known, key=known.get) if known else None,
    }


#: Column headings of the LRA tasks in printed tables.
LRA_HEADINGS = {
    "listops": "ListOps",
    "text": "Text",
    "retrieval": "Retr.",
    "image": "Image",
    "pathfinder": "Pathf.",
    "pathx": "Path-X",
}


def format_lra(rows: list[dict[str, Any]]) -> str:
    """An LRA table as text: one line per model (``✗`` for a failed task, ``n/a`` for a missing
    average), then the sources, numbered as the ``[n]`` at the end of each line."""
    sources = list(dict.fromkeys(cite(r) for r in rows))
    width = max([18] + [len(r["model"]) + 2 for r in rows])
    head = f"{'model':<{width}}" + "".join(f"{LRA_HEADINGS[t]:>8}" for t in LRA_TASKS)
    head += f"{'avg':>8}"
    lines = [head]
    for r in rows:
        cells = "".join(f"{FAILED:>8}" if r[t] is None else f"{r[t]:>8.2f}" for t in LRA_TASKS)
        avg = "n/a" if r["avg"] is None else f"{r['avg']:.2f}"
        lines.append(
            f"{r['model']:<{width}}{cells}{avg:>8}  [{sources.index(cite(r)) + 1}] {r['trust']}"
        )
    lines.append("")
    lines += [f"[{i}] {s}" for i, s in enumerate(sources, 1)]
    return "\n".join(lines)


def format_gain(gain: dict[str, Any]) -> str:
    """The result of :func:`lra_gain` as text: the average gain, then the gain per task."""
    tasks = ", ".join(
        f"{LRA_HEADINGS[t]} {'n/a' if g is None else f'{g:+.2f}'}" for t, g in gain["tasks"].items()
    )
    avg = "n/a" if gain["avg"] is None else f"{gain['avg']:+.2f} points"
    return (
        f"{gain['new']} over {gain['old']}: average {avg}\n"
        f"per task: {tasks}\n"
        f"largest gain: {LRA_HEADINGS[gain['largest']]}"
    )
