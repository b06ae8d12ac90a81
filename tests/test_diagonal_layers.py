"""The DSS and S4D layers: their kernels against the power series of the diagonal SSM they hold,
their initializations against the papers' formulas, decoding against the convolution, the
ablation options, and the argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_checks import assert_bf16_finite, assert_device_matches_float64, long_length, rel_err

import ssm
from ssm.hippo import rank_correction, transition
from ssm.layers import DSSConfig, S4DConfig, is_ssm_parameter
from ssm.layers._diagonal import DIAGONAL_INITS, diagonal_init
from ssm.layers.s4d import REAL_TRANSFORMS

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = [
    pytest.param(DSSConfig, {"variant": "exp"}, id="dss-exp"),
    pytest.param(DSSConfig, {"variant": "softmax"}, id="dss-softmax"),
    pytest.param(S4DConfig, {}, id="s4d-inv-zoh"),
    pytest.param(S4DConfig, {"init": "lin", "discretization": "bilinear"}, id="s4d-lin-bilinear"),
    pytest.param(S4DConfig, {"init": "legs", "kernel": "softmax"}, id="s4d-legs-softmax"),
    pytest.param(S4DConfig, {"real_transform": "relu", "train_B": False}, id="s4d-relu-frozen-B"),
    pytest.param(S4DConfig, {"real_transform": "none", "random_imag": True}, id="s4d-none-rand"),
]


def layer(config=S4DConfig, *, H=3, N=8, l_max=30, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = config(d_state=N, l_max=l_max, **{"dt_max": 0.5, **kw})
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cfg.build(H)
    finally:
        torch.set_default_dtype(default)


def diagonal_power_series(Ab, Bb, C, L):
    """``K_l = 2 Re Σ_n C_n B̄_n Ā_n^l`` ``(H, L)``: the definition of a diagonal SSM's kernel
    with conjugate pairs implicit."""
    powers = Ab[..., None] ** torch.arange(L, dtype=torch.float64)  # (H N2 L)
    return 2 * ((C * Bb)[..., None] * powers).sum(-2).real


def impulse_response(kernel, L):
    """The recurrent view fed an impulse: ``x_k = Ā x_{k-1} + B̄_k δ_k``,
    ``y_k = 2 Re(C_k x_k)`` ``(H, L)``, step by step from ``step_system(k)``."""
    x, ys = None, []
    for k in range(L):
        Ab, Bb, C = kernel.step_system(k)  # (H N2) each
        x = Bb if k == 0 else Ab * x
        ys.append(2 * (C * x).sum(-1).real)
    return torch.stack(ys, -1)


@pytest.mark.parametrize(("config", "kw"), CONFIGS)
@pytest.mark.parametrize("L", [1, 13, 30])
def test_kernel_is_the_impulse_response_of_its_recurrence(config, kw, L):
    lay = layer(config, l_max=L, **kw)
    with torch.no_grad():
        assert rel_err(lay.kernel()[0], impulse_response(lay.kernel, L)) < 1e-11


@pytest.mark.parametrize(("config", "kw"), [c for c in CONFIGS if "softmax" not in c.id])
def test_constant_step_kernels_are_power_series(config, kw):
    lay = layer(config, **kw)
    with torch.no_grad():
        assert (
            rel_err(lay.kernel()[0], diagonal_power_series(*lay.kernel.step_system(0), 30)) < 1e-11
        )


def test_s4d_kernel_is_the_discretized_system_power_series():
    lay = layer(S4DConfig, discretization="bilinear")
    A, B, C, dt = lay.kernel.system()
    Ab = (1 + dt[:, None] * A / 2) / (1 - dt[:, None] * A / 2)
    Bb = dt[:, None] * B / (1 - dt[:, None] * A / 2)
    assert rel_err(lay.kernel()[0], diagonal_power_series(Ab, Bb, C[0], 30)) < 1e-12


def test_dss_exp_is_s4d_with_b_one_frozen():
    dss = layer(DSSConfig, init="inv")
    s4d = layer(S4DConfig, init="inv", train_B=False)
    Lambda, W, dt = dss.kernel.system()
    with torch.no_grad():
        s4d.kernel.C.copy_(torch.view_as_real(W))
        s4d.kernel.log_dt.copy_(torch.log(dt))
    torch.testing.assert_close(s4d.kernel.system()[0], Lambda)
    assert rel_err(dss.kernel(), s4d.kernel()) < 1e-12


@pytest.mark.parametrize(("config", "kw"), CONFIGS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_steps_equal_forward(config, kw, dtype, tol):
    lay = layer(config, dtype=dtype, **kw).eval()
    x = torch.randn(2, 23, 3, dtype=dtype)
    y = lay(x)
    state, steps = lay.init_state(2), []
    for t in range(23):
        y_t, state = lay.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), y) < tol


@pytest.mark.parametrize(("config", "kw"), CONFIGS)
def test_causal_and_every_trained_parameter_gets_a_finite_gradient(config, kw):
    lay = layer(config, **kw)
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20:] += 1
    torch.testing.assert_close(lay(x)[:, :20], lay(x2)[:, :20], atol=1e-12, rtol=0)  # FFT round-off
    assert not torch.allclose(lay(x)[:, 20:], lay(x2)[:, 20:])
    lay(x).square().mean().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config", [DSSConfig, S4DConfig])
def test_bidirectional_reads_the_future_and_has_no_step(config):
    lay = layer(config, bidirectional=True)
    x = torch.randn(1, 30, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 25] += 1
    assert not torch.allclose(lay(x)[:, :25], lay(x2)[:, :25])
    with pytest.raises(ValueError, match="bidirectional"):
        lay.init_state(1)


def test_inv_and_lin_inits_are_the_papers_formulas():
    N = 16
    n = torch.arange(N // 2, dtype=torch.float64)
    A, B = diagonal_init("inv", N, 2)
    torch.testing.assert_close(A.real, torch.full((2, N // 2), -0.5, dtype=torch.float64))
    torch.testing.assert_close(A.imag[0], N / math.pi * (N / (2 * n + 1) - 1))
    torch.testing.assert_close(B, torch.ones_like(B))
    A, _ = diagonal_init("lin", N, 2)
    torch.testing.assert_close(A.imag[1], math.pi * n)


def test_legs_init_is_the_normal_part_of_hippo_legs():
    N = 16
    A, B = diagonal_init("legs", N, 1)
    A_legs, _ = transition("legs", N)
    P = rank_correction("legs", N)
    eig = torch.linalg.eigvals(A_legs + P.T @ P)  # the normal part's spectrum
    torch.testing.assert_close(A.real, torch.full_like(A.real, -0.5))
    top = torch.sort(eig.imag).values[N // 2 :]
    torch.testing.assert_close(torch.sort(A.imag[0]).values, top)
    assert not torch.allclose(B, torch.ones_like(B))  # LegS's B in the eigenbasis


@pytest.mark.parametrize("init", DIAGONAL_INITS)
def test_init_variants(init):
    torch.manual_seed(0)
    base, _ = diagonal_init(init, 16, 4)
    scaled, _ = diagonal_init(init, 16, 4, imag_scale=0.1)
    torch.testing.assert_close(scaled.imag, 0.1 * base.imag)
    rnd_real, _ = diagonal_init(init, 16, 4, random_real=True)
    assert (rnd_real.real < 0).all() and (rnd_real.real >= -1).all()
    assert rnd_real.real.std() > 0.1 and torch.equal(rnd_real.imag, base.imag)
    rnd_imag, _ = diagonal_init(init, 16, 4, random_imag=True)
    assert (rnd_imag.imag >= 0).all() and (rnd_imag.imag < 8).all()
    assert not torch.equal(rnd_imag.imag[0], rnd_imag.imag[1])  # drawn per channel
    assert torch.equal(rnd_imag.real, base.real)


@pytest.mark.parametrize("transform", REAL_TRANSFORMS)
def test_real_transforms_start_at_the_init(transform):
    lay = layer(S4DConfig, real_transform=transform)
    A = lay.kernel.system()[0]
    torch.testing.assert_close(A.real, torch.full_like(A.real, -0.5))


def test_dss_init_ranges():
    lay = layer(DSSConfig, H=64, N=16, dt_min=1e-3, dt_max=1e-1)
    Lambda, W, dt = (t.detach() for t in lay.kernel.system())
    assert (dt >= 1e-3).all() and (dt <= 1e-1).all()
    assert abs(float(W.real.std()) - 1) < 0.1 and abs(float(W.imag.std()) - 1) < 0.1
    torch.testing.assert_close(Lambda[0], diagonal_init("legs", 16, 1)[0][0])


@pytest.mark.parametrize(("train_A", "train_B"), [(True, False), (False, True), (False, False)])
def test_frozen_A_and_B_are_buffers(train_A, train_B):
    lay = layer(S4DConfig, train_A=train_A, train_B=train_B)
    params = dict(lay.kernel.named_parameters())
    assert ("A_re" in params) == train_A and ("A_im" in params) == train_A
    assert ("B" in params) == train_B
    assert is_ssm_parameter(params["log_dt"]) and not is_ssm_parameter(params["C"])


def test_autocast_keeps_the_kernel_in_float32():
    lay = layer(S4DConfig, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lay(torch.randn(2, 30, 3).bfloat16())
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("config", "kwargs", "match"),
    [
        (DSSConfig, {"d_state": 7}, "d_state must be even"),
        (DSSConfig, {"variant": "cosine"}, "variant"),
        (DSSConfig, {"init": "fourier"}, "init"),
        (DSSConfig, {"dt_min": 0.0}, "dt_min"),
        (DSSConfig, {"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        (S4DConfig, {"init": "fourier"}, "init"),
        (S4DConfig, {"real_transform": "softplus"}, "real_transform"),
        (S4DConfig, {"discretization": "euler"}, "discretization"),
        (S4DConfig, {"kernel": "softmax", "discretization": "bilinear"}, "softmax"),
        (S4DConfig, {"imag_scale": 0.0}, "imag_scale"),
        (S4DConfig, {"dt_min": -1.0}, "dt_min"),
        (S4DConfig, {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(**{"d_state": 8, "l_max": 16, **kwargs})


def test_bad_inputs_raise():
    lay = layer(S4DConfig)
    with pytest.raises(ValueError, match="x must have shape"):
        lay(torch.randn(2, 10, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="longer than the kernel length"):
        lay(torch.randn(2, 31, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="state must be"):
        lay.step(torch.randn(2, 3, dtype=torch.float64), lay.init_state(3))
    with pytest.raises(ValueError, match="l_max must be set"):
        S4DConfig(d_state=8).build(3)
    with pytest.raises(ValueError, match="init"):
        diagonal_init("fourier", 8, 2)


@pytest.mark.parametrize("config", [DSSConfig, S4DConfig])
def test_backbone_trains_on_the_layer(config):
    from ssm.layers import Backbone, BackboneConfig

    torch.manual_seed(0)
    model = Backbone(
        BackboneConfig(d_model=8, n_layers=2), config(d_state=8, l_max=16), n_classes=3,
        vocab_size=5,
    )  # fmt: skip
    x = torch.randint(0, 5, (4, 16))
    target = torch.randint(0, 3, (4,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(("config", "kw"), CONFIGS)
def test_float32_forward_and_gradients_on_the_device_match_float64(config, kw, device):
    """On ``--device cuda`` the kernels go through the Triton Vandermonde op; the layer's float32
    forward and gradients must still match the float64 CPU layer."""
    exact = layer(config, H=16, N=16, l_max=300, **kw)
    fast = layer(config, H=16, N=16, l_max=300, dtype=torch.float32, **kw).to(device)
    assert_device_matches_float64(exact, fast, device, 16)


@pytest.mark.parametrize(("config", "kw"), CONFIGS)
def test_bf16_autocast_on_the_device_is_finite_at_16384(config, kw, device):
    """Long sequences under bfloat16 autocast: no NaN or inf in outputs or gradients (the
    kernel and the convolution stay in float32)."""
    L = long_length(device)
    lay = layer(config, H=8, N=16, l_max=L, dtype=torch.float32, **kw).to(device)
    assert_bf16_finite(lay, L, 8, device)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["zoh", "bilinear"]),
    N2=st.integers(1, 8),
    L=st.integers(1, 300),
    log_dt=st.floats(-7, 0),
    re=st.floats(-50, -1e-3),
    im=st.floats(0, 1000),
)
def test_property_s4d_kernel_equals_power_series_and_stays_finite(method, N2, L, log_dt, re, im):
    """``ssm.s4d_kernel`` over the ranges the S4D layer can reach (stable ``A``, any step):
    finite, and equal to ``2 Re Σ C B̄ Ā^l`` of :func:`ssm.discretize`'s ``(Ā, B̄)``."""
    g = torch.Generator().manual_seed(N2 * 1000 + L)
    A = torch.complex(
        re * torch.rand(2, N2, generator=g, dtype=torch.float64),
        im * torch.rand(2, N2, generator=g, dtype=torch.float64),
    )
    B, C = (torch.randn(2, N2, generator=g, dtype=torch.complex128) for _ in range(2))
    dt = torch.full((2,), math.exp(log_dt), dtype=torch.float64)
    K = ssm.s4d_kernel(A, B, C, dt, L, method)
    assert torch.isfinite(K).all()
    Ab, Bb = ssm.discretize(A, B, dt[:, None], method, diagonal=True)
    ref = diagonal_power_series(Ab, Bb, C, L)
    assert (K - ref).abs().max() <= 1e-9 * ref.abs().max() + 1e-12


@pytest.mark.parametrize(("config", "kw"), CONFIGS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_finite_outputs_and_gradients(config, kw, dtype):
    """A float32 layer fed half-precision inputs (as autocast hands them on): its kernel and
    convolution run in float32, so outputs and gradients stay finite at L = 4096."""
    lay = layer(config, H=4, N=16, l_max=4096, dtype=torch.float32, **kw)
    x = (10 * torch.randn(2, 4096, 4)).to(dtype).requires_grad_(True)
    y = lay(x)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in lay.parameters())
