"""The chapter on fast kernels: the benchmark loader and goals, the plots, the live check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from matplotlib.figure import Figure

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
            assert case["ours_ms"] / ms == pytest.approx(case["ratio_to"][anchor], rel=0.01)
    assert len({c["label"] for c in results["cases"]}) == len(results["cases"])
    assert "H100" in kernel_benchmarks.provenance(results)
    table = kernel_benchmarks.goals_table(results)
    for goal in kernel_benchmarks.GOALS:
        assert goal["name"] in table


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


def test_missed_goals_report_the_factor(tmp_path):
    shutil.copy(BENCH / "bench_ssd.json", tmp_path / "bench_ssd.json")
    results = kernel_benchmarks.run({"profile": "ci", "bench_dir": str(tmp_path)})
    (fwd, *_) = [r for r in results["goals"] if r["goal"] == "SSD"]
    ratio = fwd["value"]
    assert fwd["met"] is (ratio <= 1.0)
    if not fwd["met"]:
        assert f"{ratio:.2f}x too slow" in fwd["status"]


def test_no_results_is_an_actionable_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"benchmarks/bench\.py"):
        kernel_benchmarks.run({"profile": "ci", "bench_dir": str(tmp_path)})


def test_plots_have_the_expected_axes():
    results = kernel_benchmarks.run(kernel_benchmarks.config("ci"))
    fig = kernel_benchmarks.plot(results)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert any(line.get_xdata()[0] == 1.0 for line in ax.get_lines())  # the line at 1
    rows = sum(len(c["anchors_ms"]) + len(c["errors"]) for c in results["cases"])
    assert len(ax.get_yticks()) == rows
    fig = kernel_benchmarks.plot_bandwidth(results)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    measured = [c for c in results["cases"] if c["bandwidth_fraction"] is not None]
    assert len(fig.axes[0].patches) == len(measured)


def test_bound():
    assert kernel_check.bound(3e-7) == "< 1e-06"
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
