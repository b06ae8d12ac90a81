"""The Hyena layer: its output against Algorithm 1 written out with explicit Toeplitz matrices of
implicit filters built here from the paper's formulas, the filters' decay window, causality,
decoding against the forward pass (alone and in a per-step backbone), gradients, bf16 autocast,
and the argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from layer_checks import assert_bf16_finite, long_length, rel_err

from ssm.layers import Backbone, BackboneConfig, is_ssm_parameter
from ssm.layers.hyena import HyenaConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def layer(*, D=4, order=2, l_max=16, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = HyenaConfig(order=order, l_max=l_max, **{"filter_order": 8, "emb_dim": 5, **kw})
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cfg.build(D)
    finally:
        torch.set_default_dtype(default)


def decay_rate(c, C, cfg):
    """``α_c``: ``|ln target| / slow_decay_pct`` at ``c = 0`` to ``/ fast_decay_pct`` at
    ``c = C - 1``, linearly."""
    slow, fast = 1 / cfg.slow_decay_pct, 1 / cfg.fast_decay_pct
    return -math.log(cfg.target) * (slow + (fast - slow) * c / max(C - 1, 1))


def plain_filters(lay, L):
    """``hⁿ_d(t_l) = exp(-α t_l) · FFN(PE(t_l))`` for ``t_l = l / l_max``, ``l < L``, from the
    paper's Section 3.3 and the layer's FFN weights: ``(N, D, L)``."""
    cfg, ffn = lay.cfg, lay.filter.ffn
    K = (cfg.emb_dim - 1) // 2
    f = torch.linspace(1e-4, K - 1, K, dtype=torch.float64)
    omega = ffn[1].freq
    C = cfg.order * lay.d_model
    h = torch.zeros(C, L, dtype=torch.float64)
    for l in range(L):
        t = l / cfg.l_max
        pe = torch.cat(
            [
                torch.tensor([t], dtype=torch.float64),
                torch.cos(2 * math.pi * f * t),
                -torch.sin(2 * math.pi * f * t),
            ]
        )
        a = torch.sin(omega * (ffn[0].weight @ pe + ffn[0].bias))
        a = torch.sin(omega * (ffn[2].weight @ a + ffn[2].bias))
        out = ffn[4].weight @ a  # (C)
        for c in range(C):
            h[c, l] = math.exp(-decay_rate(c, C, cfg) * t) * out[c]
    return h.view(cfg.order, lay.d_model, L)


def toeplitz(h, skip):
    """The ``L × L`` lower-triangular Toeplitz matrix ``T[t, s] = h[t - s]`` (``s ≤ t``) plus
    ``skip`` on the diagonal."""
    L = h.shape[0]
    T = torch.zeros(L, L, dtype=h.dtype)
    for t in range(L):
        for s in range(t + 1):
            T[t, s] = h[t - s]
    return T + skip * torch.eye(L, dtype=h.dtype)


def algorithm_1(lay, x):
    """Hyena of order N by its recurrence, each long convolution an explicit Toeplitz matrix."""
    N, D, k = lay.cfg.order, lay.d_model, lay.cfg.short_filter
    L = x.shape[1]
    p = x @ lay.in_proj.weight.T + lay.in_proj.bias  # (B L (N+1)D)
    w, b = lay.short.conv.weight[:, 0], lay.short.conv.bias  # (C k), oldest tap first
    u = torch.stack(
        [b + sum(w[:, k - 1 - j] * p[:, t - j] for j in range(min(k, t + 1))) for t in range(L)], 1
    )  # (B L (N+1)D)
    gates, z = [u[..., n * D : (n + 1) * D] for n in range(N)], u[..., N * D :]
    h = plain_filters(lay, L)
    for n in range(N):
        conv = torch.stack(
            [toeplitz(h[n, d], lay.D[n, d]) @ z[..., d].T for d in range(D)], -1
        )  # (L B D)
        z = gates[n] * conv.transpose(0, 1)
    return z @ lay.out_proj.weight.T + lay.out_proj.bias


@pytest.mark.parametrize("order", [1, 2, 3])
def test_forward_is_algorithm_1_with_toeplitz_filters(order):
    """At ``L = 13 < l_max = 16``, so the layer must use the first ``L`` taps of its filters."""
    lay = layer(order=order)
    x = torch.randn(2, 13, 4, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(lay(x), algorithm_1(lay, x)) < 1e-12


def test_filters_are_the_window_times_the_ffn_and_decay_as_it_says():
    """``|hⁿ_d(t)| ≤ ‖W₃ row‖₁ · exp(-α t)`` (the FFN ends in a bias-free linear map of sines);
    the fastest channel is below ``target`` times that bound from ``t = fast_decay_pct``; the
    filters' size falls from the first to the last quarter of the window."""
    lay = layer(D=8, order=2, l_max=200, filter_order=16, emb_dim=9)
    cfg = lay.cfg
    with torch.no_grad():
        h = lay.filters(200).reshape(16, 200)
        torch.testing.assert_close(
            h, plain_filters(lay, 200).reshape(16, 200), rtol=1e-12, atol=1e-14
        )
    t = torch.arange(200, dtype=torch.float64) / 200
    alpha = torch.tensor([decay_rate(c, 16, cfg) for c in range(16)], dtype=torch.float64)
    bound = lay.filter.ffn[4].weight.detach().abs().sum(1, keepdim=True) * torch.exp(
        -alpha[:, None] * t
    )
    assert (h.abs() <= bound * (1 + 1e-12)).all()
    late = t >= cfg.fast_decay_pct
    assert (h[-1, late].abs() <= cfg.target * bound[-1, 0] * (1 + 1e-12)).all()
    early, last = h[:, :50].abs().amax(1), h[:, 150:].abs().amax(1)
    assert last.mean() < 0.2 * early.mean()
    assert alpha[0] == pytest.approx(-math.log(1e-2) / 1.5) and alpha[-1] == pytest.approx(
        -math.log(1e-2) / 0.3
    )


