"""The symmetric Cauchy product: float64 reference against the definition and against the
generating function of an S4D kernel, gradients, and the Triton kernel against the float64
reference (``--device cpu``: Triton's interpreter at small sizes; ``--device cuda``: compiled,
at real sizes too), with its outputs NaN-poisoned and its results bitwise repeatable."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layouts import LAYOUTS

import ssm
from ssm.ops import dispatch
from ssm.ops.cauchy import _probe, cauchy, cauchy_ref
from ssm.ops.cauchy.triton import cauchy_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
C64, C128 = torch.complex64, torch.complex128
ROWS = 64  # rows per chunk of the float64 reference, which materializes (rows, L, N)


def inputs(H, N, L, seed=0, device="cpu"):
    """``v``, ``w`` (stable poles, S4-like) and points ``z`` on the unit circle, complex128."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(H, N, dtype=C128, generator=gen)
    w = torch.complex(
        -0.05 - torch.rand(H, N, dtype=torch.float64, generator=gen),
        4 * torch.randn(H, N, dtype=torch.float64, generator=gen),
    )
    z = torch.exp(2j * torch.pi * (torch.arange(L, dtype=torch.float64) + 0.5) / L)
    return v.to(device), z.to(device), w.to(device)


def fp32(*zs):
    """Round to complex64 (the kernel's inputs) and back: the reference sees the same numbers."""
    return tuple(t.to(C64) for t in zs), tuple(t.to(C64).to(C128) for t in zs)


def chunks(H):
    return [slice(h, min(h + ROWS, H)) for h in range(0, H, ROWS)]


def magnitudes(v, z, w, power=1):
    """``Σ_n |v| (|z - w|^-p + |z - w̄|^-p)``: the size of the terms, ``(H, L)``."""
    d1 = (z[None, :, None] - w[:, None, :]).abs() ** power
    d2 = (z[None, :, None] - w[:, None, :].conj()).abs() ** power
    return (v.abs()[:, None, :] * (1 / d1 + 1 / d2)).sum(-1)


# Small shapes run everywhere; the real sizes (S4 at H 1024, N 64, L 16384) on a GPU only.
SHAPES = [
    pytest.param((2, 4, 1), id="H2-N4-L1"),
    pytest.param((3, 16, 7), id="H3-N16-L7"),
    pytest.param((2, 5, 33), id="H2-N5-L33"),
    pytest.param((4, 8, 64), id="H4-N8-L64"),
    pytest.param((2, 20, 300), id="H2-N20-L300"),  # several blocks of N and of L
]
GPU_SHAPES = [
    pytest.param((256, 64, 4096), id="H256-N64-L4096"),
    pytest.param((1024, 64, 16384), id="H1024-N64-L16384"),
]


SIZES = {"shape": (SHAPES, GPU_SHAPES)}  # parametrized by tests/ops/conftest.py


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


# ---------------------------------------------------------------- Triton against float64


def test_triton_forward(shape, device, poisoned):
    H, N, L = shape
    (v32, z32, w32), (v, z, w) = fp32(*inputs(H, N, L, seed=L, device=device))
    out = cauchy_triton(v32, z32, w32)
    assert out.dtype == C64 and out.shape == (H, L)
    assert not out.isnan().any(), "an output element was left unwritten"
    for rows in chunks(H):
        err = (out[rows].to(C128) - cauchy_ref(v[rows], z, w[rows])).abs()
        bound = 16 * EPS32 * magnitudes(v[rows], z, w[rows])
        assert (err <= bound).all(), float((err / bound).max())


def test_triton_gradients(shape, device, poisoned):
    H, N, L = shape
    (v32, z32, w32), (v, z, w) = fp32(*inputs(H, N, L, seed=L + 1, device=device))
    g = torch.randn(H, L, dtype=C128, generator=torch.Generator().manual_seed(L)).to(device)
    fast_in = [t.requires_grad_() for t in (v32, z32, w32)]
    fast = torch.autograd.grad(cauchy_triton(*fast_in), fast_in, g.to(C64))
    for name, got in zip("vzw", fast, strict=True):
        assert got.dtype == C64 and not got.isnan().any(), name
    dz, dz_bound = torch.zeros_like(z), torch.zeros(L, dtype=torch.float64, device=device)
    for rows in chunks(H):
        ref_in = [t.clone().requires_grad_() for t in (v[rows], z, w[rows])]
        dv, dz_rows, dw = torch.autograd.grad(cauchy_ref(*ref_in), ref_in, g[rows])
        d1 = (z[None, :, None] - w[rows, None, :]).abs()  # (rows L N)
        d2 = (z[None, :, None] - w[rows, None, :].conj()).abs()
        ga = g[rows].abs()[:, :, None]
        bound_v = (ga * (1 / d1 + 1 / d2)).sum(1)  # dv: Σ_l |g| (|c| + |c'|)
        bound_w = v[rows].abs() * (ga * (1 / d1**2 + 1 / d2**2)).sum(1)
        for name, got, want, bound in (("v", fast[0], dv, bound_v), ("w", fast[2], dw, bound_w)):
            err = (got[rows].to(C128) - want).abs()
            assert (err <= 16 * EPS32 * bound).all(), (name, float(err.max()))
        dz += dz_rows
        dz_bound += (ga * v[rows].abs()[:, None, :] * (1 / d1**2 + 1 / d2**2)).sum((0, 2))
    assert ((fast[1].to(C128) - dz).abs() <= 16 * EPS32 * dz_bound).all()


