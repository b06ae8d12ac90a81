"""The SGConv layer: its kernel's multi-scale structure (lengths, decay, normalization, the
parameter count in log L), the layer against a direct convolution, causality, gradients, bf16
autocast, and the argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from layer_checks import assert_bf16_finite, long_length, rel_err

from ssm.layers.sgconv import SGConvConfig, num_scales

pytestmark = pytest.mark.usefixtures("one_thread")


def layer(*, H=3, d=4, l_max=30, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = SGConvConfig(kernel_dim=d, l_max=l_max, **kw)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cfg.build(H)
    finally:
        torch.set_default_dtype(default)


def piece_bounds(S, d):
    """``[start, end)`` of each piece: lengths ``d, d, 2d, 4d, …``."""
    lengths = [d * 2 ** max(i - 1, 0) for i in range(S)]
    ends = torch.tensor(lengths).cumsum(0).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


@pytest.mark.parametrize(
    ("L", "d", "S"), [(30, 4, 4), (32, 4, 4), (33, 4, 5), (4, 4, 1), (3, 8, 1)]
)
def test_number_of_scales_covers_the_length(L, d, S):
    assert num_scales(L, d) == S == math.ceil(math.log2(max(L / d, 1))) + 1
    assert d * 2 ** (S - 1) >= L and (S == 1 or d * 2 ** (S - 2) < L)


@pytest.mark.parametrize("decay", [0.5, 0.8])
def test_pieces_double_in_length_and_decay_by_alpha(decay):
    """With every sub-kernel constant (``1``), piece ``i`` is the constant ``α^i / Z`` over its
    ``d · 2^{max(i-1, 0)}`` steps."""
    lay = layer(H=2, d=4, l_max=64, decay=decay)
    kernel = lay.kernel
    with torch.no_grad():
        for k in kernel.subkernels:
            k.fill_(1.0)
        K = kernel()[0]  # (H L)
    S = num_scales(64, 4)
    assert K.shape == (2, 64) and S == 5
    for i, (start, end) in enumerate(piece_bounds(S, 4)):
        assert end - start == 4 * 2 ** max(i - 1, 0)
        torch.testing.assert_close(
            K[:, start:end], decay**i / kernel.norm[0].expand(2, end - start)
        )


def test_piece_i_is_the_upsampled_decayed_subkernel():
    lay = layer(H=2, d=4, l_max=64, interpolation="nearest")
    kernel = lay.kernel
    with torch.no_grad():
        K = kernel()[0]  # (H L)
    for i, (start, end) in enumerate(piece_bounds(5, 4)):
        sub = kernel.subkernels[i][0].detach()  # (H d)
        up = sub.repeat_interleave(2 ** max(i - 1, 0), dim=-1)  # (H piece), nearest
        torch.testing.assert_close(K[:, start:end], 0.5**i * up / kernel.norm[0])


def test_linear_upsampling_interpolates_between_parameters():
    lay = layer(H=1, d=4, l_max=32)
    with torch.no_grad():
        K = lay.kernel()[0, 0] * lay.kernel.norm[0, 0]  # (L), un-normalized
    start, end = piece_bounds(4, 4)[3]  # piece 3: d = 4 parameters stretched 4x to 16 steps
    piece = K[start:end] / 0.5**3
    k = lay.kernel.subkernels[3][0, 0].detach()
    torch.testing.assert_close(piece[[0, 1]], k[[0, 0]])  # half-pixel: the ends repeat
    assert k.min() - 1e-12 <= piece.min() and piece.max() <= k.max() + 1e-12


def test_initial_kernel_has_unit_norm_and_the_norm_is_fixed():
    lay = layer(l_max=32)
    with torch.no_grad():
        norms = torch.linalg.vector_norm(lay.kernel(), dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        Z = lay.kernel.norm.clone()
        lay.kernel.subkernels[0].mul_(2)
    assert torch.equal(lay.kernel.norm, Z) and "norm" in dict(lay.kernel.named_buffers())


@pytest.mark.parametrize("d", [4, 16])
def test_parameter_count_grows_with_log_length(d):
    counts = []
    for L in [d * 2**j for j in range(6)]:
        kernel = layer(H=3, d=d, l_max=L).kernel
        counts.append(sum(p.numel() for p in kernel.parameters()))
    assert counts == [3 * d * (j + 1) for j in range(6)]  # +1 sub-kernel per doubling of L


def direct_layer(lay, x):
    """S4's layer written out: ``GLU(GELU(Σ_{j ≤ l} K_j u_{l-j} + D u))`` by the sum itself."""
    K = lay.kernel()[0]  # (H L)
    L = x.shape[1]
    conv = torch.stack([sum(K[:, j] * x[:, t - j] for j in range(t + 1)) for t in range(L)], 1)
    return lay.output(torch.nn.functional.gelu(conv + lay.D * x))  # (B L H)


def test_forward_is_the_direct_convolution():
    lay = layer()
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(lay(x), direct_layer(lay, x)) < 1e-12
        assert rel_err(lay(x[:, :17]), direct_layer(lay, x[:, :17])) < 1e-12


def test_causal_and_every_parameter_gets_a_finite_gradient():
    lay = layer()
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20:] += 1
    torch.testing.assert_close(lay(x)[:, :20], lay(x2)[:, :20], atol=1e-12, rtol=0)
    assert not torch.allclose(lay(x)[:, 20:], lay(x2)[:, 20:])
    lay(x).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bidirectional_reads_the_future():
    lay = layer(bidirectional=True)
    assert lay.kernel().shape == (2, 3, 30)
    x = torch.randn(1, 30, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 25] += 1
    assert not torch.allclose(lay(x)[:, :25], lay(x2)[:, :25])


def test_no_recurrent_step():
    lay = layer()
    with pytest.raises(ValueError, match="no recurrent step"):
        lay.init_state(2)
    with pytest.raises(ValueError, match="no recurrent step"):
        lay.step(torch.randn(2, 3, dtype=torch.float64), None)


def test_bf16_autocast_on_the_device_is_finite_at_16384(device):
    L = long_length(device)
    lay = layer(H=8, d=32, l_max=L, dtype=torch.float32).to(device)
    assert_bf16_finite(lay, L, 8, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_dim": 0}, "kernel_dim"),
        ({"l_max": 0}, "l_max"),
        ({"decay": 0.0}, "decay"),
        ({"decay": 1.5}, "decay"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGConvConfig(**{"kernel_dim": 4, "l_max": 16, **kwargs})


def test_bad_inputs_raise():
    lay = layer()
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="longer than the kernel length"):
        lay(torch.randn(2, 31, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="l_max must be set"):
        SGConvConfig(kernel_dim=4).build(3)
