"""Figure regression: every chapter figure of the ``ci`` profile against a committed baseline.

nbval compares the text of the notebooks' outputs, not their images. This test re-renders each
figure the chapters show (the experiments' ``plot`` functions on ``run(config("ci"))``) and
compares it with ``tests/figures/<name>.png`` by the root-mean-square difference of the pixels
(``matplotlib.testing.compare.compare_images``). Live timing figures are left out: they differ
from run to run (their claims are tested in tests/test_experiments_ch1.py); figures of round-off
are drawn from stored results (:data:`ROUNDOFF_FIGURES`).

After an intended change of a figure, regenerate the baselines and look at them before
committing:

    SSM_UPDATE_FIGURES=1 .venv/bin/pytest tests/test_figures.py
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure
from matplotlib.testing.compare import compare_images
from matplotlib.testing.exceptions import ImageComparisonFailure

from ssm import plotting
from ssm.experiments import (
    char_lm,
    decoding_state,
    diagonal_cost,
    discretization,
    dss_discretization,
    dss_init,
    dss_interpretation,
    dss_overflow,
    dss_vs_s4,
    ema_convolution,
    gss_speed,
    hippo_ablation,
    hippo_memory,
    httyh_basis,
    induction_extrapolation,
    kernel_benchmarks,
    kernel_check,
    kernel_explorer,
    layers_2022,
    liquid_superposition,
    lra_samples,
    mega_attention_cost,
    mega_block,
    mega_chunk_ablation,
    mini_lra,
    recall_scaling,
    s4_kernel,
    s4_layer_speed,
    s4d_basis,
    s4d_discretization_ablation,
    s4d_init_ablation,
    s4d_kernel_ablation,
    s5_sampling,
    selection_animation,
    sgconv_kernel,
    stored,
    timescale,
    views,
)
from ssm.experiments._results import to_jsonable

BASELINES = Path(__file__).resolve().parent / "figures"
UPDATE = os.environ.get("SSM_UPDATE_FIGURES") == "1"
#: Root-mean-square difference allowed, on the 0-255 scale: antialiasing and round-off, no more.
TOL = 1.0
#: Baselines are rendered at the figures' own dpi (the notebooks show twice that), which is
#: enough to see any change and keeps them small.
DPI = 100

# The timings of views and s4_kernel are not drawn here: one tiny round keeps the runs short.
NO_TIMINGS = {
    "views": {"lengths": [128], "repeats": 1},
    "s4_kernel": {"lengths": [256], "sizes": [16], "repeats": 1},
}


#: Figures whose data is round-off, whose digits change with the CPU and the libraries: they are
#: drawn from the results stored beside their baseline (``<name>.json``, rewritten with the
#: baselines), so this test checks their drawing; the experiments' tests check their values.
ROUNDOFF_FIGURES = ("kernel_check", "s4_kernel")


@functools.cache
def results(name: str) -> dict[str, Any]:
    if name in ROUNDOFF_FIGURES:
        return roundoff_results(name)
    return fresh_results(name)


def roundoff_results(name: str) -> dict[str, Any]:
    path = BASELINES / f"{name}.json"
    if UPDATE:
        path.write_text(
            json.dumps(to_jsonable(fresh_results(name)), indent=1, sort_keys=True) + "\n"
        )
    return json.loads(path.read_text())


def fresh_results(name: str) -> dict[str, Any]:
    module = {
        "discretization": discretization,
        "hippo_memory": hippo_memory,
        "kernel_benchmarks": kernel_benchmarks,
        "kernel_check": kernel_check,
        "kernel_explorer": kernel_explorer,
        "s4_kernel": s4_kernel,
        "views": views,
        "lra_samples": lra_samples,
        "hippo_ablation": hippo_ablation,
        "httyh_basis": httyh_basis,
        "timescale": timescale,
        "mini_lra": mini_lra,
        "s4_layer_speed": s4_layer_speed,
        "dss_discretization": dss_discretization,
        "dss_overflow": dss_overflow,
        "dss_interpretation": dss_interpretation,
        "dss_init": dss_init,
        "dss_vs_s4": dss_vs_s4,
        "s4d_basis": s4d_basis,
        "s4d_kernel_ablation": s4d_kernel_ablation,
        "s4d_discretization_ablation": s4d_discretization_ablation,
        "s4d_init_ablation": s4d_init_ablation,
        "ema_convolution": ema_convolution,
        "mega_block": mega_block,
        "mega_chunk_ablation": mega_chunk_ablation,
        "s5_sampling": s5_sampling,
        "liquid_superposition": liquid_superposition,
        "sgconv_kernel": sgconv_kernel,
        "layers_2022": layers_2022,
        "decoding_state": decoding_state,
        "selection_animation": selection_animation,
        "induction_extrapolation": induction_extrapolation,
        "recall_scaling": recall_scaling,
        "char_lm": char_lm,
    }[name]
    return module.run(module.config("ci") | NO_TIMINGS.get(name, {}))


#: Every figure of the chapters in the ci profile, by baseline name.
FIGURES: dict[str, Callable[[], Figure]] = {
    "discretization_trajectory": lambda: discretization.plot_trajectory(results("discretization")),
    "discretization_convergence": lambda: discretization.plot_convergence(
        results("discretization")
    ),
    "views_outputs": lambda: views.plot_outputs(results("views")),
    "hippo_memory": lambda: hippo_memory.plot(results("hippo_memory")),
    "hippo_memory_frame": lambda: hippo_memory.animation(results("hippo_memory"), frame=5),
    "s4_kernel": lambda: s4_kernel.plot_kernels(results("s4_kernel")),
    "kernel_explorer": lambda: kernel_explorer.plot(results("kernel_explorer")),
    "kernel_check": lambda: kernel_check.plot(results("kernel_check")),
    "kernel_benchmarks": lambda: kernel_benchmarks.plot(results("kernel_benchmarks")),
    "kernel_benchmarks_bandwidth": lambda: kernel_benchmarks.plot_bandwidth(
        results("kernel_benchmarks")
    ),
    "lra_samples": lambda: lra_samples.plot(results("lra_samples")),
    "hippo_ablation": lambda: hippo_ablation.plot(results("hippo_ablation")),
    "hippo_ablation_full": lambda: hippo_ablation.plot(stored("hippo_ablation")["results"]),
    "httyh_basis": lambda: httyh_basis.plot(results("httyh_basis")),
    "httyh_reconstruction": lambda: httyh_basis.plot_reconstruction(results("httyh_basis")),
    "timescale": lambda: timescale.plot(results("timescale")),
    "timescale_twin": lambda: timescale.static_twin(results("timescale")),
    "mini_lra": lambda: mini_lra.plot(results("mini_lra")),
    "mini_lra_full": lambda: mini_lra.plot(stored("mini_lra")["results"]),
    "s4_layer_speed": lambda: s4_layer_speed.plot(results("s4_layer_speed")),
    "dss_discretization": lambda: dss_discretization.plot(results("dss_discretization")),
    "dss_overflow": lambda: dss_overflow.plot(results("dss_overflow")),
    "dss_interpretation": lambda: dss_interpretation.plot(results("dss_interpretation")),
    "dss_init": lambda: dss_init.plot(results("dss_init")),
    "dss_vs_s4": lambda: dss_vs_s4.plot(results("dss_vs_s4")),
    "dss_vs_s4_full": lambda: dss_vs_s4.plot(stored("dss_vs_s4")["results"]),
    "s4d_basis": lambda: s4d_basis.plot(results("s4d_basis")),
    "diagonal_kernels_gpu": lambda: diagonal_cost.plot_benchmark(
        diagonal_cost.stored_benchmark(diagonal_cost.config("ci"))
    ),
    "s4d_kernel_ablation": lambda: s4d_kernel_ablation.plot(results("s4d_kernel_ablation")),
    "s4d_kernel_ablation_full": lambda: s4d_kernel_ablation.plot(
        stored("s4d_kernel_ablation")["results"]
    ),
    "s4d_discretization_ablation": lambda: s4d_discretization_ablation.plot(
        results("s4d_discretization_ablation")
    ),
    "s4d_discretization_ablation_full": lambda: s4d_discretization_ablation.plot(
        stored("s4d_discretization_ablation")["results"]
    ),
    "s4d_init_ablation": lambda: s4d_init_ablation.plot(results("s4d_init_ablation")),
    "s4d_init_ablation_full": lambda: s4d_init_ablation.plot(
        stored("s4d_init_ablation")["results"]
    ),
    "ema_convolution": lambda: ema_convolution.plot(results("ema_convolution")),
    "mega_block": lambda: mega_block.plot(results("mega_block")),
    "mega_attention_cost_full": lambda: mega_attention_cost.plot(
        stored("mega_attention_cost")["results"]
    ),
    "mega_chunk_ablation": lambda: mega_chunk_ablation.plot(results("mega_chunk_ablation")),
    "mega_chunk_ablation_full": lambda: mega_chunk_ablation.plot(
        stored("mega_chunk_ablation")["results"]
    ),
    "gss_speed_full": lambda: gss_speed.plot(stored("gss_speed")["results"]),
    "s5_sampling": lambda: s5_sampling.plot(results("s5_sampling")),
    "liquid_superposition": lambda: liquid_superposition.plot(results("liquid_superposition")),
    "sgconv_kernel": lambda: sgconv_kernel.plot(results("sgconv_kernel")),
    "layers_2022": lambda: layers_2022.plot(results("layers_2022"), timing=False),
    "layers_2022_full": lambda: layers_2022.plot(stored("layers_2022")["results"]),
    "decoding_state": lambda: decoding_state.plot(results("decoding_state")),
    "selection_animation": lambda: selection_animation.plot(results("selection_animation")),
    "selection_animation_full": lambda: selection_animation.plot(
        stored("selection_animation")["results"]
    ),
    "induction_extrapolation": lambda: induction_extrapolation.plot(
        results("induction_extrapolation")
    ),
    "recall_scaling": lambda: recall_scaling.plot(results("recall_scaling")),
    "char_lm": lambda: char_lm.plot(results("char_lm"), timing=False),
}


def render(fig: Figure, path: Path) -> Path:
    path.write_bytes(plotting.png_bytes(fig, dpi=DPI))
    return path


def difference(baseline: Path, actual: Path) -> str | None:
    """``None`` when the images match within :data:`TOL`, else what differs."""
    try:
        return compare_images(str(baseline), str(actual), tol=TOL)
    except ImageComparisonFailure as err:  # e.g. the sizes differ
        return str(err)


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_matches_its_baseline(name, tmp_path):
    baseline = BASELINES / f"{name}.png"
    if UPDATE:
        BASELINES.mkdir(exist_ok=True)
        render(FIGURES[name](), baseline)
    assert baseline.exists(), (
        f"no baseline for figure {name!r}: run SSM_UPDATE_FIGURES=1 pytest tests/test_figures.py"
    )
    diff = difference(baseline, render(FIGURES[name](), tmp_path / f"{name}.png"))
    assert diff is None, (
        f"figure {name!r} changed: {diff}\nIf the change is intended, regenerate the baselines "
        "(SSM_UPDATE_FIGURES=1 pytest tests/test_figures.py) and look at them before committing."
    )


def test_every_baseline_is_a_figure_of_the_book():
    stale = sorted(p.stem for p in BASELINES.glob("*.png") if p.stem not in FIGURES)
    assert not stale, f"baselines of figures no chapter has any more: {stale}"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda fig: fig.axes[0].set_title("another title"), id="a title"),
        pytest.param(lambda fig: fig.axes[1].get_lines()[0].set_color("red"), id="a colour"),
        pytest.param(
            lambda fig: (
                fig.axes[0].get_lines()[1].set_ydata(1.1 * fig.axes[0].get_lines()[1].get_ydata())
            ),
            id="one curve 10% off",
        ),
    ],
)
def test_a_changed_figure_fails(change, tmp_path):
    """The comparison sees a small change: a title, a colour, one curve moved by 10%."""
    fig = FIGURES["kernel_explorer"]()
    change(fig)
    diff = difference(BASELINES / "kernel_explorer.png", render(fig, tmp_path / "changed.png"))
    assert diff is not None
