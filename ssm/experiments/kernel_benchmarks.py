"""The chapter on fast kernels: the GPU benchmarks of ``benchmarks/bench.py``, read back and drawn.

``benchmarks/bench.py`` times each Triton kernel of :mod:`ssm.ops` beside the best public
implementations (the *anchors*: ``mamba_ssm``, the S4 authors' CUDA extension, flash-linear-
attention, plain PyTorch) and writes ``data/bench/bench_<op>.json``: the device and versions, the
copy bandwidth, and per case the median milliseconds of ours (``"ssm (Triton)"``) and of each
anchor, ``ratio_to`` (ours / anchor, below 1 means faster), ``bandwidth_fraction`` and
``errors`` (anchors that could not run). :func:`run` reads whatever files and cases are there;
:func:`plot` draws the ratios, :func:`plot_bandwidth` the fractions of copy bandwidth, and
:func:`goals_table` checks them against the goals of the project.

Explained in the chapter "Making SSMs fast".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import plotting
from ._common import check_profile
from ._results import REPO_ROOT

OURS = "ssm (Triton)"
PROVENANCE = ("device", "torch", "triton", "cuda", "date", "commit", "timer", "copy_bandwidth_GBps")

#: The project's performance goals. ``ratio`` goals compare our time with the fastest of the
#: anchors whose names contain one of ``anchors`` (ours / anchor, at most ``goal``, ideally at
#: most ``aim``); ``bandwidth`` goals compare the fraction of copy bandwidth with ``goal``.
GOALS: tuple[dict[str, Any], ...] = (
    {
        "name": "selective scan",
        "metric": "ratio",
        "case": "selective_scan",
        "anchors": ("selective_scan_fn",),
        "against": "mamba_ssm selective_scan_fn",
        "goal": 1.0,
        "aim": 0.5,
    },
    {
        "name": "SSD",
        "metric": "ratio",
        "case": "ssd",
        "anchors": ("mamba_chunk_scan_combined",),
        "against": "mamba_chunk_scan_combined",
        "goal": 1.0,
        "aim": 0.7,
    },
    {
        "name": "Vandermonde",
        "metric": "ratio",
        "case": "vandermonde",
        "anchors": ("S4 authors' CUDA", "blocked matmul"),
        "against": "min(S4 CUDA, blocked matmul)",
        "goal": 1.0,
        "aim": 0.3,
    },
    {
        "name": "Cauchy",
        "metric": "ratio",
        "case": "cauchy",
        "anchors": ("S4 authors' CUDA",),
        "against": "S4 CUDA cauchy_mult",
        "goal": 1.0,
        "aim": None,
    },
    {
        "name": "decode",
        "metric": "bandwidth",
        "case": "decode",
        "batch": 64,
        "against": "copy bandwidth",
        "goal": 0.85,
        "aim": None,
    },
)


def config(profile: str = "ci") -> dict[str, Any]:
    """Both profiles read the same committed files (the benchmarks need a GPU and minutes:
    ``python benchmarks/bench.py`` writes them)."""
    check_profile(profile)
    return {"profile": profile, "bench_dir": "data/bench"}


def _bench_dir(cfg: dict[str, Any]) -> Path:
    path = Path(cfg["bench_dir"])
    return path if path.is_absolute() else REPO_ROOT / path


def _labels(cases: list[dict[str, Any]]) -> list[str]:
    """``case`` names, with the config values that tell apart cases of the same name."""
    labels = []
    for c in cases:
        same = [o for o in cases if o["op"] == c["op"] and o["case"] == c["case"]]
        keys = [k for k in c["config"] if len({str(o["config"].get(k)) for o in same}) > 1]
        extra = ", ".join(f"{k} {c['config'][k]}" for k in keys)
        labels.append(f"{c['case']} ({extra})" if extra else c["case"])
    return labels


def load(bench_dir: Path | str) -> dict[str, Any]:
    """Every ``bench_*.json`` of ``bench_dir``: provenance per file and one flat list of cases."""
    files, cases = [], []
    for path in sorted(Path(bench_dir).glob("bench_*.json")):
        record = json.loads(path.read_text())
        op = record.get("op", path.stem.removeprefix("bench_"))
        files.append({"file": path.name, "op": op} | {k: record.get(k) for k in PROVENANCE})
        for raw in record.get("cases", []):
            ms = dict(raw.get("ms", {}))
            cases.append(
                {
                    "op": op,
                    "case": raw.get("case", op),
                    "config": dict(raw.get("config", {})),
                    "ours_ms": ms.pop(OURS, None),
                    "anchors_ms": ms,
                    "ratio_to": dict(raw.get("ratio_to", {})),
                    "errors": dict(raw.get("errors", {})),
                    "bandwidth_fraction": raw.get("bandwidth_fraction"),
                    "failed": raw.get("error"),  # the whole op failed to run
                }
            )
    for case, label in zip(cases, _labels(cases), strict=True):
        case["label"] = label
    return {"files": files, "cases": cases}


def _evaluate(goal: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """One row of the goals table: the measured value and whether it meets the goal."""
    row = {"goal": goal["name"], "case": case["label"], "against": goal["against"]}
    if goal["metric"] == "bandwidth":
        value = case["bandwidth_fraction"]
        row |= {"value": value, "target": goal["goal"], "aim": None}
        if value is None:
            return row | {"status": "not measured"}
        met = value >= goal["goal"]
        factor = value / goal["goal"]
        return row | {"met": met, "status": f"{'met' if met else 'missed'} ({factor:.2f}x goal)"}
    timed = {
        k: v
        for k, v in case["anchors_ms"].items()
        if any(a in k for a in goal["anchors"]) and v is not None
    }
    failed = [k for k in case["errors"] if any(a in k for a in goal["anchors"])]
    row |= {"target": goal["goal"], "aim": goal["aim"]}
    if case["ours_ms"] is None or not timed:
        why = "anchor failed to run" if failed else "not measured"
        return row | {"value": None, "status": why}
    anchor = min(timed, key=timed.get)
    ratio = case["ours_ms"] / timed[anchor]
    met = ratio <= goal["goal"]
    status = f"met ({ratio:.2f}x)" if met else f"missed ({ratio / goal['goal']:.2f}x too slow)"
    if met and goal["aim"] is not None:
        aimed = ratio <= goal["aim"]
        status += ", aim met" if aimed else f", aim missed by {ratio / goal['aim']:.2f}x"
    return row | {"value": ratio, "met": met, "anchor": anchor, "status": status}


def evaluate_goals(loaded: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the goals table, one per measured case of each goal (one row saying "no
    measurement" for a goal without any)."""
    rows = []
    for goal in GOALS:
        matching = [
            c
            for c in loaded["cases"]
            if (c["case"].startswith(goal["case"]) or c["op"] == goal["case"])
            and ("batch" not in goal or c["config"].get("batch") == goal["batch"])
        ]
        if not matching:
            rows.append(
                {
                    "goal": goal["name"],
                    "case": "-",
                    "against": goal["against"],
                    "value": None,
                    "target": goal["goal"],
                    "aim": goal["aim"],
                    "status": "no measurement in data/bench yet",
                }
            )
        rows += [_evaluate(goal, c) for c in matching]
    return rows


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    loaded = load(_bench_dir(cfg))
    if not loaded["cases"]:
        raise FileNotFoundError(
            f"no benchmark results in {cfg['bench_dir']}: run `python benchmarks/bench.py` on a "
            "GPU to write data/bench/bench_<op>.json"
        )
    return loaded | {"goals": evaluate_goals(loaded)}


