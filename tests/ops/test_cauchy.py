"""The symmetric Cauchy product: float64 reference against the definition and against the
generating function of an S4D kernel, gradients, and the Triton kernel in the CPU interpreter."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm.ops.cauchy import cauchy, cauchy_ref
from ssm.ops.cauchy.triton import cauchy_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
C128 = torch.complex128


def inputs(H, N, L, seed=0):
    """``v``, ``w`` (stable poles, S4-like) and points ``z`` on the unit circle, complex128."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(H, N, dtype=C128, generator=gen)
    w = torch.complex(
        -0.05 - torch.rand(H, N, dtype=torch.float64, generator=gen),
        4 * torch.randn(H, N, dtype=torch.float64, generator=gen),
    )
    z = torch.exp(2j * torch.pi * (torch.arange(L, dtype=torch.float64) + 0.5) / L)
    return v, z, w


def fp32(*zs):
    """Round to complex64 (the kernel's inputs) and back: the reference sees the same numbers."""
    return tuple(t.to(torch.complex64) for t in zs), tuple(
        t.to(torch.complex64).to(C128) for t in zs
    )


# ---------------------------------------------------------------- references (float64)


@settings(max_examples=25, deadline=None)
@given(H=st.integers(1, 3), N=st.integers(1, 6), L=st.integers(1, 20), seed=st.integers(0, 999))
def test_reference_is_the_definition(H, N, L, seed):
    v, z, w = inputs(H, N, L, seed)
    expected = torch.zeros(H, L, dtype=C128)
    for h in range(H):
        for l in range(L):
            for n in range(N):
                expected[h, l] += v[h, n] / (z[l] - w[h, n])
                expected[h, l] += v[h, n].conj() / (z[l] - w[h, n].conj())
    torch.testing.assert_close(cauchy_ref(v, z, w), expected, rtol=1e-12, atol=1e-12)


def test_reference_is_the_generating_function_of_the_s4d_kernel():
    """``Σ_{l<L} K[l] ζ^l = Σ_n v (1 - Ā^L) / (1 - Ā ζ) + conj`` at ``ζ^L = 1``: with
    ``z = 1/ζ`` this is ``z · cauchy(v (1 - Ā^L), z, Ā)``, the FFT of :func:`ssm.s4d_kernel`."""
    H, N, L = 2, 6, 32
    gen = torch.Generator().manual_seed(3)
    A = torch.complex(
        -0.5 * torch.ones(H, N, dtype=torch.float64),
        torch.pi * torch.arange(N, dtype=torch.float64).expand(H, N),
    )
    B = torch.randn(H, N, dtype=C128, generator=gen)
    C = torch.randn(H, N, dtype=C128, generator=gen)
    dt = torch.tensor([0.05, 0.3], dtype=torch.float64)
    K = ssm.s4d_kernel(A, B, C, dt, L)  # (H L)
    Ab, Bb = ssm.discretize(A, B, dt, "zoh", diagonal=True)
    z = torch.exp(2j * torch.pi * torch.arange(L, dtype=torch.float64) / L)  # 1/ζ, ζ = e^{-2πij/L}
    K_hat = z * cauchy_ref(C * Bb * (1 - Ab**L), z, Ab)
    torch.testing.assert_close(K_hat, torch.fft.fft(K.to(C128)), rtol=1e-10, atol=1e-10)


def test_reference_gradcheck():
    v, z, w = inputs(2, 3, 5, seed=1)
    for t in (v, z, w):
        t.requires_grad_()
    assert torch.autograd.gradcheck(cauchy_ref, (v, z, w))


# ---------------------------------------------------------------- Triton (interpreted)

SHAPES = [
    pytest.param(2, 4, 1, id="H2-N4-L1"),
    pytest.param(3, 16, 7, id="H3-N16-L7"),
    pytest.param(2, 5, 33, id="H2-N5-L33"),
    pytest.param(4, 8, 64, id="H4-N8-L64"),
    pytest.param(2, 20, 300, id="H2-N20-L300"),  # several blocks of N and of L
]


def magnitudes(v, z, w, power=1):
    """``Σ_n |v| (|z - w|^-p + |z - w̄|^-p)``: the size of the terms, ``(H, L)``."""
    d1 = (z[None, :, None] - w[:, None, :]).abs() ** power
    d2 = (z[None, :, None] - w[:, None, :].conj()).abs() ** power
    return (v.abs()[:, None, :] * (1 / d1 + 1 / d2)).sum(-1)


