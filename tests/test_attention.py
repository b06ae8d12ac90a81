"""Causal multi-head attention: the layer against the formula written out with loops in float64
(explicit masked softmax, RoPE as rotation matrices, the sinusoids term by term), SDPA against
the reference, RoPE's relative-position and norm properties, NoPE's invariance to the order of
the past, KV-cache decoding against the forward pass (alone and in a backbone), causality,
gradients, dropout, bf16 autocast at long length, and the argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from layer_checks import assert_bf16_finite, long_length, rel_err

from ssm.layers import Backbone, BackboneConfig, is_ssm_parameter
from ssm.layers.attention import (
    AttentionConfig,
    KVCache,
    attention_reference,
    rope,
    sinusoidal_encoding,
)

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("rope", "absolute", "none")
F64 = torch.float64


def layer(positions="rope", *, D=8, head_dim=4, dtype=F64, **kw):
    torch.manual_seed(0)
    cfg = AttentionConfig(head_dim=head_dim, positions=positions, **kw)
    return cfg.build(D).to(dtype)


def rotation(m, d, base=10000.0):
    """RoFormer's block-diagonal ``R^d_{Θ,m}`` (arXiv:2104.09864v5, Eq. 15) as a matrix."""
    R = torch.zeros(d, d, dtype=F64)
    for i in range(d // 2):
        a = m * base ** (-2 * i / d)
        R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor(
            [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=F64
        )
    return R


def sinusoid(pos, D):
    """Vaswani et al.'s PE(pos, ·), term by term."""
    return torch.tensor(
        [
            math.sin(pos / 10000 ** (j / D))
            if j % 2 == 0
            else math.cos(pos / 10000 ** ((j - 1) / D))
            for j in range(D)
        ],
        dtype=F64,
    )


def masked_softmax_attention(q, k, v):
    """``o_t = Σ_{s ≤ t} exp(q_t·k_s/√d) v_s / Σ_{s ≤ t} exp(q_t·k_s/√d)`` for ``(L, d)`` rows."""
    d = q.shape[-1]
    out = []
    for t in range(q.shape[0]):
        w = torch.stack([torch.exp(q[t] @ k[s] / math.sqrt(d)) for s in range(t + 1)])
        out.append(sum(w[s] * v[s] for s in range(t + 1)) / w.sum())
    return torch.stack(out)  # (L d)


def plain_layer(lay, x):
    """The layer written out for ``x`` ``(B, L, D)`` in float64, head by head and step by step."""
    B, L, D = x.shape
    d, H = lay.cfg.head_dim, lay.n_heads
    if lay.cfg.positions == "absolute":
        x = x + torch.stack([sinusoid(t, D) for t in range(L)])
    W = lay.qkv.weight.double()  # (3D D)
    ys = []
    for b in range(B):
        heads = []
        for h in range(H):
            q, k, v = (x[b] @ W[j * D + h * d : j * D + (h + 1) * d].T for j in range(3))
            if lay.cfg.positions == "rope":
                q = torch.stack([rotation(t, d) @ q[t] for t in range(L)])
                k = torch.stack([rotation(t, d) @ k[t] for t in range(L)])
            heads.append(masked_softmax_attention(q, k, v))  # (L d)
        ys.append(torch.cat(heads, -1) @ lay.output.weight.double().T + lay.output.bias.double())
    return torch.stack(ys)  # (B L D)


@pytest.mark.parametrize("positions", KINDS)
def test_forward_is_the_formula_written_out(positions):
    lay = layer(positions)
    x = torch.randn(2, 7, 8, dtype=F64)
    with torch.no_grad():
        assert rel_err(lay(x), plain_layer(lay, x)) < 1e-12


def test_reference_is_the_masked_softmax_and_sdpa_matches_it(device):
    q, k, v = torch.randn(3, 2, 3, 9, 4, dtype=F64)
    expected = torch.stack(
        [
            torch.stack([masked_softmax_attention(q[b, h], k[b, h], v[b, h]) for h in range(3)])
            for b in range(2)
        ]
    )
    assert rel_err(attention_reference(q, k, v), expected) < 1e-13
    q, k, v = torch.randn(3, 2, 4, 300, 16, device=device)
    fast = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert rel_err(fast.double(), attention_reference(q, k, v)) < 1e-5


def test_rope_is_the_rotation_matrix_and_keeps_norms():
    x = torch.randn(2, 6, 8, dtype=F64)
    m = torch.tensor([0.0, 1.0, 5.0, 17.0, 300.0, 2.5], dtype=F64)
    y = rope(x, m)
    expected = torch.stack([x[:, t] @ rotation(float(m[t]), 8).T for t in range(6)], 1)
    assert rel_err(y, expected) < 1e-13
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(rope(x, torch.zeros(6)), x, atol=0, rtol=0)


@pytest.mark.parametrize("shift", [37.0, -4.0, 2.5, 10000.0])
def test_rope_inner_products_depend_only_on_the_offset(shift):
    """``⟨R_m q, R_n k⟩`` is a function of ``m - n``: shifting every position leaves the Gram
    matrix of queries and keys unchanged, while stretching the offsets changes it."""
    q, k = torch.randn(2, 10, 16, dtype=F64)
    m = torch.arange(10, dtype=F64)
    gram = rope(q, m) @ rope(k, m).T  # (L L)
    torch.testing.assert_close(rope(q, m + shift) @ rope(k, m + shift).T, gram, atol=1e-10, rtol=0)
    assert not torch.allclose(rope(q, 2 * m) @ rope(k, 2 * m).T, gram, atol=1e-3)


def test_sinusoids_are_the_formula_at_any_position():
    """Defined and bounded past any training length: the extrapolation experiment's premise."""
    pos = torch.tensor([0, 1, 7, 16383, 100_000, 3_000_000])
    for D in (8, 7):
        pe = sinusoidal_encoding(pos, D)
        assert pe.shape == (6, D) and pe.abs().max() <= 1
        expected = torch.stack([sinusoid(int(p), D) for p in pos])
        torch.testing.assert_close(pe, expected, atol=1e-9, rtol=0)


def test_the_three_position_kinds_differ():
    x = torch.randn(2, 9, 8, dtype=F64)
    with torch.no_grad():
        y = {kind: layer(kind)(x) for kind in KINDS}  # same seed: the same weights
    for a, b in (("rope", "absolute"), ("rope", "none"), ("absolute", "none")):
        assert rel_err(y[a], y[b]) > 1e-3, (a, b)
    torch.testing.assert_close(y["rope"][:, 0], y["none"][:, 0])  # RoPE at position 0 is identity


@pytest.mark.parametrize("positions", KINDS)
def test_only_nope_ignores_the_order_of_the_past(positions):
    """Without positions, the output at ``t`` is invariant to any permutation of
    ``x_0 … x_{t-1}`` (causal attention sums over them); RoPE and the sinusoids see the order."""
    lay = layer(positions)
    x = torch.randn(2, 8, 8, dtype=F64)
    perm = torch.tensor([4, 0, 6, 2, 1, 5, 3, 7])  # the last step stays in place
    with torch.no_grad():
        same = rel_err(lay(x[:, perm])[:, -1], lay(x)[:, -1])
    assert same < 1e-12 if positions == "none" else same > 1e-3


@pytest.mark.parametrize("positions", KINDS)
@pytest.mark.parametrize(("dtype", "tol"), [(F64, 1e-12), (torch.float32, 1e-5)])
def test_kv_cache_steps_equal_forward(positions, dtype, tol):
    lay = layer(positions, dtype=dtype).eval()
    x = torch.randn(2, 11, 8, dtype=dtype)
    state, steps = lay.init_state(2), []
    for t in range(11):
        assert state.keys.shape == state.values.shape == (2, 2, t, 4) and state.t == t
        y_t, state = lay.step(x[:, t], state)
        steps.append(y_t)
    assert isinstance(state, KVCache) and state.keys.shape[2] == 11
    assert rel_err(torch.stack(steps, 1), lay(x)) < tol


@pytest.mark.parametrize("positions", KINDS)
def test_per_step_backbone_decodes_like_its_forward(positions):
    torch.manual_seed(0)
    cfg = BackboneConfig(d_model=8, n_layers=2, ff="mlp")
    attention = AttentionConfig(head_dim=4, positions=positions)
    model = Backbone(cfg, attention, vocab_size=5, n_classes=3, per_step=True).double().eval()
    tokens = torch.randint(0, 5, (2, 9))
    state, steps = model.init_state(2), []
    for t in range(9):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    with torch.no_grad():
        assert rel_err(torch.stack(steps, 1), model(tokens)) < 1e-12


@pytest.mark.parametrize("positions", KINDS)
def test_causal_and_every_parameter_gets_a_finite_gradient(positions):
    lay = layer(positions)
    x = torch.randn(2, 12, 8, dtype=F64)
    x2 = x.clone()
    x2[:, 7:] += torch.randn(2, 5, 8, dtype=F64)
    torch.testing.assert_close(lay(x)[:, :7], lay(x2)[:, :7], atol=1e-13, rtol=0)
    assert not torch.allclose(lay(x)[:, 7:], lay(x2)[:, 7:])
    lay(x).square().mean().backward()
    assert not any(is_ssm_parameter(p) for p in lay.parameters())
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_dropout_acts_on_the_weights_in_training_only():
    lay, plain = layer(dropout=0.5), layer()
    x = torch.randn(2, 10, 8, dtype=F64)
    with torch.no_grad():
        assert not torch.allclose(lay(x), plain(x))
        torch.testing.assert_close(lay.eval()(x), plain(x), atol=0, rtol=0)


@pytest.mark.parametrize("positions", KINDS)
def test_bf16_autocast_on_the_device_is_finite_at_16384(positions, device):
    L = long_length(device)
    lay = layer(positions, D=32, head_dim=16, dtype=torch.float32).to(device)
    assert_bf16_finite(lay, L, 32, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_dim": 0}, "head_dim"),
        ({"head_dim": 5}, "head_dim must be even"),
        ({"positions": "alibi"}, "positions"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionConfig(**kwargs)


def test_bad_inputs_raise():
    assert AttentionConfig(head_dim=5, positions="none").build(10).n_heads == 2
    with pytest.raises(ValueError, match="d_model must be a multiple of head_dim=16"):
        AttentionConfig().build(24)
    lay = layer()
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 5, dtype=F64))
    with pytest.raises(ValueError, match="x must have a real floating dtype"):
        lay(torch.ones(2, 10, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 8, dtype=F64), lay.init_state(3))
    with pytest.raises(ValueError, match="batch"):
        lay.init_state(0)
    with pytest.raises(ValueError, match="d even"):
        rope(torch.randn(4, 5), torch.arange(4))
    with pytest.raises(ValueError, match="one entry per step"):
        rope(torch.randn(4, 6), torch.arange(5))
    with pytest.raises(ValueError, match="real 1-D tensor"):
        sinusoidal_encoding(torch.tensor(3), 8)
    with pytest.raises(ValueError, match="share one shape"):
        attention_reference(torch.randn(5, 4), torch.randn(5, 4), torch.randn(6, 4))
