"""Mega: the damped EMA's kernel against its recurrence and the real diagonal SSM it is (power
series, S4D kernel), the initial-state term, and the layer: decoding against forward, causality,
chunked attention, half precision, and the argument checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_checks import assert_device_matches_float64, long_length, rel_err

import ssm
from ssm.kernels import ema_recurrence
from ssm.layers import Backbone, BackboneConfig, is_ssm_parameter
from ssm.layers.mega import MegaConfig

pytestmark = pytest.mark.usefixtures("one_thread")

EMA_PARAMETERS = {"alpha_logit", "delta_logit", "beta", "eta"}


def ema_params(H=3, N=4, *, alpha=(0.05, 1.0), delta=(0.0, 1.0), seed=0):
    """``α, δ`` uniform in their ranges, ``β, η`` standard normal, each ``(H, N)`` float64."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(H, N, generator=g, dtype=torch.float64)

    beta, eta = torch.randn(2, H, N, generator=g, dtype=torch.float64)
    return uniform(*alpha), uniform(*delta), beta, eta


def power_series(alpha, delta, beta, eta, L):
    """``K_t = Σ_n η_n α_n β_n φ_n^t`` ``(H, L)`` by its definition, ``φ = 1 - α δ``."""
    powers = (1 - alpha * delta)[..., None] ** torch.arange(L, dtype=torch.float64)  # (H N L)
    return ((eta * alpha * beta)[..., None] * powers).sum(-2)


@pytest.mark.parametrize("L", [1, 7, 64, 257])
def test_recurrence_equals_the_causal_convolution_with_the_kernel(L):
    p = ema_params()
    u = torch.randn(2, 3, L, dtype=torch.float64)
    K = ssm.ema_kernel(*p, L)
    assert rel_err(ema_recurrence(*p, u), ssm.fftconv(u, K)) < 1e-12
    assert rel_err(K, power_series(*p, L)) < 1e-12


def test_an_initial_state_adds_its_decay_to_the_power_t_plus_one():
    """From ``h_{-1} = h0`` with the first input at ``t = 0``: ``y_t = (K * u)_t + ηᵀ(φ^{t+1}
    ⊙ h0)``. The seed's ``φ^t`` counts from a first input ``x_1``; at ``t = 0`` it is wrong."""
    alpha, delta, _, eta = p = ema_params(alpha=(0.3, 0.9), delta=(0.2, 1.0))
    L = 20
    u, h0 = torch.randn(2, 3, L, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    y, h = ema_recurrence(*p, u, h0, return_state=True)
    t = torch.arange(L, dtype=torch.float64)
    decay = (1 - alpha * delta)[..., None] ** (t + 1)  # (H N L)
    conv = ssm.fftconv(u, ssm.ema_kernel(*p, L))  # (B H L)
    assert rel_err(y, conv + (eta[..., None] * decay * h0[..., None]).sum(-2)) < 1e-12
    shifted = (eta[..., None] * decay / (1 - alpha * delta)[..., None] * h0[..., None]).sum(-2)
    assert rel_err(y, conv + shifted) > 1e-2
    y_rest = ema_recurrence(*p, u[..., 5:], ema_recurrence(*p, u[..., :5], return_state=True)[1])
    assert rel_err(y_rest, ema_recurrence(*p, u)[..., 5:]) < 1e-12
    assert h.shape == h0.shape


def test_the_ema_is_a_real_diagonal_ssm_and_a_real_s4d():
    """``Ā = φ``, ``B̄ = α ⊙ β``, ``C = η``; under ZOH with step ``Δ``: ``A = log φ / Δ``,
    ``B = -β log φ / (Δ δ)``, ``C = η / 2`` (S4D's ``2 Re`` counts a real eigenvalue twice)."""
    alpha, delta, beta, eta = p = ema_params(alpha=(0.05, 1.0), delta=(0.05, 1.0))
    L, dt = 50, torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    K = ssm.ema_kernel(*p, L)
    phi = 1 - alpha * delta
    assert rel_err(K, ssm.ssm_kernel(phi, alpha * beta, eta, L, diagonal=True)) < 1e-12
    A = torch.log(phi) / dt[:, None]  # (H N), real and negative
    B = -beta * torch.log(phi) / (dt[:, None] * delta)
    s4d = ssm.s4d_kernel(A.to(torch.complex128), B, eta / 2, dt, L, "zoh")
    assert rel_err(K, s4d) < 1e-12


def test_zero_decay_keeps_only_the_current_step():
    """``α = δ = 1``: ``φ = 0``, so ``K = (ηᵀ β, 0, 0, ...)`` without a NaN from ``log 0``."""
    ones = torch.ones(2, 3, dtype=torch.float64)
    beta, eta = torch.randn(2, 2, 3, dtype=torch.float64)
    K = ssm.ema_kernel(ones, ones, beta, eta, 6)
    assert torch.allclose(K[:, 0], (eta * beta).sum(-1)) and bool((K[:, 1:] == 0).all())


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 8),
    L=st.integers(1, 300),
    alpha=st.tuples(st.floats(1e-3, 1.0), st.floats(0.0, 1.0)),
    delta=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
)
def test_kernel_is_finite_and_equals_its_power_series(N, L, alpha, delta):
    lo = alpha[0]
    p = ema_params(2, N, alpha=(lo, lo + (1 - lo) * alpha[1]), delta=tuple(sorted(delta)))
    K = ssm.ema_kernel(*p, L)
    assert bool(torch.isfinite(K).all())
    ref = power_series(*p, L)
    assert float((K - ref).abs().max()) <= 1e-12 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"alpha": torch.zeros(2, 3)}, "alpha must lie in"),
        ({"alpha": torch.full((2, 3), 1.5)}, "alpha must lie in"),
        ({"delta": torch.full((2, 3), -0.1)}, "delta must lie in"),
        ({"beta": torch.ones(2, 4)}, "beta must have the shape of alpha"),
        ({"alpha": torch.full((3,), 0.5)}, r"alpha must have shape \(H, N\)"),
        ({"eta": torch.ones(2, 3, dtype=torch.complex64)}, "eta must have a real floating"),
        ({"L": 0}, "L must be an integer"),
    ],
)
def test_kernel_argument_checks(change, match):
    args = {"alpha": torch.full((2, 3), 0.5), "delta": torch.full((2, 3), 0.5)}
    args |= {"beta": torch.ones(2, 3), "eta": torch.ones(2, 3), "L": 4, **change}
    with pytest.raises(ValueError, match=match):
        ssm.ema_kernel(**args)


