"""The Vandermonde product: float64 reference against the S4D kernel and the definition, the
blocked and transposed forms, gradients, and the Triton kernel in the CPU interpreter."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm.ops.vandermonde import (
    vandermonde,
    vandermonde_blocked,
    vandermonde_ref,
    vandermonde_transpose,
)
from ssm.ops.vandermonde.reference import vandermonde_transpose_ref
from ssm.ops.vandermonde.triton import vandermonde_transpose_triton, vandermonde_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
C128 = torch.complex128


def inputs(H, N, seed=0, decay=(0.001, 0.1), freq=3.0):
    """``v`` and ``x = ΔA``-like log-eigenvalues (decaying, oscillating), complex128."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(H, N, dtype=C128, generator=gen)
    re = -(decay[0] + (decay[1] - decay[0]) * torch.rand(H, N, dtype=torch.float64, generator=gen))
    im = freq * (2 * torch.rand(H, N, dtype=torch.float64, generator=gen) - 1)
    return v, torch.complex(re, im)


def fp32(*zs):
    """Round to complex64 (the kernel's inputs) and back: the reference sees the same numbers."""
    return tuple(z.to(torch.complex64) for z in zs), tuple(
        z.to(torch.complex64).to(C128) for z in zs
    )


# ---------------------------------------------------------------- references (float64)


