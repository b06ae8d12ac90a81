"""The Mamba block: its output against the block and the recurrence h_t = exp(Δ_t A) h_{t-1} +
Δ_t B_t x_t written out in float64 (every ablation of selective Δ, B, C; with and without the
gate), the LTI arm as a causal convolution, what each ablation lets depend on the input, the
init, prefill and decoding against forward (alone and in a per-step backbone), causality,
gradients, bf16 autocast, and the argument checks."""

from __future__ import annotations

import pytest
import torch
from layer_checks import assert_bf16_finite, long_length, rel_err

from ssm.layers import Backbone, BackboneConfig, is_ssm_parameter
from ssm.layers import mamba as mamba_module
from ssm.layers.mamba import SELECTIVE, MambaConfig, MambaState

pytestmark = pytest.mark.usefixtures("one_thread")

F = torch.nn.functional
GATES = [True, False]


def layer(*, M=4, N=3, selective="all", gate=True, dtype=torch.float64, **kw):
    """A small block whose parameters are moved off their init (``D = 1``, ``B = 1``, equal rows
    of ``A_log``), so that no term of the tests is hidden by a symmetry."""
    torch.manual_seed(0)
    cfg = MambaConfig(d_state=N, selective=selective, gate=gate, dt_max=0.5, **kw)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        lay = cfg.build(M)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for p in lay.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return lay


def linear(x, lin):
    return x @ lin.weight.T + (0 if lin.bias is None else lin.bias)


def direct_short_conv(x, conv):
    """``y_t = b + Σ_{j < k, j ≤ t} w[:, k-1-j] x_{t-j}``, the sum itself: ``x`` ``(B, L, E)``."""
    w, k, L = conv.conv.weight[:, 0], conv.taps, x.shape[1]
    bias = 0 if conv.conv.bias is None else conv.conv.bias
    return torch.stack(
        [bias + sum(w[:, k - 1 - j] * x[:, t - j] for j in range(min(k, t + 1))) for t in range(L)],
        1,
    )  # (B L E)


def branches(lay, x):
    """``u = SiLU(conv(x))`` and the gate ``z`` (``None`` without the gate), ``(B, L, E)``."""
    E = lay.d_inner
    xz = linear(x, lay.in_proj)
    z = xz[..., E:] if lay.cfg.gate else None
    return F.silu(direct_short_conv(xz[..., :E], lay.conv)), z


def selection(lay, u):
    """``Δ`` ``(B, L, E)`` and ``B``, ``C`` ``(B, L, E, N)`` as the paper's ablations define
    them: from ``u`` when selective, the learned constants otherwise."""
    R, N, sel = lay.dt_rank, lay.cfg.d_state, lay.cfg.selective
    W = None if lay.x_proj is None else lay.x_proj.weight
    if sel in ("all", "delta"):
        dt = F.softplus((u @ W[:R].T) @ lay.dt_proj.weight.T + lay.dt_bias)
    else:
        dt = F.softplus(lay.dt_bias).expand_as(u)
    if sel in ("all", "bc"):
        r = R if sel == "all" else 0
        B, C = (u @ W[r + i * N : r + (i + 1) * N].T for i in (0, 1))  # (B L N)
        return dt, B[:, :, None], C[:, :, None]
    return dt, lay.B.expand(*u.shape, N), lay.C.expand(*u.shape, N)


def output(lay, y, z):
    """``W_out (y · SiLU(z))``."""
    return linear(y if z is None else y * F.silu(z), lay.out_proj)


def block_by_hand(lay, x):
    """The block (Section 3.4, Figure 3) with the recurrence as a loop over time."""
    u, z = branches(lay, x)
    dt, B, C = selection(lay, u)
    A = -torch.exp(lay.A_log)  # (E N)
    h = torch.zeros(u.shape[0], *A.shape, dtype=u.dtype)  # (B E N)
    ys = []
    for t in range(u.shape[1]):
        d = dt[:, t, :, None]  # (B E 1)
        h = torch.exp(d * A) * h + d * B[:, t] * u[:, t, :, None]
        ys.append((C[:, t] * h).sum(-1) + lay.D * u[:, t])
    return output(lay, torch.stack(ys, 1), z)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("selective", SELECTIVE)
def test_forward_is_the_recurrence(selective, gate):
    lay = layer(selective=selective, gate=gate)
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(lay(x), block_by_hand(lay, x)) < 1e-12


