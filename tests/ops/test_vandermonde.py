"""The Vandermonde product: float64 reference against the S4D kernel and the definition, the
blocked and transposed forms, gradients, and the Triton kernels against the float64 definition
(``--device cpu``: Triton's interpreter at small sizes; ``--device cuda``: compiled, at real
sizes too), with outputs NaN-poisoned and results bitwise repeatable."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layouts import LAYOUTS

import ssm
from ssm.ops import dispatch
from ssm.ops.vandermonde import (
    _probe,
    _probe_transpose,
    log_eigenvalues,
    vandermonde,
    vandermonde_blocked,
    vandermonde_ref,
    vandermonde_transpose,
)
from ssm.ops.vandermonde.reference import vandermonde_transpose_ref
from ssm.ops.vandermonde.triton import vandermonde_transpose_triton, vandermonde_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
TINY32 = torch.finfo(torch.float32).tiny  # the smallest normal float32
C64, C128 = torch.complex64, torch.complex128
ROWS = 64  # channels per chunk of the float64 definitions, which materialize (rows, N, L)


def inputs(H, N, seed=0, decay=(0.001, 0.1), freq=3.0, device="cpu"):
    """``v`` and ``x = ΔA``-like log-eigenvalues (decaying, oscillating), complex128."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(H, N, dtype=C128, generator=gen)
    re = -(decay[0] + (decay[1] - decay[0]) * torch.rand(H, N, dtype=torch.float64, generator=gen))
    im = freq * (2 * torch.rand(H, N, dtype=torch.float64, generator=gen) - 1)
    return v.to(device), torch.complex(re, im).to(device)


def fp32(*zs):
    """Round to complex64 (the kernel's inputs) and back: the reference sees the same numbers."""
    return tuple(z.to(C64) for z in zs), tuple(z.to(C64).to(C128) for z in zs)


def chunks(H):
    return [slice(h, min(h + ROWS, H)) for h in range(0, H, ROWS)]


def powers(x, L):
    """``exp(x l)`` ``(H, N, L)`` and ``l`` ``(L,)``, float64."""
    l = torch.arange(L, dtype=torch.float64, device=x.device)
    return torch.exp(x[..., None] * l), l


def definition(v, x, L):
    """``2 Re Σ_n v exp(x l)`` elementwise (no matrix product: cuBLAS refuses deterministic
    mode, which the poisoned-memory fixture turns on)."""
    return 2 * (v[..., None] * powers(x, L)[0]).sum(-2).real  # (H L)


def transpose_definition(g, x):
    """``Σ_l g exp(x l)`` and ``Σ_l g l exp(x l)`` elementwise: ``(..., H, N)`` twice."""
    V, l = powers(x, g.shape[-1])
    gV = g[..., None, :] * V  # (... H N L)
    return gV.sum(-1), (gV * l).sum(-1)


# Small shapes run everywhere; the real sizes (S4D at H 1024, N 64, L 16384) on a GPU only.
SHAPES = [
    pytest.param((2, 4, 1), id="H2-N4-L1"),
    pytest.param((3, 16, 7), id="H3-N16-L7"),
    pytest.param((2, 5, 33), id="H2-N5-L33"),
    pytest.param((4, 8, 64), id="H4-N8-L64"),
    pytest.param((3, 40, 100), id="H3-N40-L100"),  # two blocks of N, two rows of l₁
]
GPU_SHAPES = [
    pytest.param((256, 64, 4096), id="H256-N64-L4096"),
    pytest.param((1024, 64, 16384), id="H1024-N64-L16384"),
]