def provenance(results: dict[str, Any]) -> str:
    """Where the numbers come from: one line per distinct (device, versions, date, commit)."""
    seen: dict[str, list[str]] = {}
    for f in results["files"]:
        commit = f["commit"] if f["commit"] not in (None, "unknown") else "not recorded"
        line = (
            f"{f['device']}, torch {f['torch']}, Triton {f['triton']}, CUDA {f['cuda']}, "
            f"{str(f['date'])[:10]}, commit {commit}, copy bandwidth "
            f"{f['copy_bandwidth_GBps']:.0f} GB/s"
        )
        seen.setdefault(line, []).append(f["op"])
    return "\n".join(f"{', '.join(ops)}: {line}" for line, ops in seen.items())


def _fmt(value: float | None, metric_ratio: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if metric_ratio else f"{100 * value:.0f}%"


def goals_table(results: dict[str, Any]) -> str:
    """The goals table as aligned text (one row per case and goal)."""
    header = ("goal", "case", "against", "measured", "goal", "aim", "status")
    rows = []
    for r in results["goals"]:
        ratio = r["goal"] != "decode"
        rows.append(
            (
                r["goal"],
                r["case"],
                r["against"],
                _fmt(r["value"], ratio),
                ("<= " if ratio else ">= ") + _fmt(r["target"], ratio),
                "<= " + _fmt(r["aim"], ratio) if r["aim"] is not None else "-",
                r["status"],
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    return "\n".join([head, "-" * len(head), *(line.rstrip() for line in lines)])


def _op_colors(cases: list[dict[str, Any]]) -> dict[str, str]:
    ops = list(dict.fromkeys(c["op"] for c in cases))
    palette = [plotting.PALETTE[k] for k in ("blue", "orange", "green", "vermillion", "purple")]
    return {op: palette[i % len(palette)] for i, op in enumerate(ops)}


@plotting.styled
def plot(results: dict[str, Any]):
    """Our time over each anchor's, one row per (case, anchor), on a log axis; left of the line
    at 1 we are faster. Anchors that failed to run are listed at the line, marked ×."""
    cases = [c for c in results["cases"] if c["ours_ms"] is not None]
    colors = _op_colors(results["cases"])
    rows = []  # (label, ratio or None, op)
    for c in cases:
        for anchor, ms in c["anchors_ms"].items():
            rows.append((f"{c['label']}: vs {anchor}", c["ours_ms"] / ms, c["op"]))
        for anchor in c["errors"]:
            rows.append((f"{c['label']}: vs {anchor} (failed to run)", None, c["op"]))
    fig, ax = plotting.subplots(1, 1, width=plotting.WIDTH + 1.5, height=0.28 * len(rows) + 1.2)
    y = np.arange(len(rows))[::-1]
    ratios = [r for _, r, _ in rows if r is not None]
    for yi, (_, ratio, op) in zip(y, rows, strict=True):
        if ratio is None:
            ax.plot([1.0], [yi], marker="x", color=plotting.PALETTE["black"], ms=6)
        else:
            ax.plot([1.0, ratio], [yi, yi], color=colors[op], lw=1.2, alpha=0.5)
            ax.plot([ratio], [yi], "o", color=colors[op])
            ax.annotate(
                f"{ratio:.2f}", (ratio, yi), xytext=(5, -3), textcoords="offset points", fontsize=8
            )
    ax.axvline(1.0, color=plotting.PALETTE["black"], lw=1)
    ax.set_xscale("log")
    lo, hi = min([*ratios, 0.5]), max([*ratios, 2.0])
    ax.set_xlim(lo / 1.6, hi * 1.8)
    ax.set_yticks(y, [label for label, _, _ in rows], fontsize=8.5)
    ax.grid(axis="y", visible=False)
    for op, color in colors.items():
        ax.plot([], [], "o", color=color, label=op)
    plotting.label(
        ax,
        "our time / anchor's time (log scale; < 1: ours is faster)",
        None,
        "Triton kernels of ssm against the anchors",
        legend="upper left",
    )
    return fig


@plotting.styled
def plot_bandwidth(results: dict[str, Any]):
    """The fraction of the device's copy bandwidth that each of our kernels reaches, counting
    the bytes the op must move at least; the dashed line is the decode goal (85%)."""
    cases = [c for c in results["cases"] if c["bandwidth_fraction"] is not None]
    colors = _op_colors(results["cases"])
    fig, ax = plotting.subplots(1, 1, width=plotting.WIDTH, height=0.3 * len(cases) + 1.2)
    y = np.arange(len(cases))[::-1]
    fractions = [c["bandwidth_fraction"] for c in cases]
    ax.barh(y, fractions, color=[colors[c["op"]] for c in cases], height=0.6)
    for yi, f in zip(y, fractions, strict=True):
        ax.annotate(
            f"{100 * f:.0f}%", (f, yi), xytext=(3, -3), textcoords="offset points", fontsize=8
        )
    goal = next(g["goal"] for g in GOALS if g["metric"] == "bandwidth")
    ax.axvline(goal, color=plotting.PALETTE["black"], ls="--", lw=1, label="decode goal")
    ax.set_yticks(y, [c["label"] for c in cases], fontsize=8.5)
    ax.set_xlim(0, 1.08)
    ax.grid(axis="y", visible=False)
    plotting.label(
        ax,
        "fraction of copy bandwidth (minimum bytes moved / time)",
        None,
        "How close each kernel runs to memory speed",
        legend="lower right",
    )
    return fig
