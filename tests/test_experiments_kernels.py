"""The chapter on fast kernels: the benchmark loader and goals, the plots, the live check."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text
from PIL import Image

from ssm import plotting
from ssm.experiments import available, kernel_benchmarks, kernel_check

BENCH = Path(__file__).resolve().parent.parent / "data" / "bench"


def test_registered():
    assert {"kernel_benchmarks", "kernel_check"} <= set(available())


def test_loads_the_committed_benchmarks():
    results = kernel_benchmarks.run(kernel_benchmarks.config("ci"))
    committed = sorted(BENCH.glob("bench_*.json"))
    assert len(results["files"]) == len(committed) > 0
    n_cases = sum(len(json.loads(p.read_text())["cases"]) for p in committed)
    assert len(results["cases"]) == n_cases
    for case in results["cases"]:
        for anchor, ms in case["anchors_ms"].items():
            # bench.py stores each ratio rounded to 3 decimals
            expected = pytest.approx(case["ratio_to"][anchor], rel=0.01, abs=5e-4)
            assert case["ours_ms"] / ms == expected
    assert len({c["label"] for c in results["cases"]}) == len(results["cases"])
    assert "H100" in kernel_benchmarks.provenance(results)
    table = kernel_benchmarks.goals_table(results)
    for goal in kernel_benchmarks.GOALS:
        assert goal["name"] in table
    widest = max(len(line) for line in table.splitlines())
    assert widest <= 72, f"the goals table is {widest} characters wide: it wraps in the column"


def _write(tmp_path: Path, cases: list[dict], op: str = "selective_scan") -> Path:
    meta = json.loads(next(BENCH.glob("bench_*.json")).read_text())
    record = {k: v for k, v in meta.items() if k not in ("op", "cases")} | {
        "op": op,
        "cases": cases,
    }
    (tmp_path / f"bench_{op}.json").write_text(json.dumps(record))
    return tmp_path


def test_goals_with_an_errored_anchor_and_a_new_op(tmp_path):
    cases = [
        {
            "case": "selective_scan fwd",
            "config": {"dim": 2048, "dtype": "torch.bfloat16"},
            "ms": {"ssm (Triton)": 1.0, "mamba_ssm selective_scan_fn (CUDA)": 2.5},
            "errors": {},
            "ratio_to": {"mamba_ssm selective_scan_fn (CUDA)": 0.4},
            "bandwidth_fraction": 0.5,
        },
        {
            "case": "selective_scan fwd",
            "config": {"dim": 4096, "dtype": "torch.bfloat16"},
            "ms": {"ssm (Triton)": 3.0},
            "errors": {"mamba_ssm selective_scan_fn (CUDA)": "RuntimeError: no GPU kernel"},
            "ratio_to": {},
            "bandwidth_fraction": 0.4,
        },
    ]
    results = kernel_benchmarks.run({"profile": "ci", "bench_dir": str(_write(tmp_path, cases))})
    labels = [c["label"] for c in results["cases"]]
    assert labels == ["selective_scan fwd (dim 2048)", "selective_scan fwd (dim 4096)"]
    rows = [r for r in results["goals"] if r["goal"] == "selective scan"]
    assert rows[0]["met"] and rows[0]["value"] == pytest.approx(0.4)
    assert rows[0]["status"] == "met (0.40x), aim met"
    assert rows[1]["value"] is None and rows[1]["status"] == "anchor failed to run"
    ssd = [r for r in results["goals"] if r["goal"] == "SSD"]
    assert ssd[0]["status"] == "no measurement in data/bench yet"
    assert isinstance(kernel_benchmarks.plot(results), Figure)
    assert "anchor failed" in kernel_benchmarks.goals_table(results)
    text = kernel_benchmarks.prose(results)
    assert "2.50× faster" in text["bench-comparisons"]
    assert text["bench-failed"] == "mamba_ssm selective_scan_fn (CUDA) in 1 case (RuntimeError)"
    assert "met in 1 of 1 case; best 0.40×" in text["bench-goals"]
    assert "1 more without a measurement" in text["bench-goals"]
    assert "**SSD** (at most 1.00×" in text["bench-goals"] and "not measured" in text["bench-goals"]
    assert text["bench-decode"] == "not measured in this run"


def test_missed_goals_report_the_factor(tmp_path):
    shutil.copy(BENCH / "bench_ssd.json", tmp_path / "bench_ssd.json")
    results = kernel_benchmarks.run({"profile": "ci", "bench_dir": str(tmp_path)})
    (fwd, *_) = [r for r in results["goals"] if r["goal"] == "SSD"]
    ratio = fwd["value"]
    assert fwd["met"] is (ratio <= 1.0)
    if not fwd["met"]:
        assert f"{ratio:.2f}x too slow" in fwd["status"]


def test_summary_numbers_are_the_files_ratios():
    """Every ratio and fraction the chapter's text quotes is the JSON's own ``ratio_to`` and
    ``bandwidth_fraction``, and the text is made from them."""
    results = kernel_benchmarks.run(kernel_benchmarks.config("ci"))
    files = {p.name: json.loads(p.read_text()) for p in sorted(BENCH.glob("bench_*.json"))}
    raw = [(r["op"], c) for r in files.values() for c in r["cases"]]
    by_label = dict(zip([c["label"] for c in results["cases"]], raw, strict=True))
    summary = kernel_benchmarks.summary(results)
    quoted = 0
    for comp in summary["comparisons"]:
        for row in comp["cases"]:
            op, case = by_label[row["label"]]
            assert (op, case["case"]) == (comp["op"], comp["case"])
            assert row["ratio"] == case["ratio_to"][comp["anchor"]]
            quoted += 1
        assert comp["fastest"]["ratio"] == min(r["ratio"] for r in comp["cases"])
        assert comp["slowest"]["ratio"] == max(r["ratio"] for r in comp["cases"])
    assert quoted == sum(len(c.get("ratio_to", {})) for _, c in raw)
    for b in summary["bandwidth"]:
        assert b["fraction"] == by_label[b["label"]][1]["bandwidth_fraction"]
    for goal in summary["goals"]:
        assert goal["met"] + goal["missed"] == goal["measured"]
        for row in goal["rows"]:
            if row.get("anchor"):
                assert row["value"] == by_label[row["case"]][1]["ratio_to"][row["anchor"]]
    text = kernel_benchmarks.prose(results)
    for comp in summary["comparisons"]:
        assert kernel_benchmarks.speed(comp["fastest"]["ratio"]) in text["bench-comparisons"]
    for goal in summary["goals"]:
        assert f"**{goal['goal']}**" in text["bench-goals"]
    measured = sum(g["measured"] for g in summary["goals"])
    assert f"of the {measured} measured cases" in text["bench-goals-headline"]


def test_speed_in_words():
    assert kernel_benchmarks.speed(0.25) == "4.00× faster"
    assert kernel_benchmarks.speed(1.72) == "1.72× slower"
    assert kernel_benchmarks.speed(0.02) == "50× faster"
    assert kernel_benchmarks.speed(1.0) == "as fast"


def test_no_results_is_an_actionable_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"benchmarks/bench\.py"):
        kernel_benchmarks.run({"profile": "ci", "bench_dir": str(tmp_path)})


def texts(fig) -> list:
    return [t for t in fig.findobj(Text) if t.get_text() and t.get_visible()]


def guide_lines(ax) -> list:
    """The vertical guides of a panel: axvline (a Line2D) and vlines (a LineCollection)."""
    lines = [ln for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1 and ln.get_ls() != "None"]
    return lines + [c for c in ax.collections if isinstance(c, LineCollection)]


def style_of(guide) -> tuple:
    """``(line style, colour)`` of a guide, with the dash pattern of a LineCollection."""
    if isinstance(guide, LineCollection):
        _, dashes = guide.get_linestyle()[0]
        return ("-" if dashes is None else tuple(dashes), to_hex(guide.get_color()[0]))
    return (guide.get_linestyle(), to_hex(guide.get_color()))


def check_readable(fig) -> None:
    """Readable at the book's column width: no wider than a full-width figure, no text
    smaller than 8 pt, every value label drawn over the guide lines on an opaque backing."""
    assert fig.get_figwidth() <= plotting.WIDTH
    width, _ = Image.open(io.BytesIO(plotting.png_bytes(fig, dpi=100))).size
    assert width <= 100 * plotting.WIDTH + 10, "the legends or labels stick out of the figure"
    assert min(t.get_fontsize() for t in texts(fig)) >= 8
    for ax in fig.axes:
        guides = guide_lines(ax)
        assert guides, f"panel {ax.get_title()!r} has no guide line"
        top = max(g.get_zorder() for g in guides)
        for note in [t for t in ax.texts if isinstance(t, Annotation)]:
            assert note.get_zorder() > top, f"a guide line is drawn over {note.get_text()!r}"
            patch = note.get_bbox_patch()
            assert patch is not None and patch.get_facecolor()[:3] == (1.0, 1.0, 1.0)
        # guides that mean different things look different, and the legend names each
        assert len({style_of(g) for g in guides}) == len(guides), ax.get_title()
        legend = ax.get_legend() or fig.legends[0]
        names = [t.get_text() for t in legend.get_texts()]
        assert all(g.get_label() in names for g in guides), names


def test_plots_have_the_expected_axes():
    results = kernel_benchmarks.run(kernel_benchmarks.config("ci"))
    fig = kernel_benchmarks.plot(results)
    timed = [c for c in results["cases"] if c["ours_ms"] is not None]
    ops = list(dict.fromkeys(c["op"] for c in timed))
    assert isinstance(fig, Figure) and len(fig.axes) == len(ops)  # one panel per op
    assert sum(len(ax.get_yticks()) for ax in fig.axes) == len(timed)  # one row per case
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert any(set(line.get_xdata()) == {1.0} for line in ax.get_lines())  # the line at 1
    markers = sum(
        len(line.get_xdata())
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_ls() == "None"
    )
    assert markers == sum(len(c["anchors_ms"]) + len(c["errors"]) for c in timed)
    check_readable(fig)
    fig = kernel_benchmarks.plot_bandwidth(results)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    measured = [c for c in results["cases"] if c["bandwidth_fraction"] is not None]
    assert len(fig.axes[0].patches) == len(measured)
    check_readable(fig)


def test_text_says_a_range_once_and_agrees_with_the_figure():
    """A comparison whose fastest and slowest size read the same in words says it once, and no
    anchor the figure has a row for is called unavailable."""
    results = kernel_benchmarks.run(kernel_benchmarks.config("ci"))
    text = kernel_benchmarks.prose(results)
    for line in text["bench-comparisons"].splitlines():
        ranged = re.search(r"from (\S+ \S+) \(([^)]*)\) to (\S+ \S+) \(([^)]*)\)", line)
        if ranged:
            assert ranged.group(1) != ranged.group(3), line
            assert ranged.group(2) != ranged.group(4), line
    assert "250× faster at each of the 2 sizes" in text["bench-comparisons"]
    fig = kernel_benchmarks.plot(results)
    plotted = {t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()}
    for name in kernel_benchmarks.summary(results)["unavailable"]:
        assert not any(name in label for label in plotted), name
        assert name in text["bench-unavailable"]
    assert text["bench-unavailable"] == "none"  # every anchor the files name ran somewhere


def test_bound():
    assert kernel_check.bound(3e-7) == "< 1e-06"
    assert kernel_check.bound(3e-8) == "< 1e-06"  # float32 round-off: one bound on every CPU
    assert kernel_check.bound(1.2e-5) == "< 1e-04"
    assert kernel_check.bound(0.0) == "0"


def test_kernel_check_in_the_interpreter():
    """Every Triton kernel against its float64 reference, in a subprocess under
    TRITON_INTERPRET=1 (the ci profile, as the chapter runs it)."""
    results = kernel_check.run(kernel_check.config("ci"))
    assert list(results["errors"]) == list(kernel_check.CHECKS)
    assert kernel_check.worst(results) < 1e-4
    assert results["errors"]["selective_scan"].keys() >= {"out", "state", "du", "dA"}
    assert "interpreter" in results["where"]
    assert "selective_scan" in kernel_check.table(results)
    fig = kernel_check.plot(results)  # the plot of the experiment's contract
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(kernel_check.CHECKS)
    markers = [line for line in ax.get_lines() if line.get_ls() == "None"]
    assert sum(len(line.get_xdata()) for line in markers) == sum(
        len(e) for e in results["errors"].values()
    )
    assert {line.get_label() for line in markers} == {"outputs", "gradients"}
    guides = guide_lines(ax)
    assert sorted(g.get_xdata()[0] for g in guides) == [
        kernel_check.FLOAT32_ROUNDOFF,
        kernel_check.BOUND,
    ]
    assert len({style_of(g) for g in guides}) == 2  # told apart, and named in the legend
    assert all(g.get_label() in [t.get_text() for t in fig.legends[0].get_texts()] for g in guides)