def test_triton_deterministic(device, on_gpu, poisoned):
    """Forward and gradients bitwise equal from run to run (at real size on a GPU)."""
    H, N, L = (1024, 64, 16384) if on_gpu else (3, 20, 150)
    (v32, z32, w32), _ = fp32(*inputs(H, N, L, seed=3, device=device))
    g = torch.randn(H, L, dtype=C64, generator=torch.Generator().manual_seed(3)).to(device)
    runs = []
    for _ in range(2):
        args = [t.clone().requires_grad_() for t in (v32, z32, w32)]
        out = cauchy_triton(*args)
        runs.append((out, *torch.autograd.grad(out, args, g)))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch


def test_public_function_paths(device):
    (v, z, w), _ = fp32(*inputs(2, 4, 9, seed=4, device=device))
    torch.testing.assert_close(cauchy(v, z, w, backend="triton"), cauchy_triton(v, z, w))
    torch.testing.assert_close(cauchy(v, z, w, backend="reference"), cauchy_ref(v, z, w))


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_float64_policy(backend, device):
    """complex128 anywhere: the reference in complex128 under "auto", a ValueError naming the
    dtype under "triton"."""
    (v32, _, w32), (v, z, w) = fp32(*inputs(2, 4, 9, seed=4, device=device))
    for args in ((v, z, w), (v32, z, w32)):
        if backend == "triton":
            with pytest.raises(ValueError, match="complex128"):
                cauchy(*args, backend=backend)
        else:
            out = cauchy(*args, backend=backend)
            assert out.dtype == C128
            torch.testing.assert_close(out, cauchy_ref(*(t.to(C128) for t in args)))


def test_auto_runs_the_kernel_on_a_gpu(device, on_gpu):
    """The probe passes: on a GPU "auto" then runs the kernel without a warning; on the CPU the
    same probe runs in the interpreter (and "auto" keeps to the reference)."""
    (v32, z32, w32), _ = fp32(*inputs(2, 4, 9, seed=5, device=device))
    _probe(device)
    path = dispatch.choose("cauchy", (v32, z32, w32), "auto", _probe)
    assert path == ("triton" if on_gpu else "reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cauchy(v32, z32, w32)
    expected = cauchy_triton if on_gpu else cauchy_ref
    torch.testing.assert_close(out, expected(v32, z32, w32), rtol=0, atol=0)


BACKENDS = ["reference", "triton"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_equal_the_reference(layout, backend, device):
    """Strided, expanded (stride-0) and ``conj()`` inputs: outputs and gradients equal the
    float64 reference on the same views."""
    view = LAYOUTS[layout]
    (v32, z32, w32), (v, z, w) = fp32(*inputs(3, 20, 70, seed=6, device=device))
    fast_in = [t.requires_grad_() for t in (v32, z32, w32)]
    ref_in = [t.requires_grad_() for t in (v, z, w)]
    out = cauchy(*map(view, fast_in), backend=backend)
    want = cauchy_ref(*map(view, ref_in))
    g = torch.randn(3, 70, dtype=C128, generator=torch.Generator().manual_seed(6)).to(device)
    scale = float(want.detach().abs().max())
    torch.testing.assert_close(out.to(C128), want, rtol=1e-4, atol=1e-5 * scale)
    got = torch.autograd.grad(out, fast_in, g.to(C64))
    for a, b in zip(got, torch.autograd.grad(want, ref_in, g), strict=True):
        torch.testing.assert_close(a.to(C128), b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


EMPTY = [
    pytest.param((0, 4, 5), (0, 5), id="H0"),
    pytest.param((2, 0, 5), (2, 5), id="N0"),
]


@pytest.mark.parametrize(("HNL", "out_shape"), EMPTY)
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_dimensions(HNL, out_shape, backend, device):
    """No rows: an empty output; no poles: the empty sum, zero."""
    (v, z, w), _ = fp32(*inputs(*HNL, device=device))
    out = cauchy(v, z, w, backend=backend)
    assert out.shape == out_shape
    torch.testing.assert_close(out, torch.zeros(out_shape, dtype=C64, device=device))


def bad_calls():
    v, z, w = inputs(2, 4, 6)
    meta = torch.device("meta")
    return [
        pytest.param(lambda: cauchy(v.real, z, w), "v must be a complex", id="real-v"),
        pytest.param(lambda: cauchy(v, z[None], w), "z must be a complex", id="2d-z"),
        pytest.param(lambda: cauchy(v, z, w[:, :2]), "same shape", id="mismatch"),
        pytest.param(lambda: cauchy(v, z[:0], w), "at least one point", id="no-points"),
        pytest.param(lambda: cauchy(v, z, w, backend="gpu"), "backend", id="backend"),
        pytest.param(lambda: cauchy(v, z, "w"), "torch.Tensor", id="not-tensor"),
        pytest.param(lambda: cauchy(v.to(meta), z, w), "v is a meta tensor", id="meta"),
        pytest.param(
            lambda: cauchy(v, z.to(meta), w, backend="triton"), "z is a meta", id="meta-z"
        ),
        pytest.param(lambda: cauchy(v, z, w.real.long()), "w must have a floating", id="int-w"),
    ]


@pytest.mark.parametrize(("call", "match"), bad_calls())
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_another_device_is_refused(device):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    v, z, w = inputs(2, 4, 6, device=device)
    with pytest.raises(ValueError, match="z"):
        cauchy(v, z.to(other), w)
