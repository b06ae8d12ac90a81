"""HiPPO operators against their definitions (float64)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import hippo


def legs_by_definition(N):
    """HiPPO-LegS entry by entry (S4 paper, eq. (2))."""
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
            elif n == k:
                A[n, k] = -(n + 1)
    return A, np.sqrt(2 * np.arange(N) + 1)


def legt_by_definition(N):
    """HiPPO-LegT (HiPPO paper, Appendix D.1), halved as in the S4 code."""
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            sign = 1.0 if n >= k else (-1.0) ** (n - k)
            A[n, k] = -0.5 * math.sqrt((2 * n + 1) * (2 * k + 1)) * sign
    return A, 0.5 * np.sqrt(2 * np.arange(N) + 1)


def lagt_by_definition(N):
    A = np.array(
        [[(-0.5 if n == k else (-1.0 if n > k else 0.0)) for k in range(N)] for n in range(N)]
    )
    return A, np.ones(N)


def fout_by_definition(N):
    """FouT: cos/sin pairs rotating at frequency pi*k, minus the rank-one term B Bᵀ."""
    B = np.array([1.0] + [math.sqrt(2) if n % 2 == 0 else 0.0 for n in range(1, N)])
    A = np.zeros((N, N))
    for k in range(1, N // 2):
        c, s = 2 * k, 2 * k + 1  # cosine (weight √2), sine (weight 0)
        A[s, c], A[c, s] = math.pi * k, -math.pi * k
    return A - np.outer(B, B), B


DEFINITIONS = {"legs": legs_by_definition, "legt": legt_by_definition, "lagt": lagt_by_definition}


@pytest.mark.parametrize("measure", sorted(DEFINITIONS))
@pytest.mark.parametrize("N", [1, 2, 5, 16])
def test_transition_matches_definition(measure, N):
    A, B = hippo.transition(measure, N)
    A_def, B_def = DEFINITIONS[measure](N)
    assert A.shape == (N, N) and B.shape == (N,) and A.dtype == torch.float64
    np.testing.assert_allclose(A.numpy(), A_def, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(B.numpy(), B_def, rtol=1e-13)


@pytest.mark.parametrize("N", [2, 4, 10])
def test_fout_is_rotations_minus_rank_one(N):
    A, B = hippo.transition("fout", N)
    A_def, B_def = fout_by_definition(N)
    np.testing.assert_allclose(A.numpy(), A_def, atol=1e-14)
    np.testing.assert_allclose(B.numpy(), B_def)
    rotation = A_def + np.outer(B_def, B_def)
    freqs = np.sort(np.abs(np.linalg.eigvals(rotation).imag))
    expected = np.sort(np.concatenate([[0.0, 0.0], np.repeat(np.pi * np.arange(1, N // 2), 2)]))
    np.testing.assert_allclose(freqs, expected, atol=1e-12)


@pytest.mark.parametrize("measure", hippo.MEASURES)
@pytest.mark.parametrize("N", [4, 8, 32])
def test_rank_correction_makes_A_normal(measure, N):
    A, _ = hippo.transition(measure, N)
    P = hippo.rank_correction(measure, N)
    M = A + P.T @ P
    assert torch.allclose(M @ M.T, M.T @ M, atol=1e-10 * N**2)
    assert not torch.allclose(A @ A.T, A.T @ A, atol=1e-6)  # A itself is not normal


@settings(max_examples=25, deadline=None)
@given(measure=st.sampled_from(hippo.MEASURES), half=st.integers(1, 24))
def test_nplr_reconstructs_A_and_B(measure, half):
    N = 2 * half
    A, B = hippo.transition(measure, N)
    w, P, Be, V = hippo.nplr(measure, N)
    assert w.shape == (N,) and V.shape == (N, N) and Be.shape == (N,) and P.shape[-1] == N
    eye = torch.eye(N, dtype=V.dtype)
    assert torch.allclose(V.conj().T @ V, eye, atol=1e-12)
    rebuilt = V @ (torch.diag(w) - P.T @ P.conj()) @ V.conj().T
    scale = float(A.abs().max())
    assert float((rebuilt - A).abs().max()) < 1e-13 * N * scale
    assert float(rebuilt.imag.abs().max()) < 1e-13 * N * scale
    assert torch.allclose(V @ Be, B.to(V.dtype), atol=1e-12 * N)


def test_nplr_legs_eigenvalues_have_real_part_minus_half():
    w, *_ = hippo.nplr("legs", 16)
    assert torch.allclose(w.real, torch.full((16,), -0.5, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: hippo.transition("legx", 4), "measure"),
        (lambda: hippo.transition("legs", 0), "N must be an integer >= 1"),
        (lambda: hippo.transition("legs", 2.5), "N must be"),
        (lambda: hippo.transition("fout", 5), "even"),
        (lambda: hippo.nplr("nope", 4), "measure"),
        (lambda: hippo.legs_memory(torch.zeros(3, 2), 4), "1-D"),
        (lambda: hippo.legs_memory(torch.arange(4), 4), "dtype"),
        (lambda: hippo.legs_memory(torch.zeros(0), 4), "at least one sample"),
        (lambda: hippo.legs_memory(torch.zeros(5, device="meta"), 4), "u is a meta tensor"),
        (lambda: hippo.legs_reconstruct(torch.zeros(4, device="meta"), 9), "x is a meta tensor"),
        (lambda: hippo.legs_reconstruct(torch.zeros(()), 9), r"x must have shape \(\.\.\., N\)"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_legs_memory_and_reconstruction_stay_on_the_input_device(device):
    u = torch.linspace(0, 1, 20, dtype=torch.float64, device=device)
    x = hippo.legs_memory(u, 4)
    assert x.device == u.device and x.shape == (20, 4)
    assert hippo.legs_reconstruct(x[-1], 7).device == u.device


def test_legs_memory_reconstructs_a_polynomial():
    """A polynomial of degree < N lies in the span of the basis: LegS recovers it up to the
    discretization error, which shrinks as the number of samples grows."""
    errors = []
    for L in (200, 800):
        s = torch.linspace(0, 1, L, dtype=torch.float64)
        u = 1 - 3 * s + 2 * s**3
        x = hippo.legs_memory(u, 8)
        assert x.shape == (L, 8)
        recon = hippo.legs_reconstruct(x[-1], L)
        errors.append(float((recon - u).abs()[L // 10 :].max()))
    assert errors[1] < 0.5 * errors[0] and errors[1] < 0.02


def test_legs_memory_error_decreases_with_state_size():
    L = 1000
    s = torch.linspace(0, 1, L, dtype=torch.float64)
    u = torch.sin(12 * s) + torch.exp(-(((s - 0.3) / 0.05) ** 2))
    err = [
        float((hippo.legs_reconstruct(hippo.legs_memory(u, N)[-1], L) - u).pow(2).mean())
        for N in (4, 16, 64)
    ]
    assert err[0] > err[1] > err[2]
