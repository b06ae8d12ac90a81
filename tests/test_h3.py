"""The H3 layer: the shift SSM run as a state space against its short convolution, the layer
against the paper's equation written out with direct sums (head_dim 1, and the outer products of
head_dim 2), decoding against forward (alone and in a backbone), causality, gradients, bf16
autocast, and the argument checks."""

from __future__ import annotations

import pytest
import torch
from layer_checks import assert_bf16_finite, assert_device_matches_float64, long_length, rel_err

from ssm.layers import Backbone, BackboneConfig, is_ssm_parameter
from ssm.layers.h3 import H3, H3Config

pytestmark = pytest.mark.usefixtures("one_thread")

SSM_PARAMETERS = {"kernel.A_re", "kernel.A_im", "kernel.B", "kernel.log_dt"}


def layer(*, D=4, N=8, l_max=20, dtype=torch.float64, **kw) -> H3:
    torch.manual_seed(0)
    cfg = H3Config(d_state=N, l_max=l_max, **{"dt_max": 0.5, **kw})
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cfg.build(D)
    finally:
        torch.set_default_dtype(default)


def shift_ssm(u, C):
    """``x_t = A x_{t-1} + e_1 u_t``, ``y_t = C x_t`` with ``A`` the ``N × N`` shift matrix, a
    recurrence over time: ``u`` ``(B, L, D)``, ``C`` ``(D, N)``."""
    Dm, N = C.shape
    A = torch.diag(torch.ones(N - 1, dtype=u.dtype), -1)  # (N N): ones below the diagonal
    e1 = torch.zeros(N, dtype=u.dtype)
    e1[0] = 1.0
    x = torch.zeros(u.shape[0], Dm, N, dtype=u.dtype)  # (B D N)
    ys = []
    for t in range(u.shape[1]):
        x = x @ A.T + u[:, t, :, None] * e1  # (B D N)
        ys.append((x * C).sum(-1))  # (B D)
    return torch.stack(ys, 1)  # (B L D)


def shift_filter(lay):
    """``C_j = w_j``, the tap on ``u_{t-j}`` (Conv1d stores the oldest tap first)."""
    return lay.shift.conv.weight[:, 0].flip(-1)  # (D N)


def zoh_kernel(lay, L):
    """``K̄_l = 2 Re Σ_n C_n B̄_n Ā_n^l``, ``Ā = exp(ΔA)``, ``B̄ = (Ā - 1)/A · B``: ``(h, L)``."""
    A, B, C, dt = lay.kernel.system()
    Ab = torch.exp(dt[:, None] * A)  # (h N2)
    Bb = (Ab - 1) / A * B  # (h N2)
    powers = Ab[..., None] ** torch.arange(L, dtype=torch.float64)  # (h N2 L)
    return 2 * (C[0, ..., None] * Bb[..., None] * powers).sum(1).real  # (h L)


def diag_ssm(u, K, D):
    """``y_t = Σ_{j ≤ t} K_j u_{t-j} + D u_t`` by the sum itself; ``K`` and ``D`` broadcast
    against ``u_t`` ``(B, …)`` along their last dims; ``u`` ``(B, L, …)``."""
    L = u.shape[1]
    return torch.stack(
        [sum(K[..., j] * u[:, t - j] for j in range(t + 1)) + D * u[:, t] for t in range(L)], 1
    )


def linear(lin, x):
    return x @ lin.weight.T + lin.bias