def test_recurrence_argument_checks():
    p = ema_params(2, 3)
    with pytest.raises(ValueError, match=r"u must have shape \(\.\.\., H, L\) with H=2"):
        ema_recurrence(*p, torch.zeros(1, 3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 3\)"):
        ema_recurrence(*p, torch.zeros(1, 2, 5, dtype=torch.float64), torch.zeros(1, 2, 4))


CONFIGS = [
    pytest.param({}, id="full"),
    pytest.param({"chunk_size": 4}, id="chunk-4"),
    pytest.param({"chunk_size": 5, "use_ema": False}, id="chunk-5-no-ema"),
    pytest.param({"chunk_size": 64}, id="chunk-longer-than-input"),
]


def layer(*, D=6, N=4, l_max=23, dtype=torch.float64, **kw):
    """A Mega layer with sharp attention (``κ`` standard normal instead of its small init)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        lay = MegaConfig(d_state=N, d_qk=8, l_max=l_max, **kw).build(D)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        lay.qk_scale.normal_()
    return lay


@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("prompt", [0, 9, 12])
def test_prefill_then_steps_equal_forward(kw, prompt):
    lay = layer(**kw)
    x = torch.randn(2, 23, 6, dtype=torch.float64)
    y = lay(x)
    if prompt:
        first, state = lay.prefill(x[:, :prompt])
        ys = [first]
    else:
        state, ys = lay.init_state(2), []
    for t in range(prompt, 23):
        y_t, state = lay.step(x[:, t], state)
        ys.append(y_t[:, None])
    assert rel_err(torch.cat(ys, 1), y) < 1e-12


@pytest.mark.parametrize("kw", CONFIGS)
def test_forward_is_causal(kw):
    lay = layer(**kw)
    x = torch.randn(2, 23, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 11:] = torch.randn(2, 12, 6, dtype=torch.float64)
    assert rel_err(lay(x2)[:, :11], lay(x)[:, :11]) < 1e-13  # the FFT's round-off only
    assert rel_err(lay(x2)[:, 11:], lay(x)[:, 11:]) > 1e-2


def test_bidirectional_reads_the_future_and_its_ema_runs_both_ways():
    lay = layer(bidirectional=True, chunk_size=5)
    x = torch.randn(2, 23, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 1
    assert not torch.allclose(lay(x)[:, 0], lay(x2)[:, 0])
    (fa, ba), (fd, bd), (fb, bb), (fe, be) = lay.ema_system()
    u = x.transpose(1, 2)  # (B D L)
    forward = ema_recurrence(fa, fd, fb, fe, u)  # (B D L)
    backward = ema_recurrence(ba, bd, bb, be, u.flip(-1)).flip(-1)  # (B D L): Σ_{j≥l}
    later = backward - (be * ba * bb).sum(-1)[:, None] * u  # Σ_{j>l}: lag 0 taken out
    assert rel_err(lay._ema(x), (forward + later).transpose(1, 2)) < 1e-12
    with pytest.raises(ValueError, match="bidirectional Mega layer has no recurrent step"):
        lay.init_state(2)


@pytest.mark.parametrize("use_ema", [False, True])
def test_only_the_ema_carries_context_across_chunks(use_ema):
    """Mega-chunk attends within chunks: without the EMA, a change in the first chunk leaves
    every later chunk's output as it was (even bidirectionally); with it, they change."""
    lay = layer(chunk_size=5, use_ema=use_ema, bidirectional=True)
    x = torch.randn(2, 23, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :5] = torch.randn(2, 5, 6, dtype=torch.float64)
    same = torch.equal(lay(x)[:, 5:], lay(x2)[:, 5:])
    assert same != use_ema


def test_gradients_are_finite_and_the_ema_parameters_are_marked():
    lay = layer(dtype=torch.float32, chunk_size=4)
    x = torch.randn(2, 23, 6, requires_grad=True)
    lay(x).square().sum().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, name
        assert is_ssm_parameter(p) == (name in EMA_PARAMETERS), name
    assert bool(torch.isfinite(x.grad).all())


def test_backbone_steps_equal_its_forward():
    torch.manual_seed(0)
    cfg = BackboneConfig(d_model=8, n_layers=2)
    model = Backbone(cfg, MegaConfig(d_qk=8, l_max=16, chunk_size=6), n_classes=3, vocab_size=5,
                     per_step=True).double().eval()  # fmt: skip
    x = torch.randint(0, 5, (2, 16))
    state, logits = model.init_state(2), []
    for t in range(16):
        out, state = model.step(x[:, t], state)
        logits.append(out)
    assert rel_err(torch.stack(logits, 1), model(x)) < 1e-12


@pytest.mark.parametrize("kw", CONFIGS[:2])
def test_float32_forward_and_gradients_on_the_device_match_float64(kw, device):
    exact = layer(D=16, N=8, l_max=300, **kw)
    fast = layer(D=16, N=8, l_max=300, dtype=torch.float32, **kw).to(device)
    assert_device_matches_float64(exact, fast, device, 16)


@pytest.mark.parametrize("chunk_size", [None, 128])
def test_bf16_autocast_on_the_device_is_finite_at_16384(chunk_size, device):
    L = long_length(device)
    lay = layer(D=8, N=16, l_max=L, dtype=torch.float32, chunk_size=chunk_size).to(device)
    x = torch.randn(2, L, 8, device=device, requires_grad=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y = lay(x)
    y.float().square().mean().backward()
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(x.grad).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in lay.parameters())


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("d_state", 0, "d_state must be an integer >= 1"),
        ("d_qk", -1, "d_qk must be an integer >= 1"),
        ("v_mult", 1.5, "v_mult must be an integer >= 1"),
        ("l_max", 0, "l_max must be an integer >= 1"),
        ("chunk_size", 0, "chunk_size must be an integer >= 1"),
        ("bidirectional", "yes", "bidirectional must be True or False"),
        ("use_ema", 1, "use_ema must be True or False"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_configs_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        MegaConfig(**{field: value})


def test_layer_argument_checks():
    with pytest.raises(ValueError, match=r"MegaConfig\.l_max must be set"):
        MegaConfig().build(4)
    lay = layer()
    with pytest.raises(ValueError, match="longer than l_max=23"):
        lay(torch.zeros(1, 24, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="d_model=6"):
        lay(torch.zeros(1, 5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="state must be the MegaState of init_state"):
        lay.step(torch.zeros(3, 6, dtype=torch.float64), lay.init_state(2))
