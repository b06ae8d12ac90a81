"""The chapter on fast kernels: the GPU benchmarks of ``benchmarks/bench.py``, read back and drawn.

``benchmarks/bench.py`` times each Triton kernel of :mod:`ssm.ops` beside the best public
implementations (the *anchors*: ``mamba_ssm``, the S4 authors' CUDA extension, flash-linear-
attention, plain PyTorch) and writes ``data/bench/bench_<op>.json``: the device and versions, the
copy bandwidth, and per case the median milliseconds of ours (``"ssm (Triton)"``) and of each
anchor, ``ratio_to`` (ours / anchor, below 1 means faster), ``bandwidth_fraction`` and
``errors`` (anchors that could not run). :func:`run` reads whatever files and cases are there;
:func:`plot` draws the ratios, :func:`plot_bandwidth` the fractions of copy bandwidth,
:func:`goals_table` checks them against the goals of the project, and :func:`summary` and
:func:`prose` give the numbers and sentences the chapter quotes, so that its text follows the data.

Explained in the chapter "Making SSMs fast".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import plotting
from ._common import check_profile
from ._results import data_path

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
    return data_path(Path(cfg["bench_dir"]))


def _variants(cases: list[dict[str, Any]]) -> list[str]:
    """The config values that tell apart cases of the same name ("" for a case alone)."""
    variants = []
    for c in cases:
        same = [o for o in cases if o["op"] == c["op"] and o["case"] == c["case"]]
        keys = [k for k in c["config"] if len({str(o["config"].get(k)) for o in same}) > 1]
        variants.append(", ".join(f"{k} {c['config'][k]}" for k in keys))
    return variants


def load(bench_dir: Path | str) -> dict[str, Any]:
    """Every ``bench_*.json`` of ``bench_dir``: provenance per file and one flat list of cases."""
    files, cases = [], []
    for path in sorted(Path(bench_dir).glob("bench_*.json")):
        record = json.loads(path.read_text())
        op = record.get("op", path.stem.removeprefix("bench_"))
        files.append(
            {"file": path.name, "op": op, "anchors": dict(record.get("anchors") or {})}
            | {k: record.get(k) for k in PROVENANCE}
        )
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
    for case, variant in zip(cases, _variants(cases), strict=True):
        variant = variant.replace("torch.", "") if variant else variant  # "dtype bfloat16"
        case["variant"] = variant
        case["label"] = f"{case['case']} ({variant})" if variant else case["case"]
    return {"files": files, "cases": cases}


def ratio(case: dict[str, Any], anchor: str) -> float:
    """Our time over ``anchor``'s: the file's ``ratio_to`` where it has one, else from the times."""
    value = case["ratio_to"].get(anchor)
    return value if value is not None else case["ours_ms"] / case["anchors_ms"][anchor]


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
    value = ratio(case, anchor)
    met = value <= goal["goal"]
    status = f"met ({value:.2f}x)" if met else f"missed ({value / goal['goal']:.2f}x too slow)"
    if met and goal["aim"] is not None:
        aimed = value <= goal["aim"]
        status += ", aim met" if aimed else f", aim missed by {value / goal['aim']:.2f}x"
    return row | {"value": value, "met": met, "anchor": anchor, "status": status}


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


def _draw_goal(ax, x: float, rows: list[float], color: str, lw: float, label: str) -> None:
    """A dashed vertical line at ``x`` across the rows (y positions) a goal applies to, under
    the value labels (``zorder`` 1)."""
    ax.vlines(
        x,
        min(rows) - 0.45,
        max(rows) + 0.45,
        color=plotting.PALETTE[color],
        ls="--",
        lw=lw,
        zorder=1,
        label=label,
    )


def goals_table(results: dict[str, Any]) -> str:
    """The goals table as aligned text: per goal a heading (its name and what it is measured
    against), then one row per case."""
    header = ("case", "measured", "goal", "aim", "status")
    groups: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for r in results["goals"]:
        is_ratio = r["goal"] != "decode"
        groups.setdefault((r["goal"], r["against"]), []).append(
            (
                _short_case(r["case"]),
                _fmt(r["value"], is_ratio),
                ("<= " if is_ratio else ">= ") + _fmt(r["target"], is_ratio),
                _fmt(r["aim"], is_ratio) if r["aim"] is not None else "-",
                _short_status(r["status"]),
            )
        )
    rows = [row for group in groups.values() for row in group]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(row: tuple[str, ...]) -> str:
        return "  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()

    lines = [line(header), "  " + "-" * (len(line(header)) - 2)]
    for (goal, against), group in groups.items():
        lines += [f"{goal} (against {against})", *(line(row) for row in group)]
    return "\n".join(lines)


def _short_case(case: str) -> str:
    """A case without its op's name (its heading says it) and with short dtype names."""
    case = re.sub(r"^(selective_scan|ssd|vandermonde|cauchy) ", "", case)
    case = case.replace(" decode step", "")
    return case.replace("dtype bfloat16", "bf16").replace("dtype float32", "fp32")


