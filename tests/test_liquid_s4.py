"""The Liquid-S4 layer: its kernels against the recurrence they come from and against the
expansion of the liquid time-constant recurrence, order 1 against S4D, decoding against the
convolution, causality, gradients, bf16 autocast, and the argument checks."""

from __future__ import annotations

import itertools

import pytest
import torch
from layer_checks import assert_bf16_finite, long_length, rel_err

import ssm
from ssm.layers import S4DConfig
from ssm.layers.liquid_s4 import (
    LIQUID_KERNELS,
    LiquidS4Config,
    correlations,
    liquid_kernel,
    liquid_recurrence,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def layer(*, H=3, N=8, l_max=30, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = LiquidS4Config(d_state=N, l_max=l_max, **{"dt_max": 0.5, **kw})
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cfg.build(H)
    finally:
        torch.set_default_dtype(default)


def system(H=2, N2=3, seed=0):
    """A stable diagonal ``(Ā, B̄, C)`` ``(H, N2)`` complex128 and ``log Ā``."""
    g = torch.Generator().manual_seed(seed)
    log_Ab = torch.complex(-0.5 * torch.rand(H, N2, generator=g, dtype=torch.float64) - 0.05,
                           3 * torch.randn(H, N2, generator=g, dtype=torch.float64))  # fmt: skip
    Bb = torch.randn(H, N2, generator=g, dtype=torch.complex128)
    C = torch.randn(H, N2, generator=g, dtype=torch.complex128)
    return log_Ab, torch.exp(log_Ab), Bb, C


def kernel_output(u, log_Ab, Bb, C, order, variant):
    """``Σ_p K^{(p)} * u^{(p)}`` ``(B, H, L)`` by :func:`ssm.fftconv`."""
    K = liquid_kernel(log_Ab, Bb, C, u.shape[-1], order, variant)  # (P H L)
    U = correlations(u, order)  # (P B H L)
    return sum(ssm.fftconv(U[p], K[p]) for p in range(order))


@pytest.mark.parametrize("variant", LIQUID_KERNELS)
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("L", [1, 2, 13])
def test_kernels_equal_their_recurrence(variant, order, L):
    log_Ab, Ab, Bb, C = system()
    u = torch.randn(2, 2, L, dtype=torch.float64)
    y = liquid_recurrence(u, Ab, Bb, C, order, variant)
    assert rel_err(kernel_output(u, log_Ab, Bb, C, order, variant), y) < 1e-12


def test_correlations_are_products_of_consecutive_inputs():
    u = torch.randn(1, 2, 7, dtype=torch.float64)
    U = correlations(u, 3)
    torch.testing.assert_close(U[0], u)
    torch.testing.assert_close(U[2][..., 2:], u[..., 2:] * u[..., 1:-1] * u[..., :-2])
    assert torch.equal(U[2][..., :2], torch.zeros(1, 2, 2, dtype=torch.float64))


def ltc_terms(u, Ab, Bb, L):
    """The unrolled LTC recurrence ``x_k = (Ā + B̄ u_k) x_{k-1} + B̄ u_k`` at ``k = L - 1``, term
    by term: ``{(j, S): Π_{i ∈ S} B̄ u_i Π_{i ∉ S} Ā · B̄ u_j}`` over ``j`` and ``S ⊆ (j, k]``,
    ``u`` ``(H, L)``."""
    k, terms = L - 1, {}
    for j in range(L):
        after = range(j + 1, k + 1)
        for r in range(len(after) + 1):
            for S in itertools.combinations(after, r):
                term = Bb * u[:, j, None]  # (H N2)
                for i in after:
                    term = term * (Bb * u[:, i, None] if i in S else Ab)
                terms[j, S] = term
    return terms


@pytest.mark.parametrize("order", [2, 3])
def test_kb_kernels_are_the_consecutive_runs_of_the_ltc_expansion(order):
    """The expansion summed over every subset is the LTC recurrence; summed over the subsets
    that are a run of at most ``P - 1`` steps right after the injection, it is the "kb"
    kernels' output (the derivation in :mod:`ssm.layers.liquid_s4`)."""
    L = 6
    log_Ab, Ab, Bb, C = system(seed=1)
    u = torch.randn(2, L, dtype=torch.float64)
    terms = ltc_terms(u, Ab, Bb, L)
    x = torch.zeros_like(Ab)
    for t in range(L):
        x = (Ab + Bb * u[:, t, None]) * x + Bb * u[:, t, None]  # (H N2)
    torch.testing.assert_close(sum(terms.values()), x, rtol=1e-12, atol=1e-12)
    runs = sum(
        term for (j, S), term in terms.items() if S == tuple(range(j + 1, j + 1 + len(S)))
        and len(S) < order
    )  # fmt: skip
    y = kernel_output(u[None], log_Ab, Bb, C, order, "kb")[0, :, -1]  # (H)
    torch.testing.assert_close(2 * (C * runs).sum(-1).real, y, rtol=1e-12, atol=1e-12)
    if order == 3:  # the gap terms (u_j u_{j+2} …) are what the kernels leave out
        assert not torch.allclose(2 * (C * x).sum(-1).real, y)


def test_pb_liquid_kernels_are_constant_over_the_lag():
    K = layer(order=3).liquid_kernels().detach()  # (P H L)
    assert K.shape == (3, 3, 30)
    torch.testing.assert_close(K[1:], K[1:, :, :1].expand(2, 3, 30))
    assert not torch.allclose(K[0], K[0, :, :1].expand(3, 30))


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_order_one_is_s4d(discretization):
    liquid = layer(order=1, discretization=discretization)
    torch.manual_seed(1)
    s4d = S4DConfig(d_state=8, l_max=30, init="legs", discretization=discretization).build(3)
    s4d = s4d.double()
    s4d.load_state_dict(liquid.state_dict())
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(liquid(x), s4d(x)) < 1e-12


@pytest.mark.parametrize("variant", LIQUID_KERNELS)
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_prefill_then_steps_equal_forward(variant, order, dtype, tol):
    lay = layer(order=order, liquid_kernel=variant, dtype=dtype).eval()
    x = torch.randn(2, 23, 3, dtype=dtype)
    y = lay(x)
    state, steps = lay.init_state(2), []
    for t in range(23):
        y_t, state = lay.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), y) < tol


