"""The basis functions of the HiPPO operators ("How to Train Your HiPPO", arXiv:2206.12037v2):
the operators' exponentials against the closed forms of its Table 1, the weights that make the
``p_n`` orthonormal, and the chapter's experiment."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from ssm import hippo
from ssm.experiments import httyh_basis


def test_basis_is_the_impulse_response_of_the_operators():
    """``K_n(t) = e_nᵀ exp(tA) B``, against scipy's expm point by point, both grid paths."""
    A, B = (x.numpy() for x in hippo.transition("legt", 6))
    t = np.linspace(0.0, 2.5, 40)  # uniform: the shared-exponential path
    K = hippo.basis("legt", 6, t).numpy()
    K_shuffled = hippo.basis("legt", 6, t[::-1].copy()).numpy()[:, ::-1]  # one exp per point
    expected = np.stack([scipy.linalg.expm(s * A) @ B for s in t], axis=1)
    np.testing.assert_allclose(K, expected, atol=1e-12)
    np.testing.assert_allclose(K_shuffled, expected, atol=1e-12)


def test_scale_is_the_ssm_cA_cB():
    """The SSM ``(cA, cB)`` has basis ``c K(ct)``."""
    t = np.linspace(0.0, 1.5, 31)
    np.testing.assert_allclose(
        hippo.basis("fout", 8, t, scale=2.0).numpy(),
        2 * hippo.basis("fout", 8, 2 * t).numpy(),
        atol=1e-12,
    )


@pytest.mark.parametrize("N", [1, 2, 5, 16], ids=lambda N: f"N{N}")
@pytest.mark.parametrize("measure, scale", [("legs", 1.0), ("legs", 2.0), ("lagt", 1.0)])
def test_exact_closed_forms(measure, scale, N):
    """LegS: ``c √(2n+1) P_n(2e^{-ct} - 1) e^{-ct}``; LagT: ``L_n(t) e^{-t/2}``, for every N."""
    t = np.linspace(0.0, 8.0, 2001)
    K = hippo.basis(measure, N, t, scale=scale)
    ref = hippo.basis_closed_form(measure, N, t, scale=scale)
    assert K.shape == ref.shape == (N, 2001)
    assert float((K - ref).abs().max()) < 1e-10


def _interior_gap(measure: str, N: int, lo: float, hi: float) -> float:
    t = np.linspace(0.0, 3.0, 1501)
    mask = (t > lo) & (t < hi)
    K = hippo.basis(measure, N, t, scale=2.0)[:4, mask]
    ref = hippo.basis_closed_form(measure, N, t, scale=2.0)[:4, mask]
    return float((K - ref).abs().max())


@pytest.mark.parametrize("measure, at_16", [("legt", 0.4), ("fout", 0.27)])
def test_windowed_closed_forms_are_the_limit(measure, at_16):
    """LegT and FouT approach their windowed closed forms as N grows (about as 1/N), inside
    the window away from its edges (lags 0.1 to 0.9) and after it (1.1 to 1.9)."""
    sizes = [16, 32, 64]
    inside = [_interior_gap(measure, N, 0.1, 0.9) for N in sizes]
    after = [_interior_gap(measure, N, 1.1, 1.9) for N in sizes]
    assert inside[0] < at_16
    slope = np.polyfit(np.log(sizes), np.log(inside), 1)[0]
    assert slope < -0.7, inside
    assert after[-1] < 0.04 and after[-1] < after[0] / 2, after


def test_legt_forgets_and_fout_echoes():
    """After two windows LegT's functions have died out; FouT's echo (K_0 ≈ 0.078 at t = 2)."""
    t = np.array([2.0])
    assert float(hippo.basis("legt", 64, t, scale=2.0).abs().max()) < 1e-3
    K0 = [float(hippo.basis("fout", N, t, scale=2.0)[0, 0]) for N in (16, 64)]
    np.testing.assert_allclose(K0, 0.078, atol=0.002)


