"""Discretizations against scipy.signal.cont2discrete and against their limits."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import cont2discrete

import ssm
from ssm import hippo

SCIPY_NAMES = {
    "zoh": "zoh",
    "bilinear": "bilinear",
    "euler": "euler",
    "backward_euler": "backward_diff",
}


def scipy_discretize(A, B, dt, method):
    N = A.shape[0]
    Ad, Bd, *_ = cont2discrete(
        (A, B[:, None], np.eye(N), np.zeros((N, 1))), dt, method=SCIPY_NAMES[method]
    )
    return Ad, Bd[:, 0]


@pytest.mark.parametrize("method", ssm.discretize.__globals__["METHODS"])
@pytest.mark.parametrize("measure", hippo.MEASURES)
@pytest.mark.parametrize("dt", [1e-3, 0.1, 0.7])
def test_dense_matches_scipy(method, measure, dt):
    A, B = hippo.transition(measure, 6)
    Ab, Bb = ssm.discretize(A, B, dt, method)
    Ad, Bd = scipy_discretize(A.numpy(), B.numpy(), dt, method)
    np.testing.assert_allclose(Ab.numpy(), Ad, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(Bb.numpy(), Bd, rtol=1e-11, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 6),
    dt=st.floats(1e-3, 1.0),
    seed=st.integers(0, 2**16),
    method=st.sampled_from(list(SCIPY_NAMES)),
)
def test_random_systems_match_scipy(N, dt, seed, method):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((N, N)) - 2 * np.eye(N)
    B = rng.standard_normal(N)
    Ab, Bb = ssm.discretize(torch.from_numpy(A), torch.from_numpy(B), dt, method)
    Ad, Bd = scipy_discretize(A, B, dt, method)
    np.testing.assert_allclose(Ab.numpy(), Ad, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(Bb.numpy(), Bd, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", list(SCIPY_NAMES))
def test_diagonal_equals_dense_complex_batched(method):
    torch.manual_seed(0)
    H, N = 3, 4
    A = torch.complex(
        -torch.rand(H, N, dtype=torch.float64), torch.randn(H, N, dtype=torch.float64)
    )
    B = torch.randn(H, N, dtype=torch.complex128)
    dt = torch.rand(H, dtype=torch.float64) + 0.05
    Ab, Bb = ssm.discretize(A, B, dt, method, diagonal=True)
    Ab_dense, Bb_dense = ssm.discretize(torch.diag_embed(A), B, dt, method)
    assert Ab.shape == (H, N) and Bb.shape == (H, N)
    torch.testing.assert_close(torch.diag_embed(Ab), Ab_dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Bb, Bb_dense, rtol=1e-12, atol=1e-12)


def test_zoh_with_zero_eigenvalue_is_the_limit():
    """ZOH of a singular A: B̄ = A⁻¹(e^{ΔA} - I)B has the limit ΔB where A is 0."""
    A = torch.tensor([0.0, -1.0, 1e-9], dtype=torch.float64)
    B = torch.ones(3, dtype=torch.float64)
    _, Bb = ssm.discretize(A, B, 0.5, "zoh")
    expected = torch.tensor([0.5, 1 - np.exp(-0.5), 0.5], dtype=torch.float64)
    torch.testing.assert_close(Bb, expected, rtol=1e-8, atol=1e-12)
    _, Bb_dense = ssm.discretize(
        torch.zeros(2, 2, dtype=torch.float64), torch.ones(2).double(), 0.5, "zoh"
    )
    torch.testing.assert_close(Bb_dense, torch.full((2,), 0.5, dtype=torch.float64))


def test_zoh_is_exact_for_constant_input():
    """Under a constant input the ZOH recurrence hits the exact solution at every sample."""
    A, B = hippo.transition("legs", 4)
    dt, steps = 0.05, 20
    Ab, Bb = ssm.discretize(A, B, dt, "zoh")
    x = torch.zeros(4, dtype=torch.float64)
    for _ in range(steps):
        x = Ab @ x + Bb
    t = dt * steps  # exact: x(t) = A⁻¹ (e^{tA} - I) B
    exact = torch.linalg.solve(A, (torch.linalg.matrix_exp(t * A) - torch.eye(4)) @ B)
    torch.testing.assert_close(x, exact, rtol=1e-12, atol=1e-12)


def test_gradcheck_zoh_and_bilinear():
    torch.manual_seed(1)
    A = (torch.randn(3, 3, dtype=torch.float64) - 2 * torch.eye(3)).requires_grad_()
    B = torch.randn(3, dtype=torch.float64, requires_grad=True)
    dt = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    for method in ("zoh", "bilinear"):
        assert torch.autograd.gradcheck(
            lambda a, b, d, m=method: ssm.discretize(a, b, d, m), (A, B, dt)
        )
    Ad = torch.complex(-torch.rand(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    Ad.requires_grad_()
    Bd = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssm.discretize(a, b, 0.2, "zoh"), (Ad, Bd))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(2, 3), torch.zeros(3), 0.1, "zoh"), r"A must be square .*\(2, 3\)"),
        ((torch.zeros(3, 3), torch.zeros(2), 0.1, "zoh"), r"B must have last dimension 3"),
        ((torch.zeros(3, 3), torch.zeros(3), 0.0, "zoh"), "dt must be > 0"),
        ((torch.zeros(3, 3), torch.zeros(3), -1.0, "bilinear"), "dt must be > 0"),
        ((torch.zeros(3, 3), torch.zeros(3), 0.1, "rk4"), "method must be one of"),
        ((torch.zeros(3, 3, dtype=torch.int64), torch.zeros(3), 0.1, "zoh"), "A must have a"),
        ((torch.zeros(3), torch.zeros(3), "fast", "zoh"), "dt must be"),
    ],
)
def test_bad_arguments_raise(args, match):
    with pytest.raises(ValueError, match=match):
        ssm.discretize(*args)


@pytest.mark.parametrize("method", list(SCIPY_NAMES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("diagonal", [False, True], ids=["dense", "diagonal"])
def test_half_precision_is_discretized_in_float32(method, dtype, diagonal):
    """Half-precision inputs give the float64 discretization of the same numbers, rounded to
    their dtype (the LU solve and the matrix exponential run in float32)."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g) / 2 - 2 * torch.eye(4)
    A = torch.diagonal(A) if diagonal else A
    B = torch.randn(4, generator=g)
    A, B = A.to(dtype), B.to(dtype)
    Ab, Bb = ssm.discretize(A, B, 0.1, method)
    Ab64, Bb64 = ssm.discretize(A.double(), B.double(), 0.1, method)
    eps = torch.finfo(dtype).eps
    assert Ab.dtype == Bb.dtype == dtype
    for got, want in ((Ab, Ab64), (Bb, Bb64)):
        assert float((got.double() - want).abs().max()) <= 2 * eps * float(want.abs().max())


