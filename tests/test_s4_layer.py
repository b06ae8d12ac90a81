"""The S4 layer: its kernels against the definitions, its two views against each other, its
inits, frozen A, and its argument checks."""

from __future__ import annotations

import pytest
import torch
from layer_checks import assert_device_matches_float64, rel_err

import ssm
from ssm.layers import S4Config, is_ssm_parameter
from ssm.layers.s4 import DENSE_INITS, NPLR_INITS, power_kernel

VARIANTS = [pytest.param("nplr", init, id=f"nplr-{init}") for init in NPLR_INITS] + [
    pytest.param("dense", init, id=f"dense-{init}") for init in DENSE_INITS
]
DTYPES = [
    pytest.param(torch.float64, 1e-10, id="float64"),
    pytest.param(torch.float32, 1e-4, id="float32"),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def layer(parameterization="nplr", init="legs", *, H=3, N=8, l_max=24, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = S4Config(
        d_state=N,
        l_max=l_max,
        parameterization=parameterization,
        init=init,
        **{"dt_max": 0.5, **kw},
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the inits in the layer's dtype
    try:
        return cfg.build(H)
    finally:
        torch.set_default_dtype(default)


def full(t: torch.Tensor) -> torch.Tensor:
    """Both halves of the conjugate pairs along the last dim."""
    return torch.cat([t, t.conj()], dim=-1)


@pytest.mark.parametrize("init", NPLR_INITS)
@pytest.mark.parametrize("L", [1, 2, 32, 33])
@pytest.mark.parametrize(("dtype", "tol"), DTYPES)
def test_nplr_kernel_equals_s4_kernel_of_full_system(init, L, dtype, tol):
    s4 = layer("nplr", init, N=16, l_max=L, bidirectional=True)
    w, P, B, C, dt = s4.kernel.system()  # complex128, float64
    s4 = s4.to(dtype)
    K = s4.kernel()  # (2 H L)
    for c in range(2):
        ref = ssm.s4_kernel(full(w), full(P), full(B), full(C[c]), dt, L, c_tilde=True)
        assert ref.imag.abs().max() < 1e-10 * ref.real.abs().max()
        assert K.dtype == dtype
        assert rel_err(K[c].double(), ref.real) < tol


@pytest.mark.parametrize("init", DENSE_INITS)
@pytest.mark.parametrize("L", [1, 2, 17, 32])
def test_power_kernel_equals_ssm_kernel(init, L):
    s4 = layer("dense", init, l_max=L)
    Ab, Bb, C = s4.kernel.recurrence()
    K = power_kernel(Ab, Bb, C, L)  # (1 H L)
    assert rel_err(K[0], ssm.ssm_kernel(Ab, Bb, C[0], L)) < 1e-12
    assert torch.equal(s4.kernel(), K)


def toeplitz_output(s4, x: torch.Tensor) -> torch.Tensor:
    """The layer by its definition: ``y_pre[l] = Σ_{m≤l} K0[l-m] u[m] + D u[l]
    + Σ_{m>l} K1[m-l-1] u[m]``, then GELU and the GLU projection."""
    L = x.shape[1]
    K = s4.kernel()[..., :L]  # (c H L)
    lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]  # (L L): l - m
    T = torch.where(lag >= 0, K[0][:, lag.clamp(min=0)], 0)  # (H L L)
    if K.shape[0] == 2:
        T = T + torch.where(lag < 0, K[1][:, (-lag - 1).clamp(min=0)], 0)
    u = x.transpose(1, 2)  # (B H L)
    y = torch.einsum("hlm,bhm->bhl", T, u) + s4.D[:, None] * u  # (B H L)
    return s4.output(torch.nn.functional.gelu(y).transpose(1, 2))  # (B L H)


@pytest.mark.parametrize(("parameterization", "init"), VARIANTS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_forward_is_the_convolution_of_its_kernels(parameterization, init, bidirectional):
    s4 = layer(parameterization, init, bidirectional=bidirectional)
    x = torch.randn(2, 19, 3, dtype=torch.float64)
    assert rel_err(s4(x), toeplitz_output(s4, x)) < 1e-10


@pytest.mark.parametrize(("parameterization", "init"), VARIANTS)
@pytest.mark.parametrize(("dtype", "tol"), DTYPES)
def test_steps_equal_forward(parameterization, init, dtype, tol):
    s4 = layer(parameterization, init, dtype=dtype)
    x = torch.randn(2, 24, 3, dtype=dtype)
    y = s4(x)
    state = s4.init_state(2)
    steps = []
    for t in range(x.shape[1]):
        y_t, state = s4.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, dim=1), y) < tol


@pytest.mark.parametrize(("parameterization", "init"), VARIANTS)
def test_causal(parameterization, init):
    s4 = layer(parameterization, init)
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 11:] = torch.randn(2, 9, 3, dtype=torch.float64)
    y, y2 = s4(x), s4(x2)
    assert torch.allclose(y[:, :11], y2[:, :11], rtol=0, atol=1e-12)
    assert not torch.allclose(y[:, 11:], y2[:, 11:])