@pytest.mark.parametrize(("H", "N", "L"), SHAPES)
def test_triton_forward(H, N, L, poisoned):
    (v32, z32, w32), (v, z, w) = fp32(*inputs(H, N, L, seed=L))
    out = cauchy_triton(v32, z32, w32)
    assert out.dtype == torch.complex64 and out.shape == (H, L)
    assert not out.isnan().any(), "an output element was left unwritten"
    err = (out.to(C128) - cauchy_ref(v, z, w)).abs()
    assert (err <= 16 * EPS32 * magnitudes(v, z, w)).all(), float(err.max())


@pytest.mark.parametrize(("H", "N", "L"), SHAPES)
def test_triton_gradients(H, N, L, poisoned):
    (v32, z32, w32), (v, z, w) = fp32(*inputs(H, N, L, seed=L + 1))
    g = torch.randn(H, L, dtype=C128, generator=torch.Generator().manual_seed(L))
    ref_in = [t.requires_grad_() for t in (v, z, w)]
    fast_in = [t.requires_grad_() for t in (v32, z32, w32)]
    grads = torch.autograd.grad(cauchy_ref(*ref_in), ref_in, g)
    fast = torch.autograd.grad(cauchy_triton(*fast_in), fast_in, g.to(torch.complex64))
    v, z, w = (t.detach() for t in ref_in)
    d1 = (z[None, :, None] - w[:, None, :]).abs()  # (H L N)
    d2 = (z[None, :, None] - w[:, None, :].conj()).abs()
    ga = g.abs()[:, :, None]
    bounds = (
        (ga * (1 / d1 + 1 / d2)).sum(1),  # dv: Σ_l |g| (|c| + |c'|)
        (ga * v.abs()[:, None, :] * (1 / d1**2 + 1 / d2**2)).sum((0, 2)),  # dz
        v.abs() * (ga * (1 / d1**2 + 1 / d2**2)).sum(1),  # dw
    )
    for name, got, expected, bound in zip("vzw", fast, grads, bounds, strict=True):
        assert got.dtype == torch.complex64 and not got.isnan().any(), name
        err = (got.to(C128) - expected).abs()
        assert (err <= 16 * EPS32 * bound).all(), (name, float(err.max()))


def test_triton_deterministic(poisoned):
    (v32, z32, w32), _ = fp32(*inputs(3, 20, 150, seed=3))
    g = torch.randn(3, 150, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    runs = []
    for _ in range(2):
        args = [t.clone().requires_grad_() for t in (v32, z32, w32)]
        out = cauchy_triton(*args)
        runs.append((out, *torch.autograd.grad(out, args, g)))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch


def test_public_function_paths():
    (v32, z32, w32), (v, z, w) = fp32(*inputs(2, 4, 9, seed=4))
    out = cauchy(v32, z32, w32, backend="triton")
    torch.testing.assert_close(out, cauchy_triton(v32, z32, w32), rtol=0, atol=0)
    out_ref = cauchy(v, z, w)  # complex128 under "auto": the reference, in float64
    assert out_ref.dtype == C128
    torch.testing.assert_close(out_ref, cauchy_ref(v, z, w))
    with pytest.raises(ValueError, match="float32"):
        cauchy(v, z, w, backend="triton")


BAD = [
    pytest.param(lambda v, z, w: cauchy(v.real, z, w), "v must be a complex", id="real-v"),
    pytest.param(lambda v, z, w: cauchy(v, z[None], w), "z must be a complex", id="2d-z"),
    pytest.param(lambda v, z, w: cauchy(v, z, w[:, :2]), "same shape", id="mismatch"),
    pytest.param(lambda v, z, w: cauchy(v, z[:0], w), "at least one point", id="no-points"),
    pytest.param(lambda v, z, w: cauchy(v, z, w, backend="gpu"), "backend", id="backend"),
    pytest.param(lambda v, z, w: cauchy(v, z, "w"), "torch.Tensor", id="not-tensor"),
]


@pytest.mark.parametrize(("call", "match"), BAD)
def test_bad_inputs(call, match):
    v, z, w = inputs(2, 4, 6)
    with pytest.raises(ValueError, match=match):
        call(v, z, w)


def test_triton_backend_without_gpu_raises():
    code = (
        "import torch\n"
        "from ssm.ops.cauchy import cauchy\n"
        "v = torch.ones(2, 4, dtype=torch.complex64)\n"
        "try:\n"
        "    cauchy(v, torch.ones(5, dtype=torch.complex64), v, backend='triton')\n"
        "except RuntimeError as err:\n"
        "    print('RuntimeError:', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SSM_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "RuntimeError: cauchy: backend 'triton' needs CUDA tensors" in out.stdout, out
