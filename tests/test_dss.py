"""DSS's kernels and recurrent views: each against the power series of the diagonal SSM it
stands for (float64), the reference against the Vandermonde path, the recurrences against the
convolution, overflow where the naive recurrence has it, and the argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm.kernels import complex_softmax, dss_kernel_reference, reciprocal
from ssm.scan import dss_step_system

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = ("exp", "softmax")


def system(H=3, N=4, *, re=(-1.0, -0.05), im=3.0, seed=0, dtype=torch.float64):
    """Random ``Λ``, ``W`` ``(H, N)`` complex and ``Δ`` ``(H,)``, ``Re Λ`` uniform in ``re``."""
    g = torch.Generator().manual_seed(seed)
    real = re[0] + (re[1] - re[0]) * torch.rand(H, N, generator=g, dtype=torch.float64)
    Lambda = torch.complex(real, im * torch.randn(H, N, generator=g, dtype=torch.float64))
    W = torch.randn(H, N, generator=g, dtype=torch.complex128)
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(-4, -1, generator=g))
    return Lambda.to(dtype.to_complex()), W.to(dtype.to_complex()), dt.to(dtype)


def power_series(Lambda, W, dt, L, variant):
    """The kernel by its definition, ``K_k = 2 Re Σ_i W_i B̄_i Ā_i^k``, ``Ā = e^{λΔ}``, with
    DSS's ``B̄`` written out in exact arithmetic (``ε = 0``):
    ``exp``: ``(e^{λΔ} - 1)/λ``; ``softmax``: ``1 / (λ Σ_{j<L} e^{λjΔ})``."""
    dt = torch.as_tensor(dt, dtype=torch.float64).expand(Lambda.shape[0])[:, None]
    Ab = torch.exp(Lambda * dt)  # (H N)
    k = torch.arange(L, dtype=torch.float64)
    powers = Ab[..., None] ** k  # (H N L)
    if variant == "exp":
        Bb = (Ab - 1) / Lambda
    else:
        Bb = 1 / (Lambda * powers.sum(-1))
    return 2 * ((W * Bb)[..., None] * powers).sum(-2).real  # (H L)


def rel_err(a, b):
    return float(((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).detach())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("L", [1, 2, 17, 64, 100])
@pytest.mark.parametrize(
    "re", [(-1.0, -0.05), (0.05, 1.0), (-1.0, 1.0)], ids=["left", "right", "both"]
)
def test_kernels_equal_their_power_series(variant, L, re):
    if variant == "exp" and re[1] > 0:
        re = (-1.0, -0.05)  # DSS-exp keeps Λ in the left half-plane
    Lambda, W, dt = system(re=re)
    ref = power_series(Lambda, W, dt, L, variant)
    assert rel_err(dss_kernel_reference(Lambda, W, dt, L, variant, eps=0), ref) < 1e-12
    assert rel_err(ssm.dss_kernel(Lambda, W, dt, L, variant, eps=0), ref) < 1e-12


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("L", [1, 33, 256])
def test_vandermonde_path_equals_the_reference_with_its_correction(variant, L):
    Lambda, W, dt = system(H=4, N=8, re=(-0.5, 0.5) if variant == "softmax" else (-1, -0.01))
    ref = dss_kernel_reference(Lambda, W, dt, L, variant)
    assert rel_err(ssm.dss_kernel(Lambda, W, dt, L, variant), ref) < 1e-10


def test_dss_exp_is_the_s4d_kernel_with_b_one():
    Lambda, W, dt = system()
    K = ssm.s4d_kernel(Lambda, torch.ones_like(W), W, dt, 50, "zoh")
    assert rel_err(ssm.dss_kernel(Lambda, W, dt, 50, "exp"), K) < 1e-12


def test_complex_softmax_is_defined_where_the_plain_one_is_not():
    P = torch.tensor([0, 1j * math.pi], dtype=torch.complex128)
    plain = torch.exp(P) / torch.exp(P).sum()
    assert not torch.isfinite(plain).all() or plain.abs().max() > 1e10  # 1 + e^{iπ} = 0
    s = complex_softmax(P)
    assert torch.isfinite(s).all() and s.abs().max() < 1e-6
    assert reciprocal(torch.tensor(0j)).abs() == 0


def test_complex_softmax_equals_softmax_on_real_rows():
    P = torch.randn(5, 30, dtype=torch.float64)
    torch.testing.assert_close(
        complex_softmax(P.to(torch.complex128), eps=0).real, torch.softmax(P, -1)
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T", [1, 5, 40])
def test_recurrence_equals_the_convolution(variant, T):
    Lambda, W, dt = system(re=(-0.8, 0.8) if variant == "softmax" else (-1, -0.05))
    u = torch.randn(2, 3, T, dtype=torch.float64)
    y = ssm.dss_recurrence(Lambda, W, dt, u, variant, L=64)
    K = ssm.dss_kernel(Lambda, W, dt, 64, variant)[..., :T]
    assert rel_err(y, ssm.causal_conv(u, K)) < 1e-11


def test_step_system_is_one_column_of_the_recurrence():
    Lambda, W, dt = system(re=(-0.5, 0.5))
    u = torch.randn(3, 20, dtype=torch.float64)
    x = torch.zeros_like(Lambda)
    ys = []
    for k in range(20):
        Ab, Bb, C = dss_step_system(Lambda, W, dt, 20, k, "softmax")
        x = Ab * x + Bb * u[:, k : k + 1]
        ys.append(2 * (C * x).sum(-1).real)
    assert rel_err(torch.stack(ys, -1), ssm.dss_recurrence(Lambda, W, dt, u, "softmax")) < 1e-12


def naive_softmax_recurrence(Lambda, W, dt, u, L):
    """DSS-softmax's state ``x_k = e^{λΔ} x_{k-1} + u_k`` read out through the row sum
    ``Σ_j e^{λjΔ}`` as written: it overflows when ``Re λ > 0``."""
    dL = Lambda * dt[:, None]
    S = (torch.exp(dL * L) - 1) / (torch.exp(dL) - 1)  # (H N)
    x = torch.zeros_like(Lambda)
    for k in range(u.shape[-1]):
        x = torch.exp(dL) * x + u[:, k : k + 1]
    return 2 * (W / (Lambda * S) * x).sum(-1).real


def test_large_positive_real_parts_do_not_overflow_at_65536():
    L = 65536
    Lambda, W, dt = system(H=2, N=4, re=(1.0, 5.0))
    dt = torch.full((2,), 0.1, dtype=torch.float64)
    u = torch.randn(2, L, dtype=torch.float64)
    K = ssm.dss_kernel(Lambda, W, dt, L, "softmax")
    y = ssm.dss_recurrence(Lambda, W, dt, u, "softmax")
    assert torch.isfinite(K).all() and torch.isfinite(y).all()
    assert rel_err(y[:, -1], ssm.causal_conv(u, K)[:, -1]) < 1e-9
    with torch.no_grad():
        naive = naive_softmax_recurrence(Lambda, W, dt, u[:, :2000], L)
    assert not torch.isfinite(naive).all()  # the overflow the stable cases avoid


@settings(max_examples=40, deadline=None)
@given(
    variant=st.sampled_from(VARIANTS),
    N=st.integers(1, 8),
    L=st.integers(1, 300),
    log_dt=st.floats(-7, 0),
    re_lo=st.floats(-50, 50),
    width=st.floats(0, 50),
    im=st.floats(0, 1000),
)
def test_property_kernels_equal_power_series_and_stay_finite(
    variant, N, L, log_dt, re_lo, width, im
):
    re = (re_lo, re_lo + width)
    if variant == "exp":
        re = (-abs(re[1]) - 1e-3, -1e-3) if re[1] >= 0 else re
    Lambda, W, dt = system(H=2, N=N, re=re, im=im)
    dt = torch.full((2,), math.exp(log_dt), dtype=torch.float64)
    assert torch.isfinite(ssm.dss_kernel(Lambda, W, dt, L, variant)).all()  # ε = DSS_EPS
    series_finite = (Lambda * dt[:, None]).abs().max() * L < 600
    if series_finite and Lambda.abs().min() > 1e-2:  # exact (ε = 0) formulas need Λ ≠ 0
        K = ssm.dss_kernel(Lambda, W, dt, L, variant, eps=0)
        ref = power_series(Lambda, W, dt, L, variant)
        assert (K - ref).abs().max() <= 1e-9 * ref.abs().max() + 1e-12


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_half_precision_inputs_give_finite_kernels_and_gradients(variant, dtype):
    Lambda, W, dt = system(N=16, re=(-20, 20) if variant == "softmax" else (-20, -0.01), im=50)
    parts = [torch.view_as_real(Lambda).to(dtype), torch.view_as_real(W).to(dtype), dt.to(dtype)]
    for p in parts:
        p.requires_grad_(True)
    as_complex = [torch.view_as_complex(p.float()) for p in parts[:2]]
    K = ssm.dss_kernel(*as_complex, parts[2], 4096, variant)
    assert K.dtype == torch.float32 and torch.isfinite(K).all()
    K.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in parts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_finite_differences(variant):
    Lambda, W, dt = system(H=1, N=2, re=(-0.5, 0.5) if variant == "softmax" else (-1, -0.1))
    args = [x.clone().requires_grad_(True) for x in (Lambda, W, dt)]
    torch.autograd.gradcheck(lambda a, b, c: ssm.dss_kernel(a, b, c, 9, variant), args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dt": 0.0}, "dt"),
        ({"dt": -0.1}, "dt"),
        ({"dt": torch.ones(2)}, "dt"),
        ({"W": torch.ones(3, 5, dtype=torch.complex128)}, "W must have the shape"),
        ({"Lambda": -torch.ones(3, 4, dtype=torch.float64)}, "Lambda must be a complex"),
        ({"Lambda": -torch.ones(4, dtype=torch.complex128)}, "Lambda must be a complex"),
        ({"variant": "cosine"}, "variant"),
        ({"L": 0}, "L"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    Lambda, W, dt = system()
    args = {"Lambda": Lambda, "W": W, "dt": dt, "L": 8, "variant": "exp", **kwargs}
    for fn in (ssm.dss_kernel, dss_kernel_reference):
        with pytest.raises(ValueError, match=match):
            fn(**args)


def test_bad_recurrence_arguments_raise():
    Lambda, W, dt = system()
    with pytest.raises(ValueError, match="u must have shape"):
        ssm.dss_recurrence(Lambda, W, dt, torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="longer than the kernel length"):
        ssm.dss_recurrence(Lambda, W, dt, torch.randn(3, 9), L=8)
    with pytest.raises(ValueError, match="k must be"):
        dss_step_system(Lambda, W, dt, 8, 8, "softmax")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("L", [1, 1000, 16384])
def test_float32_kernels_on_the_device_match_float64(variant, L, device):
    """On ``--device cuda`` :func:`ssm.dss_kernel` runs the Triton Vandermonde op, forward and
    backward; both must match the float64 reference on the CPU."""
    re = (-3.0, 3.0) if variant == "softmax" else (-3.0, -1e-3)
    exact = [t.clone().requires_grad_(True) for t in system(H=8, N=32, re=re, im=30.0)]
    fast = [t.detach().to(torch.complex64 if t.is_complex() else torch.float32) for t in exact]
    fast = [t.to(device).requires_grad_(True) for t in fast]
    weight = torch.randn(8, L, dtype=torch.float64)
    K = dss_kernel_reference(*exact, L, variant)
    (K * weight).sum().backward()
    K_fast = ssm.dss_kernel(*fast, L, variant)
    (K_fast * weight.float().to(device)).sum().backward()
    assert rel_err(K_fast.double().cpu(), K) < 1e-4
    floor = 1e-3 * max(float(e.grad.abs().max()) for e in exact)  # Δ's gradient is 0 at L = 1
    for e, f in zip(exact, fast, strict=True):
        err = float((f.grad.cpu().to(e.grad.dtype) - e.grad).abs().max())
        assert err < 1e-2 * max(float(e.grad.abs().max()), floor)  # float32 sums over L terms