def _short_status(status: str) -> str:
    """``met`` or ``missed`` (the measured column gives the number), and whether the aim was."""
    verdict = status.split(" (")[0]
    return f"{verdict}, aim missed" if "aim missed" in status else verdict


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Every number the chapter's text quotes, read from the results (nothing typed by hand).

    ``comparisons``: per (op, case name, anchor), the ratio (ours / anchor, the file's
    ``ratio_to``) of every size measured, with the fastest and the slowest; ``failed``: per
    anchor, the cases where it failed to run and the exception types; ``unavailable``: anchors
    that no run could load (no case has a time for them); ``bandwidth``: the fraction of copy
    bandwidth of every case; ``goals``: per goal of :data:`GOALS`, its rows of the goals table
    and how many cases meet it, meet its aim, miss it, or have no measurement.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for c in results["cases"]:
        if c["ours_ms"] is not None:
            for anchor in c["anchors_ms"]:
                groups.setdefault((c["op"], c["case"], anchor), []).append(
                    {"label": c["label"], "variant": c["variant"], "ratio": ratio(c, anchor)}
                )
        for anchor, error in c["errors"].items():
            entry = failed.setdefault(anchor, {"anchor": anchor, "cases": [], "errors": []})
            entry["cases"].append(c["label"])
            kind = str(error).split(":", 1)[0]
            if kind not in entry["errors"]:
                entry["errors"].append(kind)
    comparisons = [
        {
            "op": op,
            "case": case,
            "anchor": anchor,
            "cases": rows,
            "fastest": min(rows, key=lambda r: r["ratio"]),
            "slowest": max(rows, key=lambda r: r["ratio"]),
        }
        for (op, case, anchor), rows in groups.items()
    ]
    # An anchor is unavailable when no run could load it (a run of another op may have lacked a
    # module it does not need) and no case has a time for it (so the figure has no row for it).
    states: dict[str, list[str]] = {}
    for f in results["files"]:
        for name, state in f.get("anchors", {}).items():
            states.setdefault(name, []).append(str(state))
    timed = {a for c in results["cases"] for a in c["anchors_ms"]}
    unavailable = {
        name: next(s for s in seen if s != "ok")
        for name, seen in states.items()
        if "ok" not in seen and not any(name in a for a in timed)
    }
    bandwidth = [
        {
            "op": c["op"],
            "case": c["case"],
            "label": c["label"],
            "batch": c["config"].get("batch"),
            "fraction": c["bandwidth_fraction"],
        }
        for c in results["cases"]
        if c["bandwidth_fraction"] is not None
    ]
    goals = []
    for goal in GOALS:
        rows = [r for r in results["goals"] if r["goal"] == goal["name"]]
        measured = [r for r in rows if r.get("value") is not None]
        met = [r for r in measured if r["met"]]
        # best first: the lowest ratio, or the highest fraction of bandwidth
        ranked = sorted(measured, key=lambda r: r["value"], reverse=goal["metric"] != "ratio")
        aim_met = [r for r in met if goal["aim"] is not None and r["value"] <= goal["aim"]]
        goals.append(
            {
                "goal": goal["name"],
                "metric": goal["metric"],
                "against": goal["against"],
                "target": goal["goal"],
                "aim": goal["aim"],
                "rows": rows,
                "measured": len(measured),
                "met": len(met),
                "aim_met": len(aim_met),
                "missed": len(measured) - len(met),
                "unmeasured": [r["status"] for r in rows if r.get("value") is None],
                "best": ranked[0] if ranked else None,
                "worst": ranked[-1] if ranked else None,
            }
        )
    return {
        "comparisons": comparisons,
        "failed": list(failed.values()),
        "unavailable": unavailable,
        "bandwidth": bandwidth,
        "goals": goals,
    }


