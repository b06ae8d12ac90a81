"""S4D decoding: the reference step against the recurrence, prefill + steps against the
convolution over the whole sequence, and the Triton step kernel in the CPU interpreter."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm.ops.s4d_step import s4d_prefill, s4d_step, s4d_step_ref
from ssm.ops.s4d_step.triton import s4d_step_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
F64, C128 = torch.float64, torch.complex128


def system(H, N, seed=0):
    """An S4D-Lin system ``(A, B, C, D, Δ)`` and its ZOH discretization ``(Ā, B̄)``, float64."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.complex(
        -0.5 * torch.ones(H, N, dtype=F64), torch.pi * torch.arange(N, dtype=F64).expand(H, N)
    )
    B = torch.ones(H, N, dtype=C128)
    C = torch.randn(H, N, dtype=C128, generator=gen)
    D = torch.randn(H, dtype=F64, generator=gen)
    dt = 0.01 + 0.09 * torch.rand(H, dtype=F64, generator=gen)
    Ab, Bb = ssm.discretize(A, B, dt, "zoh", diagonal=True)
    return A, B, C, D, dt, Ab, Bb


def fp32(*ts):
    return tuple(t.to(torch.complex64) if t.is_complex() else t.float() for t in ts)


# ---------------------------------------------------------------- references (float64)


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 3),
    H=st.integers(1, 3),
    N=st.integers(1, 6),
    L=st.integers(1, 25),
    steps=st.integers(1, 6),
    seed=st.integers(0, 999),
)
def test_prefill_then_steps_is_the_convolution(B, H, N, L, steps, seed):
    A, B_, C, D, dt, Ab, Bb = system(H, N, seed)
    u = torch.randn(B, H, L + steps, dtype=F64, generator=torch.Generator().manual_seed(seed))
    y, state = s4d_prefill(u[..., :L], Ab, Bb, C, D)
    _, x_last = ssm.recurrence(Ab, Bb, C, u[..., :L], diagonal=True, return_state=True)
    torch.testing.assert_close(state, x_last, rtol=1e-10, atol=1e-12)
    ys = [y] + [s4d_step_ref(state, u[..., L + k], Ab, Bb, C, D)[..., None] for k in range(steps)]
    full = ssm.fft_conv(u, ssm.s4d_kernel(A, B_, C, dt, L + steps), D)
    torch.testing.assert_close(torch.cat(ys, -1), full, rtol=1e-10, atol=1e-10)