SIZES = {"shape": (SHAPES, GPU_SHAPES)}  # parametrized by tests/ops/conftest.py


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
    torch.testing.assert_close(definition(v, x, L), expected, rtol=1e-10, atol=1e-12)
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
    S_def, S1_def = transpose_definition(g, x.detach())
    torch.testing.assert_close(S, S_def, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(S1, S1_def, rtol=1e-10, atol=1e-12)


def test_log_eigenvalues_where_the_eigenvalue_is_zero():
    """``Ā = 0`` (underflowed): ``exp(x l)`` is 1 at ``l = 0`` and exactly 0 after, in float32
    and float64; elsewhere ``x = log Ā``."""
    Ab = torch.tensor([[0.0, 0.5 + 0.5j, -0.25]], dtype=C128)
    x = log_eigenvalues(Ab)
    torch.testing.assert_close(torch.exp(x[0, 1:]), Ab[0, 1:])
    for dtype in (C64, C128):
        V = torch.exp(x.to(dtype)[..., None] * torch.arange(5).to(dtype))  # (1 3 5)
        assert bool(torch.isfinite(V).all())
        assert V[0, 0, 0] == 1 and bool((V[0, 0, 1:] == 0).all())


# ---------------------------------------------------------------- Triton against float64


def forward_bound(v, x, L):
    """``Σ_n 2|v| e^{Re x l} (1 + |x| l)``: the size of the terms, with the phase's growth."""
    l = torch.arange(L, dtype=torch.float64, device=x.device)
    return 2 * (
        v.abs()[..., None] * torch.exp(x.real[..., None] * l) * (1 + x.abs()[..., None] * l)
    ).sum(1)


def test_triton_forward(shape, device, poisoned):
    H, N, L = shape
    (v32, x32), (v, x) = fp32(*inputs(H, N, seed=L, device=device))
    K = vandermonde_triton(v32, x32, L)
    assert K.dtype == torch.float32 and K.shape == (H, L)
    assert not K.isnan().any(), "an output element was left unwritten"
    for rows in chunks(H):
        err = (K[rows].double() - definition(v[rows], x[rows], L)).abs()
        # relative to the terms, and absolute where they fall below float32's normal range (a
        # GPU flushes those to zero): 2 |v| per term and factor of the product
        tiny = 4 * TINY32 * v[rows].abs().sum(1, keepdim=True)
        bound = 8 * EPS32 * forward_bound(v[rows], x[rows], L) + tiny
        assert (err <= bound).all(), float((err / bound).max())


def test_triton_gradients(shape, device, poisoned):
    H, N, L = shape
    (v32, x32), (v, x) = fp32(*inputs(H, N, seed=L + 1, device=device))
    g = torch.randn(H, L, dtype=torch.float64, generator=torch.Generator().manual_seed(L))
    g = g.to(device)
    v32, x32 = v32.requires_grad_(), x32.requires_grad_()
    dv32, dx32 = torch.autograd.grad(vandermonde_triton(v32, x32, L), (v32, x32), g.float())
    assert dv32.dtype == dx32.dtype == C64
    assert not (dv32.isnan().any() or dx32.isnan().any())
    for rows in chunks(H):
        S, S1 = transpose_definition(g[rows], x[rows])
        dv, dx = 2 * S.conj(), 2 * (v[rows] * S1).conj()  # the README's gradients
        l = torch.arange(L, dtype=torch.float64, device=device)
        terms = g[rows].abs()[:, None, :] * torch.exp(x[rows].real[..., None] * l)  # (rows N L)
        growth = 1 + x[rows].abs()[..., None] * l
        bound_v = 2 * (terms * growth).sum(-1)
        bound_x = 2 * v[rows].abs() * (terms * growth * l).sum(-1)
        assert ((dv32[rows].to(C128) - dv).abs() <= 8 * EPS32 * bound_v).all()
        assert ((dx32[rows].to(C128) - dx).abs() <= 8 * EPS32 * (bound_x + 1e-30)).all()


def test_triton_transpose_batched(device, poisoned):
    (_, x32), (_, x) = fp32(*inputs(3, 6, seed=5, device=device))
    g = torch.randn(2, 3, 70, generator=torch.Generator().manual_seed(5)).to(device)
    S, S1 = vandermonde_transpose_triton(g, x32, weighted=True)
    S_ref, S1_ref = transpose_definition(g.double(), x)
    assert S.shape == S1.shape == (2, 3, 6) and not (S.isnan().any() or S1.isnan().any())
    scale = g.abs().sum(-1, keepdim=True).double() * 70  # Σ|g| · (1 + |x| L), |x| < 1
    assert ((S.to(C128) - S_ref).abs() <= 8 * EPS32 * scale).all()
    assert ((S1.to(C128) - S1_ref).abs() <= 8 * EPS32 * scale * 70).all()


def test_triton_deterministic(device, on_gpu, poisoned):
    """Forward and gradients bitwise equal from run to run (at real size on a GPU)."""
    H, N, L = (1024, 64, 16384) if on_gpu else (3, 40, 100)
    (v32, x32), _ = fp32(*inputs(H, N, seed=3, device=device))
    g = torch.randn(H, L, generator=torch.Generator().manual_seed(3)).to(device)
    runs = []
    for _ in range(2):
        v, x = v32.clone().requires_grad_(), x32.clone().requires_grad_()
        K = vandermonde_triton(v, x, L)
        runs.append((K, *torch.autograd.grad(K, (v, x), g)))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch

BACKENDS = ["reference", "triton"]


def test_public_function_paths(device):
    (v, x), _ = fp32(*inputs(2, 4, seed=4, device=device))
    torch.testing.assert_close(
        vandermonde(v, x, 20, backend="triton"), vandermonde_triton(v, x, 20)
    )
    torch.testing.assert_close(
        vandermonde(v, x, 20, backend="reference"), vandermonde_ref(v, x, 20)
    )
    g = torch.randn(3, 2, 20, device=device)
    torch.testing.assert_close(
        vandermonde_transpose(g, x, backend="triton"), vandermonde_transpose_triton(g, x)
    )


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_float64_policy(backend, device):
    """float64 or complex128 anywhere: the reference in that precision under "auto", a
    ValueError naming the dtype under "triton" (both functions)."""
    (v32, x32), (_, x) = fp32(*inputs(2, 4, seed=4, device=device))
    g = torch.randn(2, 20, dtype=torch.float64, device=device)
    calls = {
        "vandermonde": (lambda: vandermonde(v32, x, 20, backend=backend), torch.float64),
        "transpose": (lambda: vandermonde_transpose(g, x32, backend=backend), C128),
    }
    for call, dtype in calls.values():
        if backend == "triton":
            with pytest.raises(ValueError, match=r"float64|complex128"):
                call()
        else:
            assert call().dtype == dtype
    if backend == "auto":
        torch.testing.assert_close(vandermonde(v32, x, 20), vandermonde_ref(v32.to(C128), x, 20))
        torch.testing.assert_close(
            vandermonde_transpose(g, x32), vandermonde_transpose_ref(g, x32.to(C128))
        )


def test_auto_runs_the_kernels_on_a_gpu(device, on_gpu):
    """The probes pass: on a GPU "auto" then runs the kernels without a warning; on the CPU the
    same probes run in the interpreter (and "auto" keeps to the reference)."""
    (v, x), _ = fp32(*inputs(2, 4, seed=5, device=device))
    g = torch.randn(2, 30, device=device)
    _probe(device)
    _probe_transpose(device)
    assert dispatch.choose("vandermonde", (v, x), "auto", _probe) == (
        "triton" if on_gpu else "reference"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K, S = vandermonde(v, x, 30), vandermonde_transpose(g, x)
    if on_gpu:
        torch.testing.assert_close(K, vandermonde_triton(v, x, 30), rtol=0, atol=0)
        torch.testing.assert_close(S, vandermonde_transpose_triton(g, x), rtol=0, atol=0)
    else:
        torch.testing.assert_close(K, vandermonde_ref(v, x, 30), rtol=0, atol=0)
        torch.testing.assert_close(S, vandermonde_transpose_ref(g, x), rtol=0, atol=0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_equal_the_reference(layout, backend, device):
    """Strided, expanded (stride-0), ``conj()`` and negated views: the kernel and its gradients,
    and the transposed product, equal the float64 reference on the same views."""
    view = LAYOUTS[layout]
    (v32, x32), (v, x) = fp32(*inputs(3, 20, seed=6, device=device))
    fast_in = [v32.requires_grad_(), x32.requires_grad_()]
    ref_in = [v.requires_grad_(), x.requires_grad_()]
    K = vandermonde(*map(view, fast_in), 50, backend=backend)
    want = vandermonde_ref(*map(view, ref_in), 50)
    tol = {"rtol": 1e-4, "atol": 1e-5 * float(want.detach().abs().max())}
    torch.testing.assert_close(K.double(), want, **tol)
    g = torch.randn(3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    g = g.to(device)
    for a, b in zip(
        torch.autograd.grad(K, fast_in, g.float()),
        torch.autograd.grad(want, ref_in, g),
        strict=True,
    ):
        torch.testing.assert_close(a.to(C128), b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    S = vandermonde_transpose(view(g.float()), view(x32.detach()), backend=backend)
    S_ref = vandermonde_transpose_ref(view(g), view(x.detach()))
    torch.testing.assert_close(S.to(C128), S_ref, rtol=1e-4, atol=1e-4 * float(S_ref.abs().max()))


EMPTY = [
    pytest.param((0, 4), id="H0"),
    pytest.param((2, 0), id="N0"),
]


@pytest.mark.parametrize("HN", EMPTY)
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_dimensions(HN, backend, device):
    """No channels: empty outputs; no state: the empty sum, zero (both functions, and a batch
    of no rows for the transposed product)."""
    (v, x), _ = fp32(*inputs(*HN, device=device))
    H, N = HN
    K = vandermonde(v, x, 7, backend=backend)
    torch.testing.assert_close(K, torch.zeros(H, 7, device=device))
    S = vandermonde_transpose(torch.ones(2, H, 7, device=device), x, backend=backend)
    torch.testing.assert_close(S, torch.zeros(2, H, N, dtype=C64, device=device))
    S = vandermonde_transpose(torch.ones(0, H, 7, device=device), x, backend=backend)
    assert S.shape == (0, H, N)


def bad_calls():
    v, x = inputs(2, 4)
    meta = torch.device("meta")
    return [
        pytest.param(lambda: vandermonde(v.real, x, 5), "v must be a complex", id="real-v"),
        pytest.param(lambda: vandermonde(v[0], x, 5), "shape", id="1d-v"),
        pytest.param(lambda: vandermonde(v, x[:, :2], 5), "same shape", id="mismatch"),
        pytest.param(lambda: vandermonde(v, x, 0), "L must be", id="L0"),
        pytest.param(lambda: vandermonde(v, x, 2.5), "L must be", id="L-float"),
        pytest.param(lambda: vandermonde(v, x, 5, backend="cuda"), "backend", id="backend"),
        pytest.param(lambda: vandermonde(v.to(meta), x, 5), "v is a meta", id="meta"),
        pytest.param(
            lambda: vandermonde(v, x.to(meta), 5, backend="triton"), "x is a meta", id="meta-x"
        ),
        pytest.param(lambda: vandermonde_transpose(v.real[0], x), "g must have", id="g-shape"),
        pytest.param(lambda: vandermonde_transpose(v, x), "real floating", id="g-complex"),
        pytest.param(
            lambda: vandermonde_transpose(v.real[..., :0], x), "L >= 1", id="transpose-L0"
        ),
        pytest.param(
            lambda: vandermonde_transpose(v.real.to(meta), x), "g is a meta", id="transpose-meta"
        ),
    ]


@pytest.mark.parametrize(("call", "match"), bad_calls())
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_another_device_is_refused(device):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    v, x = inputs(2, 4, device=device)
    with pytest.raises(ValueError, match="x"):
        vandermonde(v, x.to(other), 5)
    with pytest.raises(ValueError, match="g"):
        vandermonde_transpose(torch.ones(2, 5, device=other, dtype=torch.float64), x)