@pytest.mark.parametrize("gate", GATES)
def test_lti_arm_is_a_causal_convolution(gate):
    """``selective="none"``: the SSM is ``y = K * u + D u`` with the input-independent kernel
    ``K_l = C diag(exp(ΔA))^l ΔB`` per channel."""
    lay = layer(selective="none", gate=gate)
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    with torch.no_grad():
        dt = F.softplus(lay.dt_bias)[:, None]  # (E 1)
        decay = torch.exp(dt * -torch.exp(lay.A_log))  # (E N)
        K = torch.stack([(lay.C * decay**j * dt * lay.B).sum(-1) for j in range(12)], 1)  # (E L)
        u, z = branches(lay, x)
        y = torch.stack([sum(K[:, j] * u[:, t - j] for j in range(t + 1)) for t in range(12)], 1)
        assert rel_err(lay(x), output(lay, y + lay.D * u, z)) < 1e-12


@pytest.mark.parametrize("selective", SELECTIVE)
def test_each_ablation_makes_only_its_parameters_selective(selective, monkeypatch):
    """What reaches the scan for two inputs: Δ changes with the input only under "all" and
    "delta", B and C only under "all" and "bc"; the scan's input always does."""
    calls = []

    def record(u, delta, A, B, C, *args, **kwargs):
        calls.append((u, delta, B, C))
        return scan(u, delta, A, B, C, *args, **kwargs)

    scan = mamba_module.selective_scan
    monkeypatch.setattr(mamba_module, "selective_scan", record)
    lay = layer(selective=selective)
    with torch.no_grad():
        for _ in range(2):
            lay(torch.randn(2, 9, 4, dtype=torch.float64))
    changed = [not torch.equal(a, b) for a, b in zip(*calls, strict=True)]
    assert changed == [True, selective in ("all", "delta"), *[selective in ("all", "bc")] * 2]


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("selective", SELECTIVE)
def test_parameters_and_their_marks(selective, gate):
    """``in_proj`` ``M·E`` (``2ME`` gated), conv ``kE + E``, ``x_proj`` ``E·(R + 2N)`` (the
    selective parts only), ``dt_proj`` ``R·E`` (selective Δ), ``b_Δ``, ``D`` ``E``, ``A_log``
    ``E·N``, constant ``B``, ``C`` ``E·N`` each (not selective), ``out_proj`` ``E·M``."""
    M, N, E, R, k = 20, 3, 40, 2, 4
    lay = layer(M=M, N=N, selective=selective, gate=gate)
    sel_dt, sel_bc = selective in ("all", "delta"), selective in ("all", "bc")
    expected = (2 if gate else 1) * M * E + k * E + E + E * (R * sel_dt + 2 * N * sel_bc)
    expected += R * E * sel_dt + 2 * E + E * N + 2 * E * N * (not sel_bc) + E * M
    assert sum(p.numel() for p in lay.parameters()) == expected
    marked = {n for n, p in lay.named_parameters() if is_ssm_parameter(p)}
    assert marked == {"A_log", "D", "dt_bias"} | (set() if sel_bc else {"B"})


