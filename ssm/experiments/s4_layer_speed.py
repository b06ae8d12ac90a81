"""Chapter 2: the S4 layer's training throughput on a GPU, beside the S4 authors' own layer.

Nothing is timed here: the numbers come from ``data/bench/s4_layer.json``, written on a GPU by
``benchmarks/bench_s4_layer.py`` (see ``benchmarks/README.md``), which runs this package's
:class:`ssm.layers.S4` and the S4 authors' ``S4Block`` (their Cauchy CUDA extension compiled on
the machine) side by side in one process, on the same inputs, with the same parameters.
Both profiles read the same file.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .. import plotting
from ._common import check_profile
from ._results import data_path

OURS, THEIRS = "ssm S4", "S4 authors' S4Block"


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {"profile": profile, "file": "data/bench/s4_layer.json"}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    path = data_path(cfg["file"])
    if not path.is_file():
        raise FileNotFoundError(
            f"no stored S4 layer benchmark ({path} does not exist); run "
            "`python3 benchmarks/bench_s4_layer.py` on a GPU (benchmarks/README.md)"
        )
    return json.loads(path.read_text())


def describe(results: dict[str, Any]) -> str:
    """Where the numbers come from, in one line."""
    return (
        f"{results['benchmark']}: {results['device']}, torch {results['torch']}, "
        f"Triton {results['triton']}, commit {results['commit'][:10]}, {results['date'][:10]}; "
        f"the S4 authors' code at {results['s4_authors_commit'][:10]}, their Cauchy kernel: "
        f"{results['s4_cuda_extension']}"
    )


def summary(results: dict[str, Any]) -> str:
    """Per case: forward and forward+backward times, tokens per second, and ours over theirs."""
    s = results["sizes"]
    lines = [
        f"one layer, batch {s['batch']}, H = {s['H']}, N = {s['N']}; times in ms",
        f"{'L':>6} {'precision':<9} {'fwd ours':>9} {'theirs':>7} {'fwd+bwd ours':>13} "
        f"{'theirs':>7} {'ratio':>6}",
    ]
    for case in results["cases"]:
        ours, theirs = case["layer"][OURS], case["layer"][THEIRS]
        lines.append(
            f"{case['L']:>6} {case['precision']:<9} {ours['ms_fwd']:>9.2f} {theirs['ms_fwd']:>7.2f}"
            f" {ours['ms_fwd_bwd']:>13.2f} {theirs['ms_fwd_bwd']:>7.2f} "
            f"{case['time_ratio_ours_over_theirs']['fwd_bwd']:>6.2f}"
        )
    errors = [c["rel_error_ours_vs_theirs_same_params"] for c in results["cases"]
              if "rel_error_ours_vs_theirs_same_params" in c]  # fmt: skip
    lines.append(
        f"largest relative difference of the outputs with equal parameters (fp32): "
        f"{max(errors):.1e}"
    )
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """Training tokens per second (forward + backward of one layer), ours and theirs, per case."""
    cases = results["cases"]
    fig, ax = plotting.subplots(1, 1, width=6.0, height=2.8)
    x = np.arange(len(cases))
    for offset, impl, color in ((-0.2, OURS, "s4"), (0.2, THEIRS, "reference")):
        rate = [c["layer"][impl]["tokens_per_s"] / 1e6 for c in cases]
        ax.bar(x + offset, rate, width=0.4, color=plotting.COLORS[color], label=impl)
    ax.set_xticks(x, [f"L = {c['L']}\n{c['precision']}" for c in cases])
    plotting.label(ax, None, "million tokens / s", results["device"])
    ax.legend(fontsize="small")
    return fig