@pytest.mark.parametrize("variant", LIQUID_KERNELS)
def test_causal_and_every_parameter_gets_a_finite_gradient(variant):
    lay = layer(order=3, liquid_kernel=variant)
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20:] += 1
    torch.testing.assert_close(lay(x)[:, :20], lay(x2)[:, :20], atol=1e-12, rtol=0)
    assert not torch.allclose(lay(x)[:, 20:], lay(x2)[:, 20:])
    lay(x).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", LIQUID_KERNELS)
def test_order_p_term_is_homogeneous_of_degree_p_in_the_input(variant):
    """Scaling ``u`` by ``c`` scales ``K^{(p)} * u^{(p)}`` by ``c^p``: the liquid terms are the
    input correlations, and ``y(2u) - 2 y(u) = 2 K^{(2)} * u^{(2)}`` at order 2."""
    log_Ab, _, Bb, C = system()
    u = torch.randn(2, 2, 13, dtype=torch.float64)
    linear = kernel_output(u, log_Ab, Bb, C, 1, variant)
    quadratic = kernel_output(u, log_Ab, Bb, C, 2, variant) - linear
    assert quadratic.abs().max() > 1e-3
    y2 = kernel_output(2 * u, log_Ab, Bb, C, 2, variant)
    torch.testing.assert_close(y2 - 2 * (linear + quadratic), 2 * quadratic)


@pytest.mark.parametrize("variant", LIQUID_KERNELS)
def test_bf16_autocast_on_the_device_is_finite_at_16384(variant, device):
    L = long_length(device)
    lay = layer(H=8, N=16, l_max=L, order=3, liquid_kernel=variant, dtype=torch.float32)
    lay = lay.to(device)
    assert_bf16_finite(lay, L, 8, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 0}, "order"),
        ({"liquid_kernel": "full"}, "liquid_kernel"),
        ({"d_state": 7}, "d_state must be even"),
        ({"init": "fourier"}, "init"),
        ({"discretization": "euler"}, "discretization"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LiquidS4Config(**{"d_state": 8, "l_max": 16, **kwargs})


def test_bad_inputs_raise():
    lay = layer()
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="longer than the kernel length"):
        lay(torch.randn(2, 31, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 3, dtype=torch.float64), lay.init_state(3))
    with pytest.raises(ValueError, match="l_max must be set"):
        LiquidS4Config(d_state=8).build(3)
    with pytest.raises(ValueError, match="variant"):
        log_Ab, _, Bb, C = system()
        liquid_kernel(log_Ab, Bb, C, 4, 2, "full")