def test_init_is_mamba_ssm_s():
    """``A_log = log(1..N)`` on every channel, ``D = 1``, ``softplus(b_Δ)`` in ``[dt_min,
    dt_max]`` (raised to the floor), ``dt_rank = ceil(M / 16)`` unless given."""
    torch.manual_seed(0)
    lay = MambaConfig(d_state=5, dt_min=1e-5, dt_max=1e-1, dt_init_floor=1e-3).build(33)
    assert lay.dt_rank == 3 and lay.dt_proj.weight.shape == (66, 3)
    torch.testing.assert_close(lay.A_log, torch.log(torch.arange(1.0, 6.0)).expand(66, 5))
    torch.testing.assert_close(lay.D, torch.ones(66))
    dt = F.softplus(lay.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    assert (dt == dt.min()).sum() > 1  # the floor holds those drawn below it
    assert MambaConfig(dt_rank=5).build(8).dt_proj.weight.shape == (16, 5)


def steps(lay, x, state):
    ys = []
    for t in range(x.shape[1]):
        y_t, state = lay.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("prefix", [0, 2, 7])
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("selective", SELECTIVE)
def test_prefill_then_steps_equal_forward(selective, gate, prefix):
    """A prefix shorter than the convolution's window (2 < d_conv - 1) pads it with zeros."""
    lay = layer(selective=selective, gate=gate)
    x = torch.randn(2, 11, 4, dtype=torch.float64)
    with torch.no_grad():
        y = lay(x)
        if prefix:
            head, state = lay.prefill(x[:, :prefix])
            assert rel_err(head, y[:, :prefix]) < 1e-13
        else:
            state = lay.init_state(2)
        kept = MambaState(state.conv.clone(), state.ssm.clone())
        tail, _ = steps(lay, x[:, prefix:], state)
    assert rel_err(tail, y[:, prefix:]) < 1e-12
    assert torch.equal(state.conv, kept.conv) and torch.equal(state.ssm, kept.ssm)


def test_steps_equal_forward_in_float32():
    lay = layer(dtype=torch.float32)
    x = torch.randn(2, 11, 4)
    with torch.no_grad():
        assert rel_err(steps(lay, x, lay.init_state(2))[0], lay(x)) < 1e-5


@pytest.mark.parametrize("selective", ["all", "none"])
def test_per_step_backbone_steps_equal_forward(selective):
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        cfg = BackboneConfig(d_model=8, n_layers=2, ff="glu")
        model = Backbone(cfg, MambaConfig(d_state=4, selective=selective), vocab_size=5,
                         n_classes=3, per_step=True).eval()  # fmt: skip
    finally:
        torch.set_default_dtype(default)
    tokens = torch.randint(0, 5, (2, 10))
    with torch.no_grad():
        y = model(tokens)  # (B L n_classes)
        state, outs = model.init_state(2), []
        for t in range(10):
            logits, state = model.step(tokens[:, t], state)
            outs.append(logits)
    assert rel_err(torch.stack(outs, 1), y) < 1e-12


@pytest.mark.parametrize("selective", SELECTIVE)
def test_causal_and_every_parameter_gets_a_finite_gradient(selective):
    lay = layer(selective=selective)
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 8:] += torch.randn(2, 4, 4, dtype=torch.float64)
    y, y2 = lay(x), lay(x2)
    torch.testing.assert_close(y[:, :8], y2[:, :8], atol=1e-13, rtol=0)
    assert not torch.allclose(y[:, 8:], y2[:, 8:])
    y.square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("selective", ["all", "none"])
def test_bf16_autocast_on_the_device_is_finite_at_16384(selective, device):
    L = long_length(device)
    lay = MambaConfig(d_state=4, selective=selective).build(8).to(device)
    assert_bf16_finite(lay, L, 8, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_state": 0}, "d_state"),
        ({"d_conv": 0}, "d_conv"),
        ({"expand": 1.5}, "expand"),
        ({"dt_rank": "half"}, "dt_rank"),
        ({"dt_rank": 0}, "dt_rank"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"dt_min": 0.0}, "dt_min"),
        ({"dt_init_floor": -1e-4}, "dt_init_floor"),
        ({"selective": "b"}, "selective"),
        ({"gate": 1}, "gate"),
        ({"bias": None}, "bias"),
        ({"conv_bias": "yes"}, "conv_bias"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MambaConfig(**kwargs)


def test_bad_inputs_raise():
    lay = layer()
    x_t = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="d_model"):
        MambaConfig().build(0)
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have shape"):
        lay.step(torch.randn(2, 3, 4, dtype=torch.float64), lay.init_state(2))
    with pytest.raises(ValueError, match="x must have a real floating dtype"):
        lay(torch.ones(2, 10, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(x_t, lay.init_state(3))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(x_t, (torch.zeros(2, 8, 3), torch.zeros(2, 8, 3)))
    with pytest.raises(ValueError, match="batch"):
        lay.init_state(0)


@pytest.mark.parametrize("selective", ["all", "delta", "bc", "none"])
def test_step_sizes_are_the_steps_the_scan_receives(selective, monkeypatch):
    """``step_sizes`` equals ``softplus(delta + delta_bias)`` of the arguments that reach the
    scan in ``forward``; constant in time exactly when Δ is not selective."""
    import ssm.layers.mamba as mamba_module

    torch.manual_seed(0)
    layer = MambaConfig(selective=selective, d_state=4).build(8).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    seen = {}
    real = mamba_module.selective_scan

    def spy(u, delta, A, B, C, D=None, z=None, delta_bias=None, **kw):
        seen["dt"] = torch.nn.functional.softplus(delta + delta_bias[:, None])  # (B E L)
        return real(u, delta, A, B, C, D, z, delta_bias, **kw)

    monkeypatch.setattr(mamba_module, "selective_scan", spy)
    layer(x)
    dt = layer.step_sizes(x)  # (B L E)
    assert torch.allclose(dt, seen["dt"].transpose(1, 2), atol=1e-12)
    varies = (dt - dt[:, :1]).abs().max() > 1e-6
    assert bool(varies) == (selective in ("all", "delta"))
