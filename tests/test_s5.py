"""S5: the parallel scan against the sequential loop, the MIMO SSM against its recurrence and
(time-invariant) its convolution with ``K_l = Re(C̃ Λ̄^l B̄)``, steps per sample, the layer's
decoding against its forward pass, its initialization against HiPPO-N, and the argument checks.
Everything exact is float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_checks import assert_bf16_finite, long_length, rel_err

import ssm.scan
from ssm.hippo import rank_correction, transition
from ssm.layers import Backbone, BackboneConfig, is_ssm_parameter
from ssm.layers.s5 import S5Config, hippo_n_init

pytestmark = pytest.mark.usefixtures("one_thread")

C128 = torch.complex128


def sequential(Ab, Bu, x0=None):
    """``x_k = Ā_k ⊙ x_{k-1} + b_k`` one step at a time: ``Ab`` ``(P,)`` or ``(..., T, P)``."""
    x = torch.zeros_like(Bu[..., 0, :]) if x0 is None else x0 + 0 * Bu[..., 0, :]
    xs = []
    for k in range(Bu.shape[-2]):
        x = (Ab if Ab.ndim == 1 else Ab[..., k, :]) * x + Bu[..., k, :]
        xs.append(x)
    return torch.stack(xs, -2)


def system(P=6, H=3, *, seed=0, re=(-1.0, -0.05)):
    """Random ``Λ`` ``(P,)`` (``Re Λ`` uniform in ``re``), ``B̃`` ``(P, H)``, ``C̃`` ``(H, P)``
    complex, ``D`` ``(H,)`` and ``Δ`` ``(P,)``."""
    g = torch.Generator().manual_seed(seed)
    real = re[0] + (re[1] - re[0]) * torch.rand(P, generator=g, dtype=torch.float64)
    Lambda = torch.complex(real, 5 * torch.randn(P, generator=g, dtype=torch.float64))
    B = torch.randn(P, H, generator=g, dtype=C128)
    C = torch.randn(H, P, generator=g, dtype=C128)
    D = torch.randn(H, generator=g, dtype=torch.float64)
    dt = torch.exp(torch.empty(P, dtype=torch.float64).uniform_(-4, 0, generator=g))
    return Lambda, B, C, D, dt


def discrete(Lambda, B, dt, method):
    """``Λ̄`` and ``B̄`` written out: ZOH ``e^{ΛΔ}``, ``Λ⁻¹(Λ̄ - 1) B̃``; bilinear
    ``(1 + ΔΛ/2)/(1 - ΔΛ/2)``, ``Δ B̃/(1 - ΔΛ/2)``. ``dt`` ``(..., P)``: ``(..., P)``,
    ``(..., P, H)``."""
    dL = dt * Lambda
    if method == "zoh":
        Ab = torch.exp(dL)
        return Ab, ((Ab - 1) / Lambda)[..., None] * B
    return (1 + dL / 2) / (1 - dL / 2), (dt / (1 - dL / 2))[..., None] * B


def s5_loop(Lambda, B, C, D, u, dt, method="zoh", conj_sym=False):
    """The S5 SSM step by step, ``Δ`` ``(P,)`` or per step ``(..., L, P)``."""
    x = torch.zeros(*u.shape[:-2], Lambda.shape[0], dtype=C128)
    ys = []
    for k in range(u.shape[-2]):
        Ab, Bb = discrete(Lambda, B, dt if dt.ndim == 1 else dt[..., k, :], method)
        x = Ab * x + (Bb @ u[..., k, :, None].to(C128))[..., 0]  # (... P)
        ys.append((2 if conj_sym else 1) * (C @ x[..., None])[..., 0].real + D * u[..., k, :])
    return torch.stack(ys, -2)


@pytest.mark.parametrize("T", [1, 2, 3, 17, 64, 1000])
@pytest.mark.parametrize("varying", [True, False], ids=["per-step", "constant"])
def test_associative_scan_equals_the_loop(T, varying):
    g = torch.Generator().manual_seed(T)
    decay = -0.1 * torch.rand(2, T, 5, generator=g, dtype=torch.float64)
    Ab = torch.exp(torch.complex(decay, torch.randn(2, T, 5, generator=g, dtype=torch.float64)))
    Ab = Ab if varying else Ab[0, 0]
    Bu = torch.randn(2, T, 5, generator=g, dtype=C128)
    x0 = torch.randn(2, 5, generator=g, dtype=C128)
    assert rel_err(ssm.scan.associative_scan(Ab, Bu), sequential(Ab, Bu)) < 1e-12
    assert rel_err(ssm.scan.associative_scan(Ab, Bu, x0=x0), sequential(Ab, Bu, x0)) < 1e-12


def test_associative_scan_of_real_inputs_is_the_cumulative_sum_at_one():
    Bu = torch.randn(3, 37, 4, dtype=torch.float64)
    x = ssm.scan.associative_scan(torch.ones(4, dtype=torch.float64), Bu)
    torch.testing.assert_close(x, Bu.cumsum(-2))


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("conj_sym", [False, True])
def test_s5_scan_equals_its_recurrence(method, conj_sym):
    Lambda, B, C, D, dt = system()
    u = torch.randn(2, 40, 3, dtype=torch.float64)
    y = ssm.scan.s5_scan(Lambda, B, C, u, dt, D, method=method, conj_sym=conj_sym)
    assert rel_err(y, s5_loop(Lambda, B, C, D, u, dt, method, conj_sym)) < 1e-12


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_time_invariant_s5_is_the_mimo_convolution(method):
    """``y_k = Σ_{l≤k} K_l u_{k-l} + D u_k`` with ``K_l = Re(C̃ Λ̄^l B̄)`` ``(H, H)``, evaluated
    lag by lag."""
    Lambda, B, C, D, dt = system(P=5, H=2)
    L = 25
    Ab, Bb = discrete(Lambda, B, dt, method)  # (P) (P H)
    K = torch.stack([(C @ torch.diag(Ab**l) @ Bb).real for l in range(L)])  # (L H H)
    u = torch.randn(3, L, 2, dtype=torch.float64)
    ref = torch.stack(
        [sum(u[:, k - l] @ K[l].T for l in range(k + 1)) + D * u[:, k] for k in range(L)], 1
    )  # (3 L H)
    assert rel_err(ssm.scan.s5_scan(Lambda, B, C, u, dt, D, method=method), ref) < 1e-12


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_a_step_per_sample_equals_the_loop(method):
    Lambda, B, C, D, _ = system()
    u = torch.randn(2, 30, 3, dtype=torch.float64)
    dt = torch.exp(torch.empty(2, 30, 6, dtype=torch.float64).uniform_(-5, 0.5))  # (B L P)
    y = ssm.scan.s5_scan(Lambda, B, C, u, dt, D, method=method)
    assert rel_err(y, s5_loop(Lambda, B, C, D, u, dt, method)) < 1e-12


def test_the_last_state_continues_the_scan():
    Lambda, B, C, D, dt = system()
    u = torch.randn(2, 30, 3, dtype=torch.float64)
    y1, x = ssm.scan.s5_scan(Lambda, B, C, u[:, :11], dt, D, return_state=True)
    y2 = ssm.scan.s5_scan(Lambda, B, C, u[:, 11:], dt, D, x0=x)
    assert rel_err(torch.cat([y1, y2], 1), ssm.scan.s5_scan(Lambda, B, C, u, dt, D)) < 1e-12


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(["zoh", "bilinear"]),
    P=st.integers(1, 6),
    L=st.integers(1, 200),
    log_dt=st.floats(-7, 1),
    re=st.one_of(st.just(0.0), st.floats(-50, -1e-3)),
    im=st.floats(1e-3, 1000),
)
def test_property_stable_s5_is_finite_and_equals_its_loop(method, P, L, log_dt, re, im):
    """Any ``Re Λ ≤ 0`` (so ``|Λ̄| ≤ 1``, both discretizations; ``= 1`` on the imaginary axis)
    and step: finite, equal to the recurrence."""
    g = torch.Generator().manual_seed(P * 1000 + L)
    Lambda = torch.complex(re * torch.rand(P, generator=g, dtype=torch.float64),
                           im * torch.rand(P, generator=g, dtype=torch.float64))  # fmt: skip
    B, C = torch.randn(P, 2, generator=g, dtype=C128), torch.randn(2, P, generator=g, dtype=C128)
    D = torch.randn(2, dtype=torch.float64)
    dt = torch.full((P,), math.exp(log_dt), dtype=torch.float64)
    u = torch.randn(L, 2, generator=g, dtype=torch.float64)
    y = ssm.scan.s5_scan(Lambda, B, C, u, dt, D, method=method)
    assert torch.isfinite(y).all()
    ref = s5_loop(Lambda, B, C, D, u, dt, method)
    assert (y - ref).abs().max() <= 1e-10 * ref.abs().max() + 1e-12


def test_scan_bad_arguments_raise():
    Lambda, B, C, D, dt = system()
    u = torch.randn(2, 10, 3, dtype=torch.float64)
    scan = ssm.scan.associative_scan
    with pytest.raises(ValueError, match="Bu must have shape"):
        scan(torch.ones(4, dtype=C128), torch.ones(4, dtype=C128))
    with pytest.raises(ValueError, match="Ab must have last dimension 5"):
        scan(torch.ones(4, dtype=C128), torch.ones(3, 5, dtype=C128))
    with pytest.raises(ValueError, match="Ab must be constant"):
        scan(torch.ones(4, 5, dtype=C128), torch.ones(3, 5, dtype=C128))
    with pytest.raises(ValueError, match="x0 must have last dimension 5"):
        scan(torch.ones(5, dtype=C128), torch.ones(3, 5, dtype=C128), x0=torch.ones(4))
    bad = {
        "Lambda must have shape": (Lambda[None], B, C, u, dt, D),
        r"B must have shape \(6, 3\)": (Lambda, B.T, C, u, dt, D),
        r"C must have shape \(3, 6\)": (Lambda, B, C[:, :5], u, dt, D),
        "u must be real": (Lambda, B, C, u.to(C128), dt, D),
        "u must be real with shape": (Lambda, B, C, u[0, 0], dt, D),
        "D must have shape": (Lambda, B, C, u, dt, D[:2]),
        "dt must be a float, one per state": (Lambda, B, C, u, dt[:5], D),
        "dt must be a float, one per state ": (Lambda, B, C, u, dt.expand(3, 10, 6), D),
        "dt must be > 0": (Lambda, B, C, u, -dt, D),
    }
    for match, args in bad.items():
        with pytest.raises(ValueError, match=match):
            ssm.scan.s5_scan(*args)
    with pytest.raises(ValueError, match="method"):
        ssm.scan.s5_scan(Lambda, B, C, u, dt, D, method="euler")


def layer(*, H=3, P=8, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = S5Config(d_state=P, **{"dt_max": 0.5, **kw})
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cfg.build(H)
    finally:
        torch.set_default_dtype(default)


CONFIGS = [
    pytest.param({}, id="zoh-conj"),
    pytest.param({"conj_sym": False, "discretization": "bilinear"}, id="bilinear-full"),
    pytest.param({"blocks": 2, "clip_eigs": True, "step_rescale": 3.0}, id="blocks-clip"),
]


@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("per_step", [False, True], ids=["fixed-dt", "dt-per-step"])
def test_steps_equal_forward(kw, dtype, tol, per_step):
    lay = layer(dtype=dtype, **kw).eval()
    x = torch.randn(2, 23, 3, dtype=dtype)
    scale = torch.rand(2, 23, dtype=dtype) + 0.5 if per_step else None
    y = lay(x, scale)
    state, steps = lay.init_state(2), []
    for t in range(23):
        y_t, state = lay.step(x[:, t], state, None if scale is None else scale[:, t])
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), y) < tol


@pytest.mark.parametrize("kw", CONFIGS)
def test_causal_and_every_parameter_gets_a_finite_gradient(kw):
    lay = layer(**kw)
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20:] += 1
    torch.testing.assert_close(lay(x)[:, :20], lay(x2)[:, :20], atol=0, rtol=0)
    assert not torch.allclose(lay(x)[:, 20:], lay(x2)[:, 20:])
    lay(x).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    marked = {name for name, p in lay.named_parameters() if is_ssm_parameter(p)}
    assert marked == {"Lambda_re", "Lambda_im", "B", "log_dt"}


def test_bidirectional_reads_the_future_and_has_no_step():
    lay = layer(bidirectional=True)
    x = torch.randn(1, 30, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 25] += 1
    assert not torch.allclose(lay(x)[:, :25], lay(x2)[:, :25])
    assert lay.C.shape == (2, 3, 4, 2)
    with pytest.raises(ValueError, match="bidirectional"):
        lay.init_state(1)


@pytest.mark.parametrize(("P", "blocks"), [(8, 1), (16, 4), (12, 3)])
@pytest.mark.parametrize("conj_sym", [False, True])
def test_init_is_block_diagonal_hippo_n(P, blocks, conj_sym):
    """``Λ``: the eigenvalues of ``A + PᵀP`` (HiPPO-LegS's normal part), each block's; ``B̃``
    is ``V⁻¹ B`` of a real ``B`` (``V B̃``, or ``2 Re(V B̃)`` over half the pairs, is real), of
    the Lecun variance ``1/P``; ``Δ`` in ``[dt_min, dt_max]``."""
    Lambda, V = hippo_n_init(P, blocks, conj_sym)
    size = P // blocks
    A, _ = transition("legs", size)
    Pc = rank_correction("legs", size)
    eig = torch.linalg.eigvals(A + Pc.T @ Pc)  # (size)
    eig = eig[eig.imag > 0] if conj_sym else eig
    for j in range(blocks):
        block = Lambda[j * len(eig) : (j + 1) * len(eig)]
        torch.testing.assert_close(block[torch.argsort(block.imag)], eig[torch.argsort(eig.imag)])
    normal = torch.block_diag(*[(A + Pc.T @ Pc).to(C128)] * blocks)
    torch.testing.assert_close(normal @ V, V * Lambda)  # columns of V: eigenvectors
    lay = layer(H=40, P=P, blocks=blocks, conj_sym=conj_sym, dt_min=0.01, dt_max=0.2)
    Bt = torch.view_as_complex(lay.B.detach())  # (Ps H)
    B = 2 * (V @ Bt).real if conj_sym else V @ Bt
    assert (B.imag.abs().max() if B.is_complex() else 0) < 1e-12
    B = B.real
    assert B.abs().max() <= 2 / math.sqrt(P) / 0.8796 + 1e-12
    assert abs(float(B.var()) * P - 1) < 0.25
    dt = torch.exp(lay.log_dt.detach())
    assert lay.log_dt.shape == Lambda.shape and 0.01 <= dt.min() and dt.max() <= 0.2


def test_clip_eigs_keeps_the_real_parts_negative():
    lay = layer(clip_eigs=True)
    with torch.no_grad():
        lay.Lambda_re.copy_(torch.linspace(-1, 1, 4))
    Lambda = lay.system()[0]
    assert Lambda.real.max() == -1e-4 and Lambda.real.min() == -1
    torch.testing.assert_close(
        layer().system()[0].real, torch.full((4,), -0.5, dtype=torch.float64)
    )


def test_step_rescale_multiplies_the_step():
    fast, base = layer(step_rescale=2.5), layer()
    torch.testing.assert_close(fast.system()[3], 2.5 * base.system()[3])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_finite_outputs_and_gradients(dtype):
    lay = layer(H=4, P=16, dtype=torch.float32)
    x = (10 * torch.randn(2, 512, 4)).to(dtype).requires_grad_(True)
    y = lay(x)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_bf16_autocast_on_the_device_is_finite_at_16384(device):
    """Long sequences under bfloat16 autocast: no NaN or inf in outputs or gradients (the scan
    stays in complex64)."""
    L = long_length(device)
    lay = layer(H=8, P=16, dtype=torch.float32).to(device)
    assert_bf16_finite(lay, L, 8, device)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_state": 0}, "d_state"),
        ({"blocks": 0}, "blocks"),
        ({"d_state": 12, "blocks": 5}, "blocks must divide d_state"),
        ({"d_state": 12, "blocks": 4}, "d_state / blocks must be even"),
        ({"discretization": "euler"}, "discretization"),
        ({"dt_min": 0.0}, "dt_min"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"conj_sym": 1}, "conj_sym"),
        ({"clip_eigs": "yes"}, "clip_eigs"),
        ({"bidirectional": None}, "bidirectional"),
        ({"step_rescale": 0.0}, "step_rescale"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S5Config(**{"d_state": 8, **kwargs})


def test_bad_inputs_raise():
    lay = layer()
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dt_scale must have shape"):
        lay(torch.randn(2, 10, 3, dtype=torch.float64), torch.ones(2, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match="dt_scale must be > 0"):
        lay(torch.randn(2, 10, 3, dtype=torch.float64), torch.zeros(2, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 3, dtype=torch.float64), lay.init_state(3))
    with pytest.raises(ValueError, match="d_model"):
        S5Config(d_state=8).build(0)


def test_backbone_trains_on_the_layer():
    torch.manual_seed(0)
    model = Backbone(
        BackboneConfig(d_model=8, n_layers=2), S5Config(d_state=8), n_classes=3, vocab_size=5
    )
    x = torch.randint(0, 5, (4, 16))
    target = torch.randint(0, 3, (4,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