def test_shift_ssm_as_a_state_space_is_the_short_convolution():
    lay = layer(d_shift=5)
    u = torch.randn(2, 20, 4, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(lay.shift(u), shift_ssm(u, shift_filter(lay))) < 1e-13


def test_head_dim_1_is_the_papers_equation():
    """``o = W_O(Q ⊙ (K̄ * (shift(K) ⊙ V) + D ⊙ shift(K) ⊙ V))``."""
    lay = layer(D=4, d_shift=3)
    x = torch.randn(2, 20, 4, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = (linear(p, x) for p in (lay.q_proj, lay.k_proj, lay.v_proj))  # (B L D)
        kv = shift_ssm(k, shift_filter(lay)) * v  # (B L D)
        y = q * diag_ssm(kv, zoh_kernel(lay, 20), lay.D)  # (B L D)
        assert rel_err(lay(x), linear(lay.output, y)) < 1e-12


def test_head_dim_2_reads_each_heads_outer_product():
    """Per head ``h``: ``Y_t = Σ_j K̄_h[j] k̃_{t-j} v_{t-j}ᵀ + D_h k̃_t v_tᵀ``, ``O_t = Y_tᵀ q_t``,
    one diagonal SSM per head shared by its ``d²`` channels."""
    lay = layer(D=6, head_dim=2)
    assert lay.kernel().shape == (1, 3, 20) and lay.D.shape == (3,)
    x = torch.randn(2, 20, 6, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = (linear(p, x) for p in (lay.q_proj, lay.k_proj, lay.v_proj))  # (B L D)
        k = shift_ssm(k, shift_filter(lay))  # (B L D)
        K = zoh_kernel(lay, 20)  # (h L)
        heads = []
        for h in range(3):
            c = slice(2 * h, 2 * h + 2)
            kv = k[..., c, None] * v[..., None, c]  # (B L d d)
            Y = diag_ssm(kv, K[h], lay.D[h])  # (B L d d)
            heads.append(torch.einsum("bli,blij->blj", q[..., c], Y))  # (B L d)
        expected = linear(lay.output, torch.cat(heads, -1))  # (B L D)
        assert rel_err(lay(x), expected) < 1e-12


@pytest.mark.parametrize(("head_dim", "D"), [(1, 4), (2, 6)])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_steps_equal_forward(head_dim, D, dtype, tol):
    lay = layer(D=D, head_dim=head_dim, dtype=dtype).eval()
    x = torch.randn(2, 17, D, dtype=dtype)
    state, steps = lay.init_state(2), []
    for t in range(17):
        y_t, state = lay.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), lay(x)) < tol


def test_backbone_steps_equal_its_forward():
    torch.manual_seed(0)
    cfg = BackboneConfig(d_model=4, n_layers=2)
    model = Backbone(cfg, H3Config(d_state=8, head_dim=2, l_max=12), n_classes=3, vocab_size=5,
                     per_step=True).double().eval()  # fmt: skip
    x = torch.randint(0, 5, (2, 12))
    state, logits = model.init_state(2), []
    for t in range(12):
        out, state = model.step(x[:, t], state)
        logits.append(out)
    assert rel_err(torch.stack(logits, 1), model(x)) < 1e-12


@pytest.mark.parametrize("head_dim", [1, 2])
def test_causal_and_every_parameter_gets_a_finite_gradient(head_dim):
    lay = layer(D=4, head_dim=head_dim)
    x = torch.randn(2, 20, 4, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 13:] += torch.randn(2, 7, 4, dtype=torch.float64)
    torch.testing.assert_close(lay(x)[:, :13], lay(x2)[:, :13], atol=1e-12, rtol=0)
    assert not torch.allclose(lay(x)[:, 13:], lay(x2)[:, 13:])
    lay(x).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
        assert is_ssm_parameter(p) == (name in SSM_PARAMETERS), name


@pytest.mark.parametrize("head_dim", [1, 2])
def test_float32_on_the_device_matches_float64(head_dim, device):
    exact = layer(D=8, head_dim=head_dim, l_max=64)
    fast = layer(D=8, head_dim=head_dim, l_max=64, dtype=torch.float32).to(device)
    assert_device_matches_float64(exact, fast, device, 8)


@pytest.mark.parametrize("head_dim", [1, 2])
def test_bf16_autocast_on_the_device_is_finite_at_16384(head_dim, device):
    L = long_length(device)
    lay = layer(D=8, N=16, head_dim=head_dim, l_max=L, dtype=torch.float32).to(device)
    assert_bf16_finite(lay, L, 8, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_state": 7}, "d_state must be even"),
        ({"head_dim": 0}, "head_dim"),
        ({"d_shift": 0}, "d_shift"),
        ({"init": "legs"}, "init"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"l_max": 0}, "l_max"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        H3Config(**{"d_state": 8, "l_max": 16, **kwargs})


def test_bad_build_and_inputs_raise():
    with pytest.raises(ValueError, match="multiple of head_dim=4"):
        H3Config(d_state=8, l_max=16, head_dim=4).build(6)
    with pytest.raises(ValueError, match="l_max must be set"):
        H3Config(d_state=8).build(4)
    lay = layer()
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="longer than the kernel length"):
        lay(torch.randn(2, 21, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 4, dtype=torch.float64), lay.init_state(3))
