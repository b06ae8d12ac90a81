"""Chapter 5's layer experiments: the 2022 layers at one parameter budget, the SGConv kernel
against S4D-Inv's, and GSS's speed against DSS's, each on tiny sizes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from ssm.experiments import available, gss_speed, layers_2022, sgconv_kernel
from ssm.experiments._training import LAYERS, datasets
from ssm.layers.sgconv import num_scales, upsampling

pytestmark = pytest.mark.usefixtures("one_thread")


def lines_with_data(ax) -> list:
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 0]


def test_registered_with_two_profiles():
    assert {"layers_2022", "sgconv_kernel", "gss_speed"} <= set(available())
    for module in (layers_2022, sgconv_kernel, gss_speed):
        assert module.config("ci") != module.config("full")
        with pytest.raises(ValueError, match="profile"):
            module.config("huge")


def test_every_2022_layer_is_compared():
    for profile in ("ci", "full"):
        assert set(layers_2022.config(profile)["layers"]) == set(layers_2022.MODELS)
        assert set(layers_2022.MODELS) <= set(LAYERS)


def test_budget_lands_every_layer_within_tolerance():
    cfg = layers_2022.config("ci")
    train_set, _ = datasets(cfg["data"], cfg["seed"])
    for kind, layer in cfg["layers"].items():
        width, params = layers_2022.width_for_budget(
            cfg["backbone"], layer, cfg["budget"], train_set
        )
        assert params == layers_2022.count(cfg["backbone"], layer, width, train_set)
        assert abs(params - cfg["budget"]) <= layers_2022.TOLERANCE * cfg["budget"], kind


def test_full_budget_lands_every_layer_within_tolerance():
    """The full profile's widths, on a stand-in for MNIST-1D at L = 1024 (only its shape)."""
    cfg = layers_2022.config("full")
    data = SimpleNamespace(seq_len=cfg["data"]["length"], n_classes=10, vocab_size=None,
                           d_input=1, per_step=False)  # fmt: skip
    for kind, layer in cfg["layers"].items():
        _, params = layers_2022.width_for_budget(cfg["backbone"], layer, cfg["budget"], data)
        assert abs(params - cfg["budget"]) <= layers_2022.TOLERANCE * cfg["budget"], kind


@pytest.fixture(scope="module")
def tiny_layers_run():
    cfg = layers_2022.config("ci")
    cfg["train"] |= {"steps": 3, "warmup_steps": 0, "eval_every": 0}
    return layers_2022.run(cfg)


def test_tiny_run_has_one_finite_row_per_layer(tiny_layers_run):
    runs = tiny_layers_run["runs"]
    assert list(runs) == list(layers_2022.MODELS)
    for kind, r in runs.items():
        assert r["accuracy"] is not None and 0 <= r["accuracy"] <= 1, kind
        assert math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0, kind
        assert r["parameters"] > 0 and r["d_model"] in layers_2022.WIDTHS, kind


def test_layers_summary_and_plot_show_every_layer(tiny_layers_run):
    text = layers_2022.summary(tiny_layers_run)
    for kind, name in layers_2022.MODELS.items():
        line = next(x for x in text.splitlines() if x.startswith(name + " "))
        assert line.endswith("n/a") == (kind not in layers_2022.PAPER_ROWS), line
    fig = layers_2022.plot(tiny_layers_run)
    assert isinstance(fig, Figure)
    scatter, bars = fig.axes
    points = [line for line in lines_with_data(scatter) if line.get_marker() in ("o", "x")]
    assert len(points) == len(layers_2022.MODELS)
    assert len(bars.patches) == len(layers_2022.MODELS)


def test_layers_summary_and_plot_without_timing(tiny_layers_run):
    text = layers_2022.summary(tiny_layers_run, timing=False)
    assert "ms/step" not in text
    assert all(name in text for name in layers_2022.MODELS.values())
    (ax,) = layers_2022.plot(tiny_layers_run, timing=False).axes
    points = [line for line in lines_with_data(ax) if line.get_marker() in ("o", "x")]
    assert len(points) == len(layers_2022.MODELS)


