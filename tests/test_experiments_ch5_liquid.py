"""Chapter 5's Liquid-S4 figure: S4D's superposition gap is round-off, Liquid-S4's is the
order-2 term of its kernel (and nothing else), the convolution form and the layer's forward
pass equal the recurrence, and the summary and figure show it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ssm.experiments import available, liquid_superposition
from ssm.layers.liquid_s4 import LIQUID_KERNELS

pytestmark = pytest.mark.usefixtures("one_thread")


def lines_with_data(ax) -> list:
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 2]


def shifted(K: np.ndarray, start: int) -> np.ndarray:
    """``K`` delayed to begin at step ``start``, cut to its length."""
    return np.concatenate([np.zeros(start), K[: len(K) - start]])


@pytest.fixture(scope="module")
def results():
    return liquid_superposition.run(liquid_superposition.config("ci"))


def test_registered_with_two_profiles():
    assert "liquid_superposition" in available()
    assert liquid_superposition.config("ci") != liquid_superposition.config("full")
    with pytest.raises(ValueError, match="profile"):
        liquid_superposition.config("huge")


def test_s4d_is_linear_and_liquid_s4_is_not(results):
    assert results["s4d_gap"] < 1e-12
    for variant in LIQUID_KERNELS:
        assert results["gap_peak"][variant] > 1e-3
        assert results["gap_peak"][variant] > 1e-3 * results["response_peak"][variant]


def test_the_gap_is_the_order_2_kernel_from_t2(results):
    """Two unit impulses at ``t₁`` and ``t₂ = t₁ + 1``: the one new product is
    ``u_{t₂} u_{t₁} = 1``, so the gap is ``K^{(2)}`` delayed to ``t₂``; neither ``K^{(2)}`` from
    ``t₁`` nor ``K^{(1)}`` from ``t₂`` is."""
    t2 = results["config"]["t1"] + 1
    for variant in LIQUID_KERNELS:
        gap, K = results["gap"][variant], results["kernels"][variant]
        assert results["prediction_error"][variant] < 1e-9
        np.testing.assert_allclose(results["prediction"][variant], shifted(K[1], t2), atol=1e-15)
        assert liquid_superposition.rel(gap, shifted(K[1], t2)) < 1e-9
        assert liquid_superposition.rel(gap, shifted(K[1], t2 - 1)) > 0.1
        assert liquid_superposition.rel(gap, shifted(K[0], t2)) > 0.1


@pytest.mark.parametrize("variant", LIQUID_KERNELS)
def test_the_gap_scales_with_both_amplitudes(variant):
    """Impulses of heights 2 and -3: the gap is ``-6 K^{(2)}`` from ``t₂``, and the kernel
    formula (:func:`predicted_gap`) says so."""
    cfg = {**liquid_superposition.config("ci"), "L": 48}
    lay = liquid_superposition.layer(cfg, cfg["order"], variant)
    u = liquid_superposition.pulses(cfg)
    u[0] *= 2.0
    u[1] *= -3.0
    u[2] = u[0] + u[1]
    with torch.no_grad():
        gap = liquid_superposition.gap_of(liquid_superposition.ssm_output(lay, u))[0].numpy()
        K2 = lay.liquid_kernels()[1, 0].numpy()
    predicted = liquid_superposition.predicted_gap(K2, u[0, 0].numpy(), u[1, 0].numpy())
    assert liquid_superposition.rel(gap, predicted) < 1e-9
    assert liquid_superposition.rel(gap, -6.0 * shifted(K2, cfg["t1"] + 1)) < 1e-9


def test_order_3_terms_add_nothing_for_two_impulses():
    cfg = {**liquid_superposition.config("ci"), "L": 48}
    u = liquid_superposition.pulses(cfg)
    with torch.no_grad():
        gaps = [
            liquid_superposition.gap_of(
                liquid_superposition.ssm_output(liquid_superposition.layer(cfg, order, "kb"), u)
            )
            for order in (2, 3)
        ]
    torch.testing.assert_close(gaps[0], gaps[1], rtol=0, atol=1e-14)


def test_impulses_apart_do_not_interact(results):
    assert all(gap < 1e-12 for gap in results["apart_gap"].values())


def test_convolution_and_forward_equal_the_recurrence(results):
    for name in liquid_superposition.MODELS:
        assert results["recurrence_error"][name] < 1e-9, name
        assert results["forward_error"][name] < 1e-9, name
        assert results["formula_error"][name] < 1e-12, name


def test_every_model_has_the_same_parameters():
    cfg = {**liquid_superposition.config("ci"), "L": 16}
    states = [
        liquid_superposition.layer(cfg, order, variant).state_dict()
        for order, variant in [(1, "pb"), *((3, v) for v in LIQUID_KERNELS)]
    ]
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in states[0])


def test_pb_kernels_are_flat_and_kb_kernels_are_not(results):
    pb, kb = results["kernels"]["pb"], results["kernels"]["kb"]
    assert pb.shape == kb.shape == (results["config"]["order"], results["config"]["L"])
    np.testing.assert_allclose(pb[1:], np.broadcast_to(pb[1:, :1], pb[1:].shape), rtol=1e-12)
    assert np.ptp(kb[1]) > 0.1 * np.abs(kb[1]).max()
    np.testing.assert_array_equal(pb[0], kb[0])  # K^{(1)}: S4D's in both


def test_summary_prints_bounds_and_rounded_peaks(results):
    text = liquid_superposition.summary(results)
    s4d = next(line for line in text.splitlines() if line.startswith("S4D"))
    assert s4d.split()[3:6] == ["0", "(<", "1e-12)"]
    for variant in LIQUID_KERNELS:
        line = next(x for x in text.splitlines() if x.startswith(f"Liquid-S4, {variant}"))
        assert f"{results['gap_peak'][variant]:.3g}" in line
        assert line.count("< 1e-9") == 3
    decimals = re.findall(r"\d+\.\d+", text)  # no raw round-off digits: 3 significant at most
    assert decimals and all(len(x.replace(".", "").lstrip("0")) <= 3 for x in decimals)


def test_plot_has_both_panels_with_data(results):
    fig = liquid_superposition.plot(results)
    assert isinstance(fig, Figure)
    kernels, gaps = fig.axes
    P = results["config"]["order"]
    assert len(lines_with_data(kernels)) == 1 + 2 * (P - 1)
    assert len(lines_with_data(gaps)) == len(liquid_superposition.MODELS) + len(LIQUID_KERNELS)
    for ax, letter in ((kernels, "(a)"), (gaps, "(b)")):
        assert ax.get_title().startswith(letter)
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