def test_reference_step_is_the_recurrence():
    _, _, C, D, _, Ab, Bb = system(3, 5, seed=1)
    u = torch.randn(2, 3, 12, dtype=F64)
    state = torch.zeros(2, 3, 5, dtype=C128)
    ys = torch.stack([s4d_step_ref(state, u[..., k], Ab, Bb, C, D) for k in range(12)], -1)
    expected = 2 * ssm.recurrence(Ab, Bb, C, u, diagonal=True).real + D[:, None] * u
    torch.testing.assert_close(ys, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- Triton (interpreted)


@pytest.mark.parametrize(
    ("B", "H", "N", "skip"),
    [
        pytest.param(2, 3, 4, "tensor", id="B2-H3-N4"),
        pytest.param(1, 70, 16, "float", id="B1-H70-N16"),  # H over two programs
        pytest.param(3, 2, 5, "none", id="B3-H2-N5"),  # N not a power of two
    ],
)
def test_triton_step(B, H, N, skip, poisoned):
    _, _, C, D, _, Ab, Bb = system(H, N, seed=N)
    gen = torch.Generator().manual_seed(N)
    x = torch.randn(B, H, N, dtype=C128, generator=gen)
    u = torch.randn(B, H, dtype=F64, generator=gen)
    D = {"tensor": D, "float": 0.3, "none": None}[skip]
    Ab32, Bb32, C32, x32, u32 = fp32(Ab, Bb, C, x, u)
    Ab, Bb, C, x, u = (t.to(C128) if t.is_complex() else t.double() for t in fp32(Ab, Bb, C, x, u))
    state = x32.clone()
    pointer = state.data_ptr()
    y = s4d_step_triton(state, u32, Ab32, Bb32, C32, D)
    assert state.data_ptr() == pointer and y.dtype == torch.float32 and not y.isnan().any()
    y_ref = s4d_step_ref(x, u, Ab, Bb, C, D)
    size = Ab.abs() * x.abs() + Bb.abs() * u.abs()[..., None]  # |terms| of x_k: (B H N)
    assert ((state.to(C128) - x).abs() <= 4 * EPS32 * size).all()
    bound = 2 * (C.abs() * size).sum(-1) + (0 if D is None else (D * u).abs())
    assert ((y.double() - y_ref).abs() <= 8 * EPS32 * bound).all()


@pytest.mark.parametrize("L", [1, 7, 33, 64, 100])
def test_triton_prefill_then_steps_is_the_convolution(L, poisoned):
    B, H, N, steps = 2, 3, 8, 4
    A, B_, C, D, dt, Ab, Bb = system(H, N, seed=L)
    u = torch.randn(B, H, L + steps, dtype=F64, generator=torch.Generator().manual_seed(L))
    y, state = s4d_prefill(*fp32(u[..., :L], Ab, Bb, C, D), backend="triton")
    assert state.dtype == torch.complex64 and not (y.isnan().any() or state.isnan().any())
    with torch.no_grad():
        ys = [y] + [
            s4d_step(state, *fp32(u[..., L + k], Ab, Bb, C, D), backend="triton")[..., None]
            for k in range(steps)
        ]
    full = ssm.fft_conv(u, ssm.s4d_kernel(A, B_, C, dt, L + steps), D)
    # the size of the sums: Σ_j |K_j| |u_{l-j}| + |D u|, with |K_j| ≤ 2 Σ_n |C B̄| |Ā|^j
    j = torch.arange(L + steps, dtype=F64)
    K_abs = 2 * ((C * Bb).abs()[..., None] * Ab.abs()[..., None] ** j).sum(1)
    bound = ssm.causal_conv(u.abs(), K_abs, D.abs())
    err = (torch.cat(ys, -1).double() - full).abs()
    assert (err <= 64 * EPS32 * bound).all(), float((err / bound).max())


def test_triton_deterministic(poisoned):
    _, _, C, D, _, Ab, Bb = system(3, 8, seed=3)
    x, u = torch.randn(2, 3, 8, dtype=torch.complex64), torch.randn(2, 3)
    runs = []
    for _ in range(2):
        state = x.clone()
        y = s4d_step_triton(state, u, *fp32(Ab, Bb, C, D))
        runs.append((y, state))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch


def test_public_function_paths():
    _, _, C, D, _, Ab, Bb = system(3, 4, seed=4)
    x, u = torch.randn(2, 3, 4, dtype=torch.complex64), torch.randn(2, 3)
    expected = x.clone()
    y_ref = s4d_step(expected, u, *fp32(Ab, Bb, C, D), backend="reference")
    state = x.clone()
    y = s4d_step(state, u, *fp32(Ab, Bb, C, D), backend="triton")
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(state, expected)
    x64 = x.to(C128)
    s4d_step(x64, u.double(), Ab, Bb, C, D)  # float64 under "auto": the reference, in place
    torch.testing.assert_close(x64, expected.to(C128), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="float32"):
        s4d_step(x64, u.double(), Ab, Bb, C, D, backend="triton")
    strided = torch.randn(2, 4, 3, dtype=torch.complex64).transpose(1, 2)
    with pytest.raises(ValueError, match="contiguous"):
        s4d_step(strided, u, *fp32(Ab, Bb, C, D), backend="triton")


def bad_calls():
    _, _, C, D, _, Ab, Bb = system(3, 4)
    x, u = torch.zeros(2, 3, 4, dtype=C128), torch.zeros(2, 3, dtype=F64)
    grad_u = u.clone().requires_grad_()
    return [
        pytest.param(lambda: s4d_step(x.real, u, Ab, Bb, C), "state must be a complex", id="real"),
        pytest.param(lambda: s4d_step(x[0], u, Ab, Bb, C), "state must be", id="2d-state"),
        pytest.param(lambda: s4d_step(x, u[0], Ab, Bb, C), "u must have shape", id="u-shape"),
        pytest.param(lambda: s4d_step(x, u, Ab[:2], Bb, C), "Ab must be", id="Ab-shape"),
        pytest.param(lambda: s4d_step(x, u, Ab, Bb.real, C), "Bb must be", id="real-Bb"),
        pytest.param(lambda: s4d_step(x, u, Ab, Bb, C, D[:2]), "D must be", id="D-shape"),
        pytest.param(lambda: s4d_step(x, grad_u, Ab, Bb, C), "inference", id="grad"),
        pytest.param(lambda: s4d_step(x, u, Ab, Bb, C, backend="x"), "backend", id="backend"),
        pytest.param(lambda: s4d_prefill(u, Ab, Bb, C), "u must have shape", id="prefill-u"),
    ]


@pytest.mark.parametrize(("call", "match"), bad_calls())
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_triton_backend_without_gpu_raises():
    code = (
        "import torch\n"
        "from ssm.ops.s4d_step import s4d_step\n"
        "p = torch.ones(2, 4, dtype=torch.complex64)\n"
        "try:\n"
        "    s4d_step(torch.zeros(1, 2, 4, dtype=torch.complex64), torch.ones(1, 2), p, p, p,\n"
        "             backend='triton')\n"
        "except RuntimeError as err:\n"
        "    print('RuntimeError:', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SSM_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "RuntimeError: s4d_step: backend 'triton' needs CUDA tensors" in out.stdout, out