def test_summary_keeps_the_layer_order_of_a_stored_record(tiny_layers_run):
    stored = {**tiny_layers_run, "runs": dict(sorted(tiny_layers_run["runs"].items()))}
    rows = layers_2022.summary(stored, timing=False).splitlines()[2:]
    assert [row.split()[0] for row in rows] == list(layers_2022.MODELS.values())


def test_paper_averages_are_the_stored_rows():
    assert layers_2022.paper_average("s4") == pytest.approx(86.09)
    assert layers_2022.paper_average("s4d") == pytest.approx(85.50)
    assert layers_2022.paper_average("dss") == pytest.approx(81.18)
    assert layers_2022.paper_average("mega") == pytest.approx(88.21)
    assert layers_2022.paper_average("s5") == pytest.approx(87.46)
    assert layers_2022.paper_average("sgconv") == pytest.approx(87.17)
    assert layers_2022.paper_average("gss") is None  # GSS reports no LRA results
    assert layers_2022.paper_average("liquid_s4") is None  # only its abstract's average seen


@pytest.mark.parametrize(("L", "d"), [(1024, 32), (1000, 32), (64, 64), (4096, 64)])
def test_sgconv_boundaries_follow_the_layer(L, d):
    ends = sgconv_kernel.boundaries(L, d)
    assert len(ends) == num_scales(L, d)
    assert ends[-1] == L
    widths = np.diff([0, *ends])
    expected = [d * upsampling(i) for i in range(len(ends))]
    assert list(widths[:-1]) == expected[:-1] and widths[-1] <= expected[-1]


@pytest.fixture(scope="module")
def sgconv_results():
    return sgconv_kernel.run(sgconv_kernel.config("ci"))


def test_sgconv_parameters_grow_with_log_length(sgconv_results):
    cfg = sgconv_results["config"]
    rows = sgconv_results["parameters"]
    for r in rows:
        assert r["sgconv"] == num_scales(r["L"], cfg["kernel_dim"]) * cfg["kernel_dim"]
    steps = np.diff([r["sgconv"] for r in rows])  # the lengths double: one sub-kernel more
    assert np.all(steps == cfg["kernel_dim"])
    assert len({r["s4d"] for r in rows}) == 1


def test_sgconv_kernel_decays_by_pieces(sgconv_results):
    K = sgconv_results["kernels"]["sgconv"]
    assert K.shape == (sgconv_results["config"]["L"],)
    peaks = sgconv_results["piece_max"]
    assert peaks[-1] < peaks[0] / 4


def test_sgconv_summary_and_plot(sgconv_results):
    text = sgconv_kernel.summary(sgconv_results)
    assert all(f"{r['L']:>7}" in text for r in sgconv_results["parameters"])
    fig = sgconv_kernel.plot(sgconv_results)
    kernels, params = fig.axes
    assert len([x for x in lines_with_data(kernels) if len(x.get_xdata()) > 2]) == 2
    assert len(lines_with_data(params)) == 2


@pytest.fixture(scope="module")
def gss_results():
    cfg = gss_speed.config("ci") | {"lengths": [64, 128], "repeats": 1, "d_model": 32}
    return gss_speed.run(cfg)


def test_gss_speed_timings_are_positive(gss_results):
    assert len(gss_results["ms"]) == 2 * len(gss_results["config"]["lengths"])
    assert all(r["ms"] > 0 for r in gss_results["ms"])
    assert all(v > 0 for v in gss_speed.ratios(gss_results).values())


def test_gss_summary_and_plot(gss_results):
    text = gss_speed.summary(gss_results)
    assert "DSS / GSS" in text
    assert len([line for line in text.splitlines() if line.endswith("x")]) == 2
    fig = gss_speed.plot(gss_results)
    assert len(lines_with_data(fig.axes[0])) == 2
