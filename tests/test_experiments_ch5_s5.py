"""Chapter 5's S5 figure: the spectra are HiPPO-N's (and S4D-Lin's), the sample times lie on the
fine grid, the fine-grid truth does not depend on the grid, S5's per-step Δ_k reproduces it to
round-off while one fixed Δ does not, and the summary and figure show it without round-off
digits."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ssm.experiments import available, s5_sampling
from ssm.layers._diagonal import diagonal_init
from ssm.layers.s5 import hippo_n_init

pytestmark = pytest.mark.usefixtures("one_thread")


def lines_with_data(ax) -> list:
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 0]


@pytest.fixture(scope="module")
def results():
    return s5_sampling.run(s5_sampling.config("ci"))


def test_registered_with_two_profiles():
    assert "s5_sampling" in available()
    ci, full = s5_sampling.config("ci"), s5_sampling.config("full")
    assert ci != full
    assert (ci["P"], full["P"]) == (64, 256)
    with pytest.raises(ValueError, match="profile"):
        s5_sampling.config("huge")


def test_spectra_are_hippo_n_and_s4d_lin(results):
    P, J = 64, results["config"]["blocks"]
    eigs = {n: np.asarray(w["real"]) + 1j * np.asarray(w["imag"])
            for n, w in results["eigenvalues"].items()}  # fmt: skip
    assert set(eigs) == set(s5_sampling.SPECTRA)
    for w in eigs.values():
        assert w.shape == (P // 2,)
        assert np.all(w.real < 0)
        np.testing.assert_allclose(w.real, -0.5, atol=1e-12)
    for name, blocks in (("hippo_n", 1), ("hippo_n_blocks", J)):
        init = hippo_n_init(P, blocks, conj_sym=True)[0].numpy()
        np.testing.assert_array_equal(eigs[name], init[np.argsort(init.imag)])
    np.testing.assert_allclose(eigs["s4d_lin"].imag, math.pi * np.arange(P // 2), rtol=1e-14)
    # J blocks: the spectrum of HiPPO-N of size P/J, each value J times
    small = np.sort(hippo_n_init(P // J, 1, conj_sym=True)[0].numpy().imag)
    np.testing.assert_allclose(eigs["hippo_n_blocks"].imag, np.repeat(small, J), rtol=1e-14)
    # S5's HiPPO-N (J = 1) is S4D-LegS's (DSS's) spectrum, and its frequencies outgrow πn
    legs = np.sort(diagonal_init("legs", P, 1)[0][0].numpy().imag)
    np.testing.assert_allclose(eigs["hippo_n"].imag, legs, rtol=1e-10, atol=1e-10)
    assert eigs["hippo_n"].imag.max() > 10 * eigs["s4d_lin"].imag.max()


def test_system_is_the_layer_init_in_float64():
    cfg = s5_sampling.config("ci")
    Lambda, B, C, dt = s5_sampling.s5_system(cfg)
    assert Lambda.dtype == B.dtype == C.dtype == torch.complex128
    assert (B.shape, C.shape) == ((cfg["P"] // 2, cfg["H"]), (cfg["H"], cfg["P"] // 2))
    assert torch.equal(Lambda, hippo_n_init(cfg["P"], 1, conj_sym=True)[0])
    assert torch.equal(dt, torch.full_like(dt, cfg["dt"]))
    again = s5_sampling.s5_system(cfg)
    assert torch.equal(B, again[1]) and torch.equal(C, again[2])  # seeded


def test_sample_times_lie_on_the_fine_grid(results):
    cfg = results["config"]
    steps = s5_sampling.sample_times(cfg)
    gaps = torch.diff(steps, prepend=steps.new_zeros(1))
    low, high = cfg["gap_steps"]
    assert len(steps) == cfg["samples"] and bool(((gaps >= low) & (gaps <= high)).all())
    assert len(set(gaps.tolist())) > 5  # irregular
    np.testing.assert_array_equal(results["t"], steps.numpy() * cfg["fine_step"])


def test_held_input_is_constant_over_each_gap():
    steps = torch.tensor([2, 3, 6])
    u = torch.tensor([[1.0], [2.0], [3.0]])
    assert s5_sampling.held(u, steps)[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_per_step_delta_matches_the_fine_grid_and_fixed_delta_does_not(results):
    dev, scale = results["deviation"], results["scale"]
    assert scale > 0.01
    assert dev["per_step"] < s5_sampling.BOUND
    assert dev["fixed"] > 0.2 * scale  # a large fraction of the output, not round-off
    truth = np.asarray(results["truth"])
    assert truth.shape == (results["config"]["samples"], results["config"]["H"])
    assert np.abs(np.asarray(results["per_step"]) - truth).max() == dev["per_step"]


def test_fine_grid_truth_does_not_depend_on_the_grid(results):
    """A fine step 2 or 3 times smaller (the same sample times) leaves the truth at the samples
    unchanged: it is the continuous system's output for the held input."""
    for refine in (2, 3):
        finer = s5_sampling.outputs(results["config"], refine=refine)
        np.testing.assert_array_equal(finer["t"], results["t"])
        np.testing.assert_allclose(finer["truth"], results["truth"], rtol=0,
                                   atol=s5_sampling.BOUND)  # fmt: skip
        assert len(finer["fine_t"]) > (refine - 0.1) * len(results["fine_t"])


def test_run_is_deterministic(results):
    again = s5_sampling.outputs(results["config"])
    for key in ("truth", "per_step", "fixed", "u"):
        np.testing.assert_array_equal(again[key], results[key])


def test_summary_prints_the_bound_not_round_off_digits(results):
    text = s5_sampling.summary(results)
    dev = results["deviation"]
    assert "< 1e-9" in text
    assert f"{dev['fixed']:#.2g}" in text
    assert not re.search(r"e-1\d", text)  # no round-off value printed
    assert f"{dev['per_step']:.2g}" not in text
    assert s5_sampling.deviation_text(3e-16) == "< 1e-9"
    assert s5_sampling.deviation_text(0.0912) == "0.091"
    assert s5_sampling.deviation_text(0.08) == "0.080"


def test_plot_has_three_lettered_panels_with_data(results):
    fig = s5_sampling.plot(results)
    assert isinstance(fig, Figure)
    spectra, inputs, outputs = fig.axes
    assert [ax.get_title()[:3] for ax in fig.axes] == ["(a)", "(b)", "(c)"]
    assert len(lines_with_data(spectra)) == 3
    assert spectra.get_legend() is not None and len(fig.legends) == 1
    H = results["config"]["H"]
    assert len(lines_with_data(inputs)) == 2 * H  # the held steps and the samples per channel
    shown = int((np.asarray(results["t"]) <= results["config"]["shown_until"]).sum())
    truth, per_step, fixed = lines_with_data(outputs)
    assert len(truth.get_xdata()) > 10 * shown
    assert len(per_step.get_xdata()) == len(fixed.get_xdata()) == shown
    for ax in fig.axes:
        assert ax.get_xlabel() or ax is inputs
        assert ax.get_ylabel()