@pytest.mark.parametrize("t", [0, 6, 15])
def test_causal(t):
    lay = layer(order=3, l_max=17)
    x = torch.randn(2, 17, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn(2, 16 - t, 4, dtype=torch.float64)
    with torch.no_grad():
        y, y2 = lay(x), lay(x2)
    torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(y[:, t + 1 :], y2[:, t + 1 :])


def run_steps(model, x):
    state, steps = model.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, state = model.step(x[:, t], state)
        steps.append(y_t)
    return torch.stack(steps, 1)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_steps_equal_forward(order, dtype, tol):
    lay = layer(order=order, short_filter=4, dtype=dtype).eval()
    x = torch.randn(2, 16, 4, dtype=dtype)
    with torch.no_grad():
        assert rel_err(run_steps(lay, x), lay(x)) < tol


def test_steps_equal_forward_in_a_per_step_backbone():
    torch.manual_seed(0)
    cfg = HyenaConfig(l_max=12, filter_order=8, emb_dim=5)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = Backbone(BackboneConfig(d_model=8, n_layers=2, ff="glu"), cfg, vocab_size=5,
                         n_classes=3, per_step=True).eval()  # fmt: skip
    finally:
        torch.set_default_dtype(default)
    tokens = torch.randint(0, 5, (2, 12))
    with torch.no_grad():
        assert rel_err(run_steps(model, tokens), model(tokens)) < 1e-10


def test_every_parameter_gets_a_finite_nonzero_gradient_and_the_ffn_is_ssm():
    lay = layer(order=2)
    lay(torch.randn(2, 16, 4, dtype=torch.float64)).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    ssm = {n for n, p in lay.named_parameters() if is_ssm_parameter(p)}
    assert ssm == {
        f"filter.ffn.{n}"
        for n in ("0.weight", "0.bias", "1.freq", "2.weight", "2.bias", "4.weight")
    }


@pytest.mark.parametrize(("D", "order", "F", "E", "k"), [(4, 2, 8, 5, 3), (6, 3, 16, 33, 2)])
def test_parameter_count(D, order, F, E, k):
    """``W_in`` ``D·(N+1)D + (N+1)D``; short conv ``(N+1)D·(k+1)``; FFN ``E F + F``, ``ω`` ``F``,
    ``F² + F``, ``F·ND``; ``Dₙ`` ``ND``; ``W_out`` ``D² + D``."""
    lay = layer(D=D, order=order, filter_order=F, emb_dim=E, short_filter=k)
    C = (order + 1) * D
    ffn = E * F + F + F + F * F + F + F * order * D
    expected = D * C + C + C * (k + 1) + ffn + order * D + D * D + D
    assert sum(p.numel() for p in lay.parameters()) == expected


def test_bf16_autocast_on_the_device_is_finite_at_16384(device):
    L = long_length(device)
    lay = layer(D=8, l_max=L, filter_order=16, emb_dim=9, dtype=torch.float32).to(device)
    assert_bf16_finite(lay, L, 8, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 0}, "order"),
        ({"filter_order": 0}, "filter_order"),
        ({"short_filter": 0}, "short_filter"),
        ({"emb_dim": 4}, "emb_dim must be odd"),
        ({"emb_dim": 1}, "emb_dim must be odd"),
        ({"l_max": 0}, "l_max"),
        ({"dropout": 1.0}, "dropout"),
        ({"w": 0.0}, "w must be"),
        ({"fast_decay_pct": 2.0}, "fast_decay_pct"),
        ({"target": 1.5}, "target"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HyenaConfig(**{"l_max": 16, **kwargs})


def test_bad_inputs_raise():
    lay = layer().eval()
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="longer than the filter length"):
        lay(torch.randn(2, 17, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 4, dtype=torch.float64), lay.init_state(3))
    with pytest.raises(ValueError, match="past the filter length"):
        run_steps(lay, torch.randn(1, 17, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="l_max must be set"):
        HyenaConfig().build(4)
