"""The GSS layer: its output against the paper's Figure 1 written out with a direct convolution,
the gate, the reduced SSM width, decoding against the convolution, causality, gradients, bf16
autocast, and the argument checks."""

from __future__ import annotations

import pytest
import torch
from layer_checks import assert_bf16_finite, long_length, rel_err

from ssm.layers import is_ssm_parameter
from ssm.layers.gss import GSSConfig

pytestmark = pytest.mark.usefixtures("one_thread")

F_GELU = torch.nn.functional.gelu


def layer(*, E=4, H=3, N=8, l_max=30, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = GSSConfig(d_ssm=H, d_state=N, l_max=l_max, **{"dt_max": 0.5, **kw})
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cfg.build(E)
    finally:
        torch.set_default_dtype(default)


def direct_causal_conv(u, K):
    """``y[b, l, h] = Σ_{j ≤ l} K[h, j] u[b, l - j, h]`` by the sum itself: ``u`` ``(B, L, H)``."""
    L = u.shape[1]
    return torch.stack(
        [sum(K[:, j] * u[:, t - j] for j in range(t + 1)) for t in range(L)], 1
    )  # (B L H)


def figure_1(lay, x):
    """GSS's pseudo-code (arXiv:2206.13947v3, Figure 1) without the residual."""
    xn = torch.nn.functional.layer_norm(x, (x.shape[-1],), lay.norm.weight, lay.norm.bias)
    v = F_GELU(xn @ lay.to_v.weight.T + lay.to_v.bias)  # (B L F)
    u = F_GELU(xn @ lay.to_u.weight.T + lay.to_u.bias)  # (B L H)
    y = direct_causal_conv(u, lay.kernel()[0]) + lay.D * u  # (B L H)
    uc = y @ lay.to_uc.weight.T + lay.to_uc.bias  # (B L F)
    return (uc * v) @ lay.output.weight.T + lay.output.bias  # (B L E)


def test_forward_is_figure_1():
    lay = layer()
    x = torch.randn(2, 30, 4, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(lay(x), figure_1(lay, x)) < 1e-12


def test_zero_gate_leaves_only_the_output_bias():
    """``v = GELU(0) = 0`` makes ``(W_uc y) ⊙ v`` vanish whatever the SSM computes: the layer's
    only nonlinearity in the sequence is this multiplicative gate."""
    lay = layer()
    with torch.no_grad():
        lay.to_v.weight.zero_()
        lay.to_v.bias.zero_()
        y = lay(torch.randn(2, 30, 4, dtype=torch.float64))
    torch.testing.assert_close(y, lay.output.bias.detach().expand_as(y), atol=0, rtol=0)


def test_output_is_linear_in_the_gate():
    """With the gate's input projection fixed, scaling ``v`` by ``c`` scales ``o - b_o`` by
    ``c``: the SSM path and the gate multiply."""
    lay = layer()
    x = torch.randn(2, 30, 4, dtype=torch.float64)
    with torch.no_grad():
        base = lay(x) - lay.output.bias
        lay.to_uc.weight.mul_(3.0)
        lay.to_uc.bias.mul_(3.0)
        torch.testing.assert_close(lay(x) - lay.output.bias, 3 * base)


@pytest.mark.parametrize(("E", "H", "expansion", "N"), [(4, 3, 4, 8), (16, 2, 2, 32), (8, 8, 1, 4)])
def test_the_ssm_runs_at_the_reduced_width(E, H, expansion, N):
    """Parameters: LayerNorm ``2E``; ``W_v`` ``EF + F``; ``W_u`` ``EH + H``; DSS on ``H``
    channels: ``Λ_re, Λ_im`` ``H N/2`` each, ``W`` ``H N/2`` complex, ``log Δ`` and ``D`` ``H``;
    ``W_uc`` ``HF + F``; ``W_o`` ``FE + E``."""
    lay = layer(E=E, H=H, N=N, expansion=expansion)
    F, N2 = expansion * E, N // 2
    dss = 4 * H * N2 + 2 * H
    expected = 2 * E + (E * F + F) + (E * H + H) + dss + (H * F + F) + (F * E + E)
    assert sum(p.numel() for p in lay.parameters()) == expected
    assert lay.kernel().shape == (1, H, 30)
    ssm_params = {n for n, p in lay.named_parameters() if is_ssm_parameter(p)}
    assert ssm_params == {"kernel.Lambda_re", "kernel.Lambda_im", "kernel.log_dt"}


@pytest.mark.parametrize("variant", ["exp", "softmax"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_prefill_then_steps_equal_forward(variant, dtype, tol):
    lay = layer(variant=variant, dtype=dtype).eval()
    x = torch.randn(2, 23, 4, dtype=dtype)
    y = lay(x)
    state, steps = lay.init_state(2), []
    for t in range(23):
        y_t, state = lay.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), y) < tol


def test_causal_and_every_parameter_gets_a_finite_gradient():
    lay = layer()
    x = torch.randn(2, 30, 4, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20:] += torch.randn(2, 10, 4, dtype=torch.float64)  # not constant over d_model: LayerNorm
    torch.testing.assert_close(lay(x)[:, :20], lay(x2)[:, :20], atol=1e-12, rtol=0)
    assert not torch.allclose(lay(x)[:, 20:], lay(x2)[:, 20:])
    lay(x).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bf16_autocast_on_the_device_is_finite_at_16384(device):
    L = long_length(device)
    lay = layer(E=8, H=4, N=16, l_max=L, dtype=torch.float32).to(device)
    assert_bf16_finite(lay, L, 8, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_ssm": 0}, "d_ssm"),
        ({"expansion": 0}, "expansion"),
        ({"d_state": 7}, "d_state must be even"),
        ({"variant": "cosine"}, "variant"),
        ({"init": "fourier"}, "init"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"l_max": 0}, "l_max"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GSSConfig(**{"d_state": 8, "l_max": 16, **kwargs})


def test_bad_inputs_raise():
    lay = layer()
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="longer than the kernel length"):
        lay(torch.randn(2, 31, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 4, dtype=torch.float64), lay.init_state(3))
    with pytest.raises(ValueError, match="l_max must be set"):
        GSSConfig(d_state=8).build(4)
