"""Δ as a timescale (HTTYH, arXiv:2206.12037v2, Section 4): the S4-LegS kernel is 1/Δ steps wide."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from ssm import hippo
from ssm.experiments import timescale


@pytest.fixture(scope="module")
def results():
    return timescale.run(timescale.config("ci"))


def test_width_is_inverse_to_the_step(results):
    """The fitted log-log slope of width against Δ is -1 within 0.1, and ``w·Δ`` stays near
    ``ln 10`` (90 % of the mass of LegS's slowest mode ``e^{-t}``)."""
    assert abs(results["slope"] + 1) < 0.1
    np.testing.assert_allclose(results["width_time"], np.log(10), rtol=0.1)


def test_kernel_samples_the_continuous_kernel():
    """``K̄[l] ≈ Δ·C exp((l + ½)ΔA) B`` at a small step: the bilinear kernel is Δ times the
    continuous kernel sampled at the midpoints (``B̄ = (I - ΔA/2)⁻¹ΔB ≈ Δ exp(ΔA/2) B``)."""
    cfg = {**timescale.config("ci"), "N": 8, "L": 400}
    dt = 0.005
    K = timescale.kernel(cfg, dt)
    gen = torch.Generator().manual_seed(cfg["seed"])
    C = torch.randn(8, generator=gen, dtype=torch.float64).numpy()
    A, B = (x.numpy() for x in hippo.transition("legs", 8))
    step = scipy.linalg.expm(dt * A)
    x, cont = scipy.linalg.expm(dt / 2 * A) @ B, []
    for _ in range(cfg["L"]):
        cont.append(C @ x)
        x = step @ x
    cont = dt * np.array(cont)
    assert np.abs(K - cont).max() < 3e-3 * np.abs(cont).max()


def test_width_definition():
    assert timescale.width(np.array([1.0, 1.0, 1.0, 1.0]), 0.5) == 2
    assert timescale.width(np.array([0.0, -2.0, 0.0, 0.1]), 0.9) == 2
    with pytest.raises(ValueError, match="mass"):
        timescale.width(np.ones(3), 1.5)
    with pytest.raises(ValueError, match="nonzero 1-D"):
        timescale.width(np.zeros(3))


def test_widget_redraws_and_matches_the_static_twin(results):
    from ssm import plotting

    box = timescale.widget(results)
    slider, image = box.children
    assert slider.value == results["config"]["default"]
    first = image.value
    assert first == plotting.png_bytes(timescale.static_twin(results))
    slider.value = -1.0
    assert image.value != first
    assert image.value == plotting.png_bytes(timescale.kernel_figure(results, -1.0))


def test_figure(results):
    fig = timescale.plot(results)
    kernels, widths = fig.axes
    assert len(kernels.lines) == 2 * len(results["config"]["shown"])
    assert widths.get_xscale() == widths.get_yscale() == "log"
    assert "slope" in timescale.summary(results)