def test_bidirectional_reads_the_future_and_has_no_step():
    s4 = layer(bidirectional=True)
    x = torch.randn(1, 20, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 1
    assert not torch.allclose(s4(x)[:, :-1], s4(x2)[:, :-1])
    with pytest.raises(ValueError, match="bidirectional"):
        s4.init_state(1)


def test_legs_nplr_init_is_hippo_legs():
    """The full conjugate-pair system of the nplr LegS init is unitarily similar to HiPPO-LegS:
    the invariants ``tr(A^k)`` and ``Bᴴ A^k B`` agree (eigenvalues of the non-normal LegS are
    too ill-conditioned to compare)."""
    N = 16
    w, P, B, _, _ = layer("nplr", "legs", N=N).kernel.system()
    w, p, B = full(w[0]), full(P[0, 0]), full(B[0])
    A = torch.diag_embed(w) - p[:, None] * p.conj()[None, :]  # (N N)
    A_legs, B_legs = ssm.hippo.transition("legs", N)
    for k in range(5):
        Ak, Ak_legs = torch.linalg.matrix_power(A, k), torch.linalg.matrix_power(A_legs, k)
        assert torch.allclose(torch.trace(Ak), torch.trace(Ak_legs).to(A.dtype), rtol=1e-5)
        assert torch.allclose(B.conj() @ Ak @ B, (B_legs @ Ak_legs @ B_legs).to(A.dtype), rtol=1e-5)


@pytest.mark.parametrize(("parameterization", "init"), VARIANTS)
def test_inits_are_stable_and_steps_in_range(parameterization, init):
    s4 = layer(parameterization, init, N=16, dt_min=1e-3, dt_max=1e-1)
    dt = torch.exp(s4.kernel.log_dt)
    assert bool(((dt >= 1e-3 * (1 - 1e-9)) & (dt <= 1e-1 * (1 + 1e-9))).all())
    Ab, _, _ = s4.kernel.recurrence()
    assert torch.linalg.eigvals(Ab).abs().max() < 1
    if parameterization == "dense" and init != "legs":  # moved so the rightmost is at -1
        alpha = torch.linalg.eigvals(s4.kernel.A).real.amax(-1)
        assert torch.allclose(alpha, -torch.ones_like(alpha), atol=1e-4)


SSM_NAMES = {
    "nplr": {"kernel.log_w_real", "kernel.w_imag", "kernel.P", "kernel.B", "kernel.log_dt"},
    "dense": {"kernel.A", "kernel.B", "kernel.log_dt"},
}
A_NAMES = {"nplr": {"kernel.log_w_real", "kernel.w_imag", "kernel.P"}, "dense": {"kernel.A"}}


@pytest.mark.parametrize(("parameterization", "init"), VARIANTS)
def test_ssm_parameters_marked(parameterization, init):
    s4 = layer(parameterization, init)
    marked = {name for name, p in s4.named_parameters() if is_ssm_parameter(p)}
    assert marked == SSM_NAMES[parameterization]
    assert {"kernel.C", "D"} <= {name for name, _ in s4.named_parameters()} - marked


@pytest.mark.parametrize(("parameterization", "init"), VARIANTS)
@pytest.mark.parametrize("train_A", [True, False], ids=["trained", "frozen"])
def test_frozen_A_is_buffers_and_gets_no_gradient(parameterization, init, train_A):
    s4 = layer(parameterization, init, train_A=train_A)
    s4(torch.randn(2, 16, 3, dtype=torch.float64)).square().sum().backward()
    params, buffers = dict(s4.named_parameters()), dict(s4.named_buffers())
    A_names = A_NAMES[parameterization]
    if train_A:
        assert A_names <= params.keys()
        assert all(params[n].grad.abs().sum() > 0 for n in A_names)
    else:
        assert A_names <= buffers.keys() and not A_names & params.keys()
        assert all(not buffers[n].requires_grad and buffers[n].grad is None for n in A_names)
    trained = SSM_NAMES[parameterization] - A_names | {"kernel.C", "D"}
    assert all(params[n].grad.abs().sum() > 0 for n in trained)


@pytest.mark.parametrize(("parameterization", "init"), VARIANTS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_shapes(parameterization, init, bidirectional):
    H, N, l_max = 4, 8, 32
    s4 = layer(parameterization, init, H=H, N=N, l_max=l_max, bidirectional=bidirectional)
    c, N2 = 1 + bidirectional, N // 2
    expected = {
        "nplr": {
            "kernel.log_w_real": (H, N2),
            "kernel.w_imag": (H, N2),
            "kernel.P": (H, 1, N2, 2),
            "kernel.B": (H, N2, 2),
            "kernel.C": (c, H, N2, 2),
        },
        "dense": {"kernel.A": (H, N, N), "kernel.B": (H, N), "kernel.C": (c, H, N)},
    }[parameterization] | {"kernel.log_dt": (H,), "D": (H,)}
    shapes = {n: tuple(p.shape) for n, p in s4.named_parameters() if n.startswith(("kernel", "D"))}
    assert shapes == expected
    assert s4.kernel().shape == (c, H, l_max)
    for L in (1, 7, l_max):
        assert s4(torch.randn(2, L, H, dtype=torch.float64)).shape == (2, L, H)


def test_autocast_keeps_kernel_and_convolution_in_float32():
    s4 = layer(dtype=torch.float32)
    x = torch.randn(2, 24, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = s4(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - s4(x)).abs().max() < 0.05 * s4(x).abs().max()


def test_longer_than_l_max_raises():
    s4 = layer(l_max=16)
    with pytest.raises(ValueError, match="l_max=16"):
        s4(torch.randn(1, 17, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_state": 7}, "even"),
        ({"parameterization": "diagonal"}, "parameterization"),
        ({"init": "random_dense"}, "init"),
        ({"parameterization": "dense", "init": "random"}, "init"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"l_max": 0}, "l_max"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S4Config(**{"l_max": 8, **kwargs})


def test_build_needs_l_max():
    with pytest.raises(ValueError, match="l_max must be set"):
        S4Config().build(4)


def test_bad_inputs_raise():
    s4 = layer()
    with pytest.raises(ValueError, match="d_model=3"):
        s4(torch.randn(1, 8, 4, dtype=torch.float64))
    state = s4.init_state(2)
    with pytest.raises(ValueError, match="init_state"):
        s4.step(torch.randn(3, 3, dtype=torch.float64), state)


@pytest.mark.parametrize("parameterization, init", VARIANTS)
def test_float32_forward_and_gradients_on_the_device_match_float64(parameterization, init, device):
    """On ``--device cuda`` the NPLR kernel goes through the Triton Cauchy op, and the layer's
    float32 forward and gradients must still match the float64 CPU layer."""
    exact = layer(parameterization, init, H=16, N=16, l_max=300)
    fast = layer(parameterization, init, H=16, N=16, l_max=300, dtype=torch.float32).to(device)
    assert_device_matches_float64(exact, fast, device, 16)