def test_reference_is_the_s4d_kernel():
    H, N, L = 3, 8, 50
    gen = torch.Generator().manual_seed(1)
    A = torch.complex(
        -0.5 * torch.ones(H, N, dtype=torch.float64),
        torch.pi * torch.arange(N, dtype=torch.float64).expand(H, N),
    )  # S4D-Lin
    B = torch.randn(H, N, dtype=C128, generator=gen)
    C = torch.randn(H, N, dtype=C128, generator=gen)
    dt = torch.tensor([0.01, 0.05, 0.2], dtype=torch.float64)
    _, Bb = ssm.discretize(A, B, dt, "zoh", diagonal=True)
    K = vandermonde_ref(C * Bb, dt[:, None] * A, L)  # x = ΔA = log Ā
    torch.testing.assert_close(K, ssm.s4d_kernel(A, B, C, dt, L), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    H=st.integers(1, 3),
    N=st.integers(1, 6),
    L=st.integers(1, 40),
    T=st.integers(1, 45),
    seed=st.integers(0, 2**16),
)
def test_reference_and_blocked_equal_the_power_series(H, N, L, T, seed):
    v, x = inputs(H, N, seed)
    expected = 2 * ssm.ssm_kernel(torch.exp(x), v, torch.ones_like(v), L, diagonal=True).real
    torch.testing.assert_close(vandermonde_ref(v, x, L), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(vandermonde_blocked(v, x, L), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(vandermonde_blocked(v, x, L, T), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", [vandermonde_ref, vandermonde_blocked], ids=["ref", "blocked"])
def test_reference_gradcheck(fn):
    v, x = inputs(2, 3, seed=2)
    v.requires_grad_(), x.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, x: fn(v, x, 9), (v, x))


@settings(max_examples=15, deadline=None)
@given(H=st.integers(1, 3), N=st.integers(1, 5), L=st.integers(1, 30), seed=st.integers(0, 999))
def test_transpose_gives_the_gradients(H, N, L, seed):
    """``dv = 2 conj(S)`` and ``dx = 2 conj(v S¹)``: the README's derivation."""
    v, x = inputs(H, N, seed)
    v.requires_grad_(), x.requires_grad_()
    g = torch.randn(H, L, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    dv, dx = torch.autograd.grad(vandermonde_ref(v, x, L), (v, x), g)
    S, S1 = vandermonde_transpose_ref(g, x.detach(), weighted=True)
    torch.testing.assert_close(dv, 2 * S.conj(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dx, 2 * (v.detach() * S1).conj(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- Triton (interpreted)

SHAPES = [
    pytest.param(2, 4, 1, id="H2-N4-L1"),
    pytest.param(3, 16, 7, id="H3-N16-L7"),
    pytest.param(2, 5, 33, id="H2-N5-L33"),
    pytest.param(4, 8, 64, id="H4-N8-L64"),
    pytest.param(3, 40, 100, id="H3-N40-L100"),  # two blocks of N, two rows of l₁
]


def forward_bound(v, x, L):
    """``Σ_n 2|v| e^{Re x l} (1 + |x| l)``: the size of the terms, with the phase's growth."""
    l = torch.arange(L, dtype=torch.float64)
    return 2 * (
        v.abs()[..., None] * torch.exp(x.real[..., None] * l) * (1 + x.abs()[..., None] * l)
    ).sum(1)


@pytest.mark.parametrize(("H", "N", "L"), SHAPES)
def test_triton_forward(H, N, L, poisoned):
    (v32, x32), (v, x) = fp32(*inputs(H, N, seed=L))
    K = vandermonde_triton(v32, x32, L)
    assert K.dtype == torch.float32 and K.shape == (H, L)
    assert not K.isnan().any(), "an output element was left unwritten"
    err = (K.double() - vandermonde_ref(v, x, L)).abs()
    assert (err <= 8 * EPS32 * forward_bound(v, x, L)).all(), float(err.max())


@pytest.mark.parametrize(("H", "N", "L"), SHAPES)
def test_triton_gradients(H, N, L, poisoned):
    (v32, x32), (v, x) = fp32(*inputs(H, N, seed=L + 1))
    g = torch.randn(H, L, dtype=torch.float64, generator=torch.Generator().manual_seed(L))
    v, x, v32, x32 = (t.requires_grad_() for t in (v, x, v32, x32))
    dv, dx = torch.autograd.grad(vandermonde_ref(v, x, L), (v, x), g)
    dv32, dx32 = torch.autograd.grad(vandermonde_triton(v32, x32, L), (v32, x32), g.float())
    assert dv32.dtype == dx32.dtype == torch.complex64
    assert not (dv32.isnan().any() or dx32.isnan().any())
    l = torch.arange(L, dtype=torch.float64)
    terms = g.abs()[:, None, :] * torch.exp(x.real.detach()[..., None] * l)  # (H N L)
    growth = 1 + x.abs().detach()[..., None] * l
    bound_v = 2 * (terms * growth).sum(-1)
    bound_x = 2 * v.abs().detach() * (terms * growth * l).sum(-1)
    assert ((dv32.to(C128) - dv).abs() <= 8 * EPS32 * bound_v).all()
    assert ((dx32.to(C128) - dx).abs() <= 8 * EPS32 * (bound_x + 1e-30)).all()


def test_triton_transpose_batched(poisoned):
    (_, x32), (_, x) = fp32(*inputs(3, 6, seed=5))
    g = torch.randn(2, 3, 70, generator=torch.Generator().manual_seed(5))
    S, S1 = vandermonde_transpose_triton(g, x32, weighted=True)
    S_ref, S1_ref = vandermonde_transpose_ref(g.double(), x, weighted=True)
    assert S.shape == S1.shape == (2, 3, 6) and not (S.isnan().any() or S1.isnan().any())
    scale = g.abs().sum(-1, keepdim=True).double() * 70  # Σ|g| · (1 + |x| L), |x| < 1
    assert ((S.to(C128) - S_ref).abs() <= 8 * EPS32 * scale).all()
    assert ((S1.to(C128) - S1_ref).abs() <= 8 * EPS32 * scale * 70).all()


def test_triton_deterministic(poisoned):
    (v32, x32), _ = fp32(*inputs(3, 40, seed=3))
    g = torch.randn(3, 100, generator=torch.Generator().manual_seed(3))
    runs = []
    for _ in range(2):
        v, x = v32.clone().requires_grad_(), x32.clone().requires_grad_()
        K = vandermonde_triton(v, x, 100)
        runs.append((K, *torch.autograd.grad(K, (v, x), g)))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch


def test_public_function_paths():
    (v32, x32), (v, x) = fp32(*inputs(2, 4, seed=4))
    K_triton = vandermonde(v32, x32, 20, backend="triton")
    torch.testing.assert_close(K_triton, vandermonde_triton(v32, x32, 20), rtol=0, atol=0)
    K_ref = vandermonde(v, x, 20)  # float64 under "auto": the reference, in float64
    assert K_ref.dtype == torch.float64
    torch.testing.assert_close(K_ref, vandermonde_ref(v, x, 20))
    g = torch.randn(3, 2, 20, dtype=torch.float64)
    torch.testing.assert_close(vandermonde_transpose(g, x), vandermonde_transpose_ref(g, x))
    with pytest.raises(ValueError, match="float32"):
        vandermonde(v, x, 20, backend="triton")


BAD = [
    pytest.param(lambda v, x: vandermonde(v.real, x, 5), "v must be a complex", id="real-v"),
    pytest.param(lambda v, x: vandermonde(v[0], x, 5), "shape", id="1d-v"),
    pytest.param(lambda v, x: vandermonde(v, x[:, :2], 5), "same shape", id="mismatch"),
    pytest.param(lambda v, x: vandermonde(v, x, 0), "L must be", id="L0"),
    pytest.param(lambda v, x: vandermonde(v, x, 2.5), "L must be", id="L-float"),
    pytest.param(lambda v, x: vandermonde(v, x, 5, backend="cuda"), "backend", id="backend"),
    pytest.param(lambda v, x: vandermonde_transpose(v.real[0], x), "g must have", id="g-shape"),
    pytest.param(lambda v, x: vandermonde_transpose(v, x), "real floating", id="g-complex"),
]


@pytest.mark.parametrize(("call", "match"), BAD)
def test_bad_inputs(call, match):
    v, x = inputs(2, 4)
    with pytest.raises(ValueError, match=match):
        call(v, x)


def test_triton_backend_without_gpu_raises():
    code = (
        "import torch\n"
        "from ssm.ops.vandermonde import vandermonde\n"
        "v = torch.ones(2, 4, dtype=torch.complex64)\n"
        "try:\n"
        "    vandermonde(v, v, 8, backend='triton')\n"
        "except RuntimeError as err:\n"
        "    print('RuntimeError:', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SSM_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "RuntimeError: vandermonde: backend 'triton' needs CUDA tensors" in out.stdout, out
