"""RWKV-4's time and channel mixing: the WKV operator's parallel scan, RNN form and linear-
attention form against its definition (a direct double sum in float64), also at keys whose plain
exponentials overflow float32; both layers against the paper's equations written out with loops
over time; decoding equal to forward alone and in a per-step backbone; causality; gradients;
bf16 autocast; the paper's initialization; and the argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from layer_checks import assert_bf16_finite, long_length, rel_err

from ssm.layers import Backbone, BackboneConfig, is_ssm_parameter
from ssm.layers.rwkv import (
    RWKVChannelMixConfig,
    RWKVTimeMixConfig,
    wkv_as_linear_attention,
    wkv_parallel,
    wkv_recurrent,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def wkv_definition(w, u, k, v):
    """``wkv_t`` of arXiv:2305.13048v2 Eq. 14 by its double sum over ``i ≤ t``, in float64."""
    w, u, k, v = (t.double() for t in (w, u, k, v))
    out = torch.empty_like(k)
    for t in range(k.shape[1]):
        num = torch.exp(u + k[:, t]) * v[:, t]
        den = torch.exp(u + k[:, t])
        for i in range(t):
            weight = torch.exp(-(t - 1 - i) * w + k[:, i])
            num, den = num + weight * v[:, i], den + weight
        out[:, t] = num / den
    return out


def wkv_inputs(B=2, L=19, C=5, k_scale=1.0, k_shift=0.0, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.exp(torch.empty(C, dtype=F64).uniform_(-5, 3, generator=g))
    u = torch.randn(C, dtype=F64, generator=g)
    k = k_shift + k_scale * torch.randn(B, L, C, dtype=F64, generator=g)
    v = torch.randn(B, L, C, dtype=F64, generator=g)
    return tuple(t.to(dtype) for t in (w, u, k, v))


@pytest.mark.parametrize("L", [1, 2, 7, 19, 32])
def test_parallel_and_recurrent_forms_are_the_definition(L):
    args = wkv_inputs(L=L)
    ref = wkv_definition(*args)
    assert rel_err(wkv_parallel(*args), ref) < 1e-12
    assert rel_err(wkv_recurrent(*args)[0], ref) < 1e-12


def test_linear_attention_with_the_decaying_mask_is_wkv():
    args = wkv_inputs(L=17)
    assert rel_err(wkv_as_linear_attention(*args), wkv_parallel(*args)) < 1e-12
    assert rel_err(wkv_as_linear_attention(*args), wkv_definition(*args)) < 1e-12


def test_large_keys_stay_finite_and_exact_in_float32():
    """Keys around 100 (up to ~160): ``e^k`` overflows float32, the running-maximum forms do not,
    and they match the float64 definition."""
    args64 = wkv_inputs(L=24, k_scale=20.0, k_shift=100.0)
    ref = wkv_definition(*args64)
    args32 = tuple(t.float() for t in args64)
    assert not torch.isfinite(torch.exp(args32[2])).all()  # the plain form would overflow
    assert not torch.isfinite(wkv_as_linear_attention(*args32)).all()
    for y in (wkv_parallel(*args32), wkv_recurrent(*args32)[0]):
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        assert rel_err(y.double(), ref) < 1e-5


def test_recurrent_state_carries_over_a_split():
    args = wkv_inputs(L=20)
    w, u, k, v = args
    whole, _ = wkv_recurrent(*args)
    first, state = wkv_recurrent(w, u, k[:, :8], v[:, :8])
    second, _ = wkv_recurrent(w, u, k[:, 8:], v[:, 8:], state)
    assert rel_err(torch.cat([first, second], 1), whole) < 1e-13


def test_parallel_gradients_are_the_definitions():
    args = [t.requires_grad_() for t in wkv_inputs(L=11, k_scale=3.0)]
    grads = torch.autograd.grad(wkv_parallel(*args).sin().sum(), args)
    expected = torch.autograd.grad(wkv_definition(*args).sin().sum(), args)
    for g, e in zip(grads, expected, strict=True):
        assert rel_err(g, e) < 1e-10


def build(cfg, D=6, dtype=F64):
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        layer = cfg.build(D)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():  # off the init's ramps, so every mix and channel differs
        for p in layer.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return layer


def shifted(x, t):
    return x[:, t - 1] if t > 0 else torch.zeros_like(x[:, 0])


def time_mix_equations(lay, x):
    """Eqs. 11-15 with a loop over time: token shift, r, k, v, the WKV sum, the output gate."""
    w, u = torch.exp(lay.time_decay), lay.time_first
    rs, ks, vs = [], [], []
    for t in range(x.shape[1]):
        xt, xp = x[:, t], shifted(x, t)
        for mu, W, out in ((lay.mix_r, lay.receptance, rs), (lay.mix_k, lay.key, ks),
                           (lay.mix_v, lay.value, vs)):  # fmt: skip
            out.append((mu * xt + (1 - mu) * xp) @ W.weight.T)
    r, k, v = (torch.stack(z, 1) for z in (rs, ks, vs))
    return (torch.sigmoid(r) * wkv_definition(w, u, k, v)) @ lay.output.weight.T


def channel_mix_equations(lay, x):
    """Eqs. 16-18 with a loop over time."""
    outs = []
    for t in range(x.shape[1]):
        xt, xp = x[:, t], shifted(x, t)
        r = (lay.mix_r * xt + (1 - lay.mix_r) * xp) @ lay.receptance.weight.T
        k = (lay.mix_k * xt + (1 - lay.mix_k) * xp) @ lay.key.weight.T
        outs.append(torch.sigmoid(r) * (torch.clamp(k, min=0) ** 2 @ lay.value.weight.T))
    return torch.stack(outs, 1)


LAYERS = {
    "time": (RWKVTimeMixConfig(), time_mix_equations),
    "time_narrow": (RWKVTimeMixConfig(d_attn=4), time_mix_equations),
    "channel": (RWKVChannelMixConfig(ff_mult=2), channel_mix_equations),
}


@pytest.mark.parametrize("kind", LAYERS)
def test_forward_is_the_papers_equations(kind):
    cfg, equations = LAYERS[kind]
    lay = build(cfg)
    x = torch.randn(2, 13, 6, dtype=F64)
    with torch.no_grad():
        assert rel_err(lay(x), equations(lay, x)) < 1e-12


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize(("dtype", "tol"), [(F64, 1e-12), (torch.float32, 1e-5)])
def test_steps_equal_forward(kind, dtype, tol):
    lay = build(LAYERS[kind][0], dtype=dtype)
    x = 3 * torch.randn(2, 21, 6, dtype=dtype)
    state, steps = lay.init_state(2), []
    for t in range(21):
        y_t, state = lay.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), lay(x)) < tol


@pytest.mark.parametrize("kind", LAYERS)
def test_steps_equal_forward_in_a_per_step_backbone(kind):
    torch.manual_seed(1)
    cfg = BackboneConfig(d_model=6, n_layers=1)
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        model = Backbone(cfg, LAYERS[kind][0], vocab_size=7, n_classes=3, per_step=True).eval()
    finally:
        torch.set_default_dtype(default)
    x = torch.randint(0, 7, (2, 15))
    state, steps = model.init_state(2), []
    for t in range(15):
        y_t, state = model.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), model(x)) < 1e-12


@pytest.mark.parametrize("kind", LAYERS)
def test_causal_and_every_parameter_gets_a_gradient(kind):
    lay = build(LAYERS[kind][0])
    x = torch.randn(2, 24, 6, dtype=F64)
    x2 = x.clone()
    x2[:, 15:] += torch.randn(2, 9, 6, dtype=F64)
    torch.testing.assert_close(lay(x)[:, :15], lay(x2)[:, :15], atol=1e-13, rtol=0)
    assert not torch.allclose(lay(x)[:, 15:], lay(x2)[:, 15:])
    lay(x).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["time", "channel"])
def test_bf16_autocast_on_the_device_is_finite_at_16384(kind, device):
    L = long_length(device)
    lay = build(LAYERS[kind][0], D=8, dtype=torch.float32).to(device)
    assert_bf16_finite(lay, L, 8, device)


def test_initialization_is_rwkv_lms_first_layer():
    """``time_decay_c = -5 + 8 (c/(A-1))^0.7`` (so ``w`` from ``e^-5`` to ``e^3``), ``u`` the
    zigzag around ``log 0.3``, the mixes ``c/D`` (``√(c/D)`` for ``μ_r``); the decay and the
    bonus are the SSM parameters (own learning rate, no weight decay)."""
    lay = RWKVTimeMixConfig().build(8)
    c = torch.arange(8.0)
    torch.testing.assert_close(lay.time_decay.detach(), -5 + 8 * (c / 7) ** 0.7)
    zigzag = torch.tensor([0, 0.5, -0.5, 0, 0.5, -0.5, 0, 0.5])
    torch.testing.assert_close(lay.time_first.detach(), math.log(0.3) + zigzag)
    torch.testing.assert_close(lay.mix_k.detach(), c / 8)
    torch.testing.assert_close(lay.mix_v.detach(), c / 8)
    torch.testing.assert_close(lay.mix_r.detach(), (c / 8).sqrt())
    ssm = {n for n, p in lay.named_parameters() if is_ssm_parameter(p)}
    assert ssm == {"time_decay", "time_first"}
    channel = RWKVChannelMixConfig().build(8)
    torch.testing.assert_close(channel.mix_r.detach(), c / 8)
    assert channel.key.weight.shape == (32, 8) and channel.value.weight.shape == (8, 32)
    assert sum(p.numel() for p in RWKVTimeMixConfig(d_attn=3).build(8).parameters()) == (
        3 * 8 + 2 * 3 + 4 * 3 * 8
    )


@pytest.mark.parametrize(
    ("cfg", "kwargs", "match"),
    [
        (RWKVTimeMixConfig, {"d_attn": 0}, "d_attn"),
        (RWKVChannelMixConfig, {"ff_mult": 0}, "ff_mult"),
        (RWKVChannelMixConfig, {"ff_mult": 1.5}, "ff_mult"),
    ],
)
def test_bad_config_raises(cfg, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cfg(**kwargs)


def test_bad_wkv_arguments_raise():
    w, u, k, v = wkv_inputs(L=4, C=3)
    for f in (wkv_parallel, wkv_recurrent, wkv_as_linear_attention):
        with pytest.raises(ValueError, match="w must be > 0"):
            f(-w, u, k, v)
        with pytest.raises(ValueError, match="u must have shape"):
            f(w, u[:2], k, v)
        with pytest.raises(ValueError, match="v must have shape"):
            f(w, u, k, v[:, :3])
        with pytest.raises(ValueError, match="k must have shape"):
            f(w, u, k[0], v[0])
        with pytest.raises(ValueError, match="k must have a real floating dtype"):
            f(w, u, k.long(), v)


@pytest.mark.parametrize("kind", ["time", "channel"])
def test_bad_inputs_raise(kind):
    lay = build(LAYERS[kind][0])
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 5, dtype=F64))
    with pytest.raises(ValueError, match="x must have shape"):
        lay.step(torch.randn(2, 10, 6, dtype=F64), lay.init_state(2))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 6, dtype=F64), lay.init_state(3))
    with pytest.raises(ValueError, match="batch"):
        lay.init_state(0)
    with pytest.raises(ValueError, match="d_model"):
        LAYERS[kind][0].build(0)