def speed(r: float) -> str:
    """A ratio (ours / anchor) in words: "2.56× faster", "1.72× slower", "as fast"."""
    if r == 1.0:
        return "as fast"
    factor = 1 / r if r < 1 else r
    number = f"{factor:.2f}" if factor < 10 else f"{factor:.0f}"
    return f"{number}× {'faster' if r < 1 else 'slower'}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _comparison_line(comp: dict[str, Any]) -> str:
    head = f"- `{comp['case']}` against {comp['anchor']}: "
    fast, slow = comp["fastest"], comp["slowest"]
    if len(comp["cases"]) == 1:
        return head + f"{speed(fast['ratio'])}"
    if speed(fast["ratio"]) == speed(slow["ratio"]):  # the same in words: say it once
        return head + f"{speed(fast['ratio'])} at each of the {len(comp['cases'])} sizes"
    return head + (
        f"over {len(comp['cases'])} sizes, from {speed(fast['ratio'])} ({fast['variant']}) "
        f"to {speed(slow['ratio'])} ({slow['variant']})"
    )


def _goal_line(g: dict[str, Any]) -> str:
    is_ratio = g["metric"] == "ratio"
    if is_ratio:
        target = f"at most {g['target']:.2f}× the time of {g['against']}"
        if g["aim"] is not None:
            target += f", aim {g['aim']:.2f}×"
    else:
        target = f"at least {_pct(g['target'])} of copy bandwidth"
    line = f"- **{g['goal']}** ({target}): "
    if not g["measured"]:
        reasons = sorted(set(g["unmeasured"]))
        return line + f"not measured in this run ({'; '.join(reasons)})."

    def value(r: dict[str, Any]) -> str:
        return f"{r['value']:.2f}×" if is_ratio else _pct(r["value"])

    parts = [f"met in {g['met']} of {g['measured']} case{'s' if g['measured'] > 1 else ''}"]
    if g["met"]:
        parts.append(f"best {value(g['best'])} (`{g['best']['case']}`)")
        if g["aim"] is not None:
            parts.append(f"aim met in {g['aim_met']} of those")
    if g["missed"]:
        w = g["worst"]
        factor = w["value"] / g["target"]
        by = f"{factor:.2f}× too slow" if is_ratio else f"at {value(w)}, {factor:.2f}× the goal"
        parts.append(f"missed in {g['missed']}, worst `{w['case']}` {by}")
    if g["unmeasured"]:
        parts.append(f"{len(g['unmeasured'])} more without a measurement")
    return line + "; ".join(parts) + "."


def prose(results: dict[str, Any]) -> dict[str, str]:
    """The chapter's data-dependent text, as Markdown glued into the captions and paragraphs:

    ``bench-comparisons`` (list, in the caption of :func:`plot`), ``bench-failed`` and
    ``bench-unavailable`` (inline: anchors that failed in a case, or that no run could load),
    ``bench-decode`` and ``bench-training-bandwidth`` (inline, in the caption of
    :func:`plot_bandwidth`), ``bench-goals-headline`` (inline) and ``bench-goals`` (list, after
    the goals table).
    """
    s = summary(results)
    failed = [
        f"{f['anchor']} in {len(f['cases'])} case{'s' if len(f['cases']) > 1 else ''} "
        f"({', '.join(f['errors'])})"
        for f in s["failed"]
    ]
    unavailable = [
        f"`{name}` ({state.split('(', 1)[0]})" for name, state in s["unavailable"].items()
    ]
    decode = [b for b in s["bandwidth"] if b["op"] == "decode"]
    batches = sorted({b["batch"] for b in decode if b["batch"] is not None}, reverse=True)
    per_batch = []
    for batch in batches:
        steps = sorted((b for b in decode if b["batch"] == batch), key=lambda b: -b["fraction"])
        per_batch.append(
            f"at batch {batch}, " + _join([f"{b['case']} {_pct(b['fraction'])}" for b in steps])
        )
    goal = next(g["goal"] for g in GOALS if g["metric"] == "bandwidth")
    training = [b["fraction"] for b in s["bandwidth"] if b["op"] != "decode"]
    measured = sum(g["measured"] for g in s["goals"])
    met = sum(g["met"] for g in s["goals"])
    return {
        "bench-comparisons": "\n".join(_comparison_line(c) for c in s["comparisons"]),
        "bench-failed": "; ".join(failed) if failed else "none",
        "bench-unavailable": ", ".join(unavailable) if unavailable else "none",
        "bench-decode": (
            "; ".join(per_batch) + f" (the goal, dashed, is {_pct(goal)} at batch 64)"
            if per_batch
            else "not measured in this run"
        ),
        "bench-training-bandwidth": (
            f"between {_pct(min(training))} and {_pct(max(training))}"
            if training
            else "not measured in this run"
        ),
        "bench-goals-headline": (
            f"{met} of the {measured} measured cases meet their goal"
            if measured
            else "no case has a measurement against its goal"
        ),
        "bench-goals": "\n".join(_goal_line(g) for g in s["goals"]),
    }