@pytest.mark.parametrize("measure, scale", [("legs", 1.0), ("legt", 2.0), ("fout", 2.0)])
def test_orthonormal_under_the_weight(measure, scale):
    """``∫ p_n p_m ω dt = δ_nm`` (FouT's ``p_1 = 0`` excepted), and ``K_n = p_n ω``."""
    N = 8
    if measure == "legs":  # r = e^{-t} maps [0, ∞) to (0, 1]: Gauss-Legendre nodes in r
        r, wq = np.polynomial.legendre.leggauss(40)
        t, wq = -np.log((r + 1) / 2) / scale, wq / 2  # ω(t) dt = dr
        dens = np.ones_like(t)
    else:
        x, wq = np.polynomial.legendre.leggauss(60)
        t, wq = (x + 1) / scale, wq / scale  # the window [0, 2/c)
        dens = hippo.weight(measure, t, scale=scale).numpy()
    p = hippo.orthonormal_functions(measure, N, t, scale=scale).numpy()
    gram = (p * wq * dens) @ p.T
    expected = np.eye(N)
    if measure == "fout":
        expected[1, 1] = 0.0
    np.testing.assert_allclose(gram, expected, atol=1e-10)
    closed = hippo.basis_closed_form(measure, N, t, scale=scale).numpy()
    np.testing.assert_allclose(closed, p * hippo.weight(measure, t, scale=scale).numpy())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hippo.basis("legs", 4, [[0.0, 1.0]]), "1-D grid"),
        (lambda: hippo.basis("legs", 4, [0.0, -1.0]), ">= 0"),
        (lambda: hippo.basis("legs", 4, [0.0, np.nan]), "finite"),
        (lambda: hippo.basis("legs", 4, torch.zeros(3, dtype=torch.complex128)), "real"),
        (lambda: hippo.basis("legs", 4, [0.0], scale=0.0), "scale"),
        (lambda: hippo.basis("fout", 3, [0.0]), "even"),
        (lambda: hippo.basis("nope", 4, [0.0]), "measure"),
        (lambda: hippo.weight("lagt", [0.0]), "measure"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture(scope="module")
def results():
    return httyh_basis.run(httyh_basis.config("ci"))


def test_experiment_reconstructions(results):
    """Each measure's state, decoded, gives back the recent past; LegS also the older past,
    more coarsely; the best fit in the span is never worse than the state's decoding by much."""
    e = results["errors"]
    for m in ("legs", "legt", "fout"):
        assert e[m]["decoded_recent"] < 0.06
        assert e[m]["best_recent"] <= e[m]["decoded_recent"] + 1e-9
    assert 0.06 < e["legs"]["decoded_older"] < 0.3
    assert e["legt"]["decoded_older"] is None and e["fout"]["decoded_older"] is None


def test_experiment_state_is_the_projection_for_legs(results):
    """For LegS the sampled convolution's state equals the projection coefficients
    ``⟨u, p_n⟩_ω``: the two decodings coincide, but for the endpoint lag 0, where a polynomial
    expansion is most sensitive to the input's jump to 0 before it started."""
    rec = results["reconstruction"]["legs"]
    s = np.asarray(rec["s"])
    gap = np.abs(np.asarray(rec["decoded"]) - np.asarray(rec["best"]))[(s > 0.05) & (s < 2)]
    assert gap.max() < 0.03


def test_experiment_table_and_figures(results):
    gaps = results["gaps"]
    assert results["config"]["check_sizes"] == [16, 64]
    assert max(gaps["legs"]) < 1e-10
    assert gaps["legt"][1] < gaps["legt"][0] and gaps["fout"][1] < gaps["fout"][0]
    text = httyh_basis.table(results)
    assert "P_n(2e^{-t} − 1)" in text and "< 1e-12" in text
    assert [len(ax.lines) for ax in httyh_basis.plot(results).axes] == [8, 8, 8]
    assert len(httyh_basis.plot_reconstruction(results).axes) == 3
    assert results["indices"]["fout"] == [0, 2, 3, 4]
    assert "RMSE" in httyh_basis.summary(results)