@pytest.mark.parametrize(
    "dt",
    [
        pytest.param(float("inf"), id="inf"),
        pytest.param(torch.tensor([0.1, float("inf")]), id="inf-in-tensor"),
        pytest.param(float("nan"), id="nan"),
    ],
)
@pytest.mark.parametrize("method", list(SCIPY_NAMES))
def test_non_finite_step_is_refused(dt, method):
    A = torch.zeros(2, 3, 3) - torch.eye(3)
    with pytest.raises(ValueError, match=r"dt must be (finite|> 0)"):
        ssm.discretize(A, torch.ones(3), dt, method)


@pytest.mark.parametrize("method", list(SCIPY_NAMES))
@pytest.mark.parametrize("diagonal", [False, True], ids=["dense", "diagonal"])
def test_batch_dims_of_A_B_and_dt_broadcast(method, diagonal):
    """A single ``A`` with a batch of ``B`` ``(4, N)`` and of steps ``(2, 1)``: each of the
    ``(2, 4)`` results is the discretization of its own row."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64) - 2 * torch.eye(3)
    A = torch.diagonal(A) if diagonal else A
    B = torch.randn(4, 3, generator=g, dtype=torch.float64)
    dt = torch.tensor([[0.1], [0.3]], dtype=torch.float64)
    Ab, Bb = ssm.discretize(A, B, dt, method)
    assert Ab.shape == (2, 4, *A.shape) and Bb.shape == (2, 4, 3)
    for i in range(2):
        for j in range(4):
            Ab_ij, Bb_ij = ssm.discretize(A, B[j], float(dt[i, 0]), method)
            torch.testing.assert_close(Ab[i, j], Ab_ij, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(Bb[i, j], Bb_ij, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        pytest.param(
            (torch.zeros(2, 3, 3), torch.zeros(3), torch.ones(3)),
            r"dt must be a float or a tensor that broadcasts with the batch dims \(2,\)",
            id="dt-shape",
        ),
        pytest.param(
            (torch.zeros(2, 3, 3), torch.zeros(4, 3), 0.1),
            r"batch dims must broadcast, got A \(2,\), B \(4,\)",
            id="batch-mismatch",
        ),
        pytest.param(
            (torch.zeros(3, 3, device="meta"), torch.zeros(3, device="meta"), 0.1),
            "A is a meta tensor",
            id="meta",
        ),
        pytest.param(
            (torch.zeros(3, 3), torch.zeros(3), torch.ones((), device="meta")),
            "dt is a meta tensor",
            id="meta-dt",
        ),
        pytest.param(
            (torch.zeros(3, 3), torch.zeros(3), torch.ones((), dtype=torch.complex64)),
            "dt must be a real",
            id="complex-dt",
        ),
    ],
)
def test_bad_shapes_and_devices_raise(args, match):
    with pytest.raises(ValueError, match=match):
        ssm.discretize(*args)


def test_another_device_is_refused(device):
    """On a GPU run, a step on the CPU beside a system on the GPU (and the reverse)."""
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    A = -torch.eye(3, device=device)
    with pytest.raises(ValueError, match="dt"):
        ssm.discretize(A, torch.ones(3, device=device), torch.ones((), device=other))
    with pytest.raises(ValueError, match="B"):
        ssm.discretize(A, torch.ones(3, device=other), 0.1)


def test_empty_state_gives_empty_results():
    for method in SCIPY_NAMES:
        Ab, Bb = ssm.discretize(torch.zeros(2, 0, 0), torch.zeros(2, 0), 0.1, method)
        assert Ab.shape == (2, 0, 0) and Bb.shape == (2, 0)