#: Marker of the n-th anchor of a panel of :func:`plot` (colour and shape both differ).
_ANCHOR_STYLES = (
    ("o", "blue"),
    ("s", "orange"),
    ("^", "green"),
    ("D", "purple"),
    ("v", "sky"),
)


def _op_colors(cases: list[dict[str, Any]]) -> dict[str, str]:
    ops = list(dict.fromkeys(c["op"] for c in cases))
    palette = [plotting.PALETTE[k] for k in ("blue", "orange", "green", "vermillion", "purple")]
    return {op: palette[i % len(palette)] for i, op in enumerate(ops)}


def _value_label(ax: Any, text: str, xy: tuple[float, float], *, left: bool = False) -> None:
    """A value beside its marker, drawn over the guide lines on a white backing, so that a line
    through it never hides a digit."""
    ax.annotate(
        text,
        xy,
        xytext=(-6 if left else 6, 0),
        textcoords="offset points",
        ha="right" if left else "left",
        va="center",
        fontsize=8.5,
        zorder=5,
        bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85},
    )


def _ratio_text(r: float) -> str:
    return f"{r:.2f}" if r >= 0.1 else f"{r:.1g}"


def _row_labels(cases: list[dict[str, Any]]) -> list[str]:
    """What tells the cases of one panel apart: their names without the words all of them
    share (the panel's title says those), and the variant, with short dtype names."""
    names = [c["case"].split() for c in cases]
    shared = set.intersection(*(set(n) for n in names)) if len(cases) > 1 else set()
    labels = []
    for c, words in zip(cases, names, strict=True):
        name = " ".join(w for w in words if w not in shared) or c["case"]
        text = f"{name} ({c['variant']})" if c["variant"] else name
        labels.append(
            text.replace("dtype ", "").replace("bfloat16", "bf16").replace("float32", "fp32")
        )
    return labels


@plotting.styled
def plot(results: dict[str, Any]):
    """Our time over each anchor's, one panel per op and one row per case, on a log axis; left
    of the solid line at 1 ours is faster. Each anchor of a panel has its own marker and colour
    (the legend above the panel); dashed lines are the project's aims (:data:`GOALS`); an anchor
    that failed to run in a case is a cross at 1."""
    cases = [c for c in results["cases"] if c["ours_ms"] is not None]
    ops = list(dict.fromkeys(c["op"] for c in cases))
    by_op = {op: [c for c in cases if c["op"] == op] for op in ops}
    ratios = [ratio(c, a) for c in cases for a in c["anchors_ms"]]

    def columns(rows: list[dict[str, Any]]) -> int:
        """Legend entries side by side: two, unless a long anchor name needs the full width."""
        names = {a for c in rows for a in [*c["anchors_ms"], *c["errors"]]}
        return 1 if max(map(len, names)) > 40 else 2

    def legend_lines(rows: list[dict[str, Any]]) -> int:
        entries = len({a for c in rows for a in [*c["anchors_ms"], *c["errors"]]}) + 2
        return -(-entries // columns(rows))

    # rows of markers, plus the legend above each panel (anchors, the line at 1 and an aim)
    heights = [len(rows) + 0.8 * legend_lines(rows) + 1.2 for rows in by_op.values()]
    fig, axes = plotting.subplots(
        len(ops),
        1,
        height=0.3 * sum(heights) + 0.5,
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, op in zip(axes[:, 0], ops, strict=True):
        rows = by_op[op]
        y = np.arange(len(rows))[::-1]
        ax.axvline(1.0, color=plotting.PALETTE["black"], lw=1.2, zorder=1, label="same time")
        for goal in GOALS:  # each aim across the rows it applies to
            aimed = [
                yi for c, yi in zip(rows, y, strict=True) if c["case"].startswith(goal["case"])
            ]
            if goal["metric"] == "ratio" and goal["aim"] and aimed:
                _draw_goal(
                    ax, goal["aim"], aimed, "vermillion", 1.2,
                    f"aim: {goal['aim']:g}× {goal['against']}",
                )  # fmt: skip
        anchors = list(dict.fromkeys(a for c in rows for a in c["anchors_ms"]))
        for i, anchor in enumerate(anchors):
            marker, color = _ANCHOR_STYLES[i % len(_ANCHOR_STYLES)]
            pts = [
                (ratio(c, anchor), yi)
                for c, yi in zip(rows, y, strict=True)
                if anchor in c["anchors_ms"]
            ]
            xs, ys = zip(*pts, strict=True)
            ax.plot(
                xs,
                ys,
                ls="none",
                marker=marker,
                ms=6.5,
                color=plotting.PALETTE[color],
                zorder=3,
                label=anchor,
            )
        failed = [(1.0, yi) for c, yi in zip(rows, y, strict=True) for _ in c["errors"]]
        if failed:
            ax.plot(
                *zip(*failed, strict=True),
                ls="none",
                marker="x",
                ms=7,
                zorder=3,
                color=plotting.PALETTE["black"],
                label="anchor failed to run",
            )
        for c, yi in zip(rows, y, strict=True):
            values = sorted(ratio(c, a) for a in c["anchors_ms"])
            for k, r in enumerate(values):
                # a label goes left of its marker where the next marker is too close on the right
                crowded = k + 1 < len(values) and np.log10(values[k + 1] / r) < 0.35
                _value_label(ax, _ratio_text(r), (r, yi), left=crowded)
        ax.set_yticks(y, _row_labels(rows))
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.grid(axis="y", visible=False)
        ax.tick_params(labelbottom=True)
        ax.legend(
            title=op.replace("_", " and " if op == "vandermonde_cauchy" else " "),
            title_fontproperties={"weight": "bold", "size": 10},
            alignment="left",
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            ncol=columns(rows),
            fontsize=8.5,
            handlelength=1.6,
            columnspacing=1.2,
            borderaxespad=0.2,
        )
    ax = axes[-1, 0]
    ax.set_xscale("log")
    ax.set_xlim(min([*ratios, 0.2]) / 2.5, max([*ratios, 2.0]) * 2)
    ax.set_xlabel("our time / anchor's time (log scale; < 1: ours is faster)")
    return fig


@plotting.styled
def plot_bandwidth(results: dict[str, Any]):
    """The fraction of the device's copy bandwidth that each of our kernels reaches, counting
    the bytes the op must move at least; the dashed line is the decode goal (85% at batch 64),
    across the rows it applies to."""
    cases = [c for c in results["cases"] if c["bandwidth_fraction"] is not None]
    colors = _op_colors(results["cases"])
    fig, ax = plotting.subplots(1, 1, width=plotting.WIDTH, height=0.3 * len(cases) + 1.2)
    y = np.arange(len(cases))[::-1]
    fractions = [c["bandwidth_fraction"] for c in cases]
    ax.barh(y, fractions, color=[colors[c["op"]] for c in cases], height=0.6, zorder=2)
    for yi, f in zip(y, fractions, strict=True):
        ax.annotate(
            f"{100 * f:.0f}%",
            (f, yi),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            zorder=5,
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    goal = next(g for g in GOALS if g["metric"] == "bandwidth")
    aimed = [
        yi
        for c, yi in zip(cases, y, strict=True)
        if c["op"] == goal["case"] and c["config"].get("batch") == goal["batch"]
    ]
    if aimed:  # the goal across the rows it applies to
        _draw_goal(
            ax, goal["goal"], aimed, "black", 1,
            f"decode goal ({_pct(goal['goal'])} at batch {goal['batch']})",
        )  # fmt: skip
    labels = [f"{c['case']} ({c['variant']})" if c["variant"] else c["case"] for c in cases]
    short = [
        t.replace("dtype ", "").replace("bfloat16", "bf16").replace("float32", "fp32")
        for t in labels
    ]
    ax.set_yticks(y, short, fontsize=9)
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
