"""The two views of a discrete SSM and the structured kernels, against the power series."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm import hippo


def kernel_by_definition(Ab, Bb, C, L):
    """``K[l] = C Ā^l B̄`` with explicit matrix powers (dense ``Ā``)."""
    return torch.stack([C @ torch.linalg.matrix_power(Ab, l) @ Bb for l in range(L)])


def random_system(N, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, N, generator=g, dtype=dtype) / N**0.5 - torch.eye(N, dtype=dtype)
    B, C = torch.randn(N, generator=g, dtype=dtype), torch.randn(N, generator=g, dtype=dtype)
    return (*ssm.discretize(A, B, 0.1, "zoh"), C)


@pytest.mark.parametrize("L", [1, 2, 7, 64])
def test_ssm_kernel_is_the_power_series(L):
    Ab, Bb, C = random_system(5, 0)
    torch.testing.assert_close(ssm.ssm_kernel(Ab, Bb, C, L), kernel_by_definition(Ab, Bb, C, L))


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 6),
    L=st.integers(1, 70),
    batch=st.integers(1, 3),
    seed=st.integers(0, 1000),
    skip=st.booleans(),
)
def test_recurrent_equals_convolutional(N, L, batch, seed, skip):
    Ab, Bb, C = random_system(N, seed)
    u = torch.randn(batch, L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    D = 0.7 if skip else None
    y_rec = ssm.recurrence(Ab, Bb, C, u, D)
    K = ssm.ssm_kernel(Ab, Bb, C, L)
    y_fft = ssm.fft_conv(u, K, D)
    y_def = ssm.causal_conv(u, K, D)
    assert y_rec.shape == y_fft.shape == (batch, L)
    torch.testing.assert_close(y_rec, y_def, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y_fft, y_def, rtol=1e-10, atol=1e-12)


def test_views_agree_for_complex_diagonal_batched_systems():
    torch.manual_seed(3)
    H, N, L = 4, 6, 257
    A = torch.complex(
        -torch.rand(H, N, dtype=torch.float64), torch.randn(H, N, dtype=torch.float64)
    )
    B, C = (torch.randn(H, N, dtype=torch.complex128) for _ in range(2))
    Ab, Bb = ssm.discretize(
        A, B, torch.rand(H, dtype=torch.float64) + 0.01, "bilinear", diagonal=True
    )
    u = torch.randn(2, H, L, dtype=torch.float64)
    y_rec, x_last = ssm.recurrence(Ab, Bb, C, u, diagonal=True, return_state=True)
    y_fft = ssm.fft_conv(u, ssm.ssm_kernel(Ab, Bb, C, L, diagonal=True))
    torch.testing.assert_close(y_rec, y_fft, rtol=1e-10, atol=1e-10)
    # Continuing from the returned state equals running the whole sequence at once.
    y_head = ssm.recurrence(Ab, Bb, C, u[..., :100], diagonal=True, return_state=True)
    y_tail = ssm.recurrence(Ab, Bb, C, u[..., 100:], diagonal=True, x0=y_head[1])
    torch.testing.assert_close(torch.cat([y_head[0], y_tail], -1), y_rec)
    assert x_last.shape == (2, H, N)


def test_fft_conv_truncates_and_pads_the_kernel():
    torch.manual_seed(0)
    u = torch.randn(3, 10, dtype=torch.float64)
    K_long = torch.randn(3, 25, dtype=torch.float64)
    torch.testing.assert_close(ssm.fft_conv(u, K_long), ssm.causal_conv(u, K_long[..., :10]))
    K_short = torch.randn(3, 4, dtype=torch.float64)
    padded = torch.nn.functional.pad(K_short, (0, 6))
    torch.testing.assert_close(ssm.fft_conv(u, K_short), ssm.causal_conv(u, padded))


@pytest.mark.parametrize("measure", ["legs", "legt", "lagt"])
@pytest.mark.parametrize(("N", "L"), [(1, 5), (2, 1), (8, 7), (16, 100), (64, 1000)])
def test_s4_kernel_equals_bilinear_power_series(measure, N, L):
    A, B = hippo.transition(measure, N)
    C = torch.randn(N, generator=torch.Generator().manual_seed(N), dtype=torch.float64)
    K_ref = ssm.ssm_kernel(*ssm.discretize(A, B, 0.05, "bilinear"), C, L)
    w, P, Be, V = hippo.nplr(measure, N)
    K = ssm.s4_kernel(w, P, Be, C.to(V.dtype) @ V, 0.05, L)
    scale = float(K_ref.abs().max())
    assert float((K.real - K_ref).abs().max()) < 1e-12 * scale * max(1, N / 8)
    assert float(K.imag.abs().max()) < 1e-12 * scale * max(1, N / 8)


def test_s4_kernel_batched_steps_and_c_tilde():
    N, L, H = 8, 33, 3
    w, P, B, V = hippo.nplr("legs", N)
    A, B_orig = hippo.transition("legs", N)
    C = torch.randn(H, N, dtype=torch.float64)
    dt = torch.tensor([0.01, 0.1, 0.5], dtype=torch.float64)
    K = ssm.s4_kernel(w.expand(H, N), P.expand(H, 1, N), B.expand(H, N), C.to(V.dtype) @ V, dt, L)
    for h in range(H):
        Ab, Bb = ssm.discretize(A, B_orig, float(dt[h]), "bilinear")
        torch.testing.assert_close(
            K[h].real, ssm.ssm_kernel(Ab, Bb, C[h], L), rtol=1e-10, atol=1e-12
        )
        C_tilde = C[h] @ (torch.eye(N, dtype=torch.float64) - torch.linalg.matrix_power(Ab, L))
        K_tilde = ssm.s4_kernel(w, P, B, C_tilde.to(V.dtype) @ V, float(dt[h]), L, c_tilde=True)
        torch.testing.assert_close(K_tilde, K[h], rtol=1e-10, atol=1e-12)


def test_s4_kernel_handles_a_pole_of_the_diagonal_part():
    """w = 0 puts a pole of the Cauchy terms at ω = 1; the kernel stays finite and exact."""
    g = torch.Generator().manual_seed(5)
    w = torch.tensor([0, 1j, -1j, -1 + 0j], dtype=torch.complex128)
    P, B, C = (torch.randn(s, dtype=torch.complex128, generator=g) for s in ((1, 4), (4,), (4,)))
    A = torch.diag(w) - P.T @ P.conj()
    K_ref = ssm.ssm_kernel(*ssm.discretize(A, B, 0.1, "bilinear"), C, 12)
    torch.testing.assert_close(ssm.s4_kernel(w, P, B, C, 0.1, 12), K_ref, rtol=1e-10, atol=1e-12)


def test_s4_kernel_refuses_fout_whose_generating_function_has_a_pole():
    w, P, B, _V = hippo.nplr("fout", 8)
    with pytest.raises(ValueError, match="root of unity"):
        ssm.s4_kernel(w, P, B, torch.ones(8, dtype=torch.complex128), 0.1, 16)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("L", [1, 2, 31, 128])
def test_s4d_kernel_is_twice_the_real_power_series(method, L):
    g = torch.Generator().manual_seed(L)
    H, N = 3, 5
    A = torch.complex(
        -torch.rand(H, N, generator=g, dtype=torch.float64),
        torch.randn(H, N, generator=g, dtype=torch.float64) * 5,
    )
    B, C = (torch.randn(H, N, generator=g, dtype=torch.complex128) for _ in range(2))
    dt = torch.rand(H, generator=g, dtype=torch.float64) * 0.1 + 1e-3
    K = ssm.s4d_kernel(A, B, C, dt, L, method)
    assert K.shape == (H, L) and K.dtype == torch.float64
    Ab, Bb = ssm.discretize(A, B, dt, method, diagonal=True)
    K_ref = 2 * ssm.ssm_kernel(Ab, Bb, C, L, diagonal=True).real
    torch.testing.assert_close(K, K_ref, rtol=1e-10, atol=1e-12)


def test_s4d_kernel_of_conjugate_pairs_is_the_kernel_of_the_real_system():
    """Adding the conjugates back gives a real SSM whose power series is the S4D kernel."""
    g = torch.Generator().manual_seed(0)
    A = torch.complex(
        -torch.rand(1, 3, generator=g, dtype=torch.float64),
        torch.randn(1, 3, generator=g, dtype=torch.float64),
    )
    B, C = (torch.randn(1, 3, generator=g, dtype=torch.complex128) for _ in range(2))
    dt = torch.tensor([0.2], dtype=torch.float64)
    full = [torch.cat([x, x.conj()], -1)[0] for x in (A, B, C)]
    Ab, Bb = ssm.discretize(full[0], full[1], 0.2, "zoh")
    K_full = ssm.ssm_kernel(Ab, Bb, full[2], 20)
    torch.testing.assert_close(ssm.s4d_kernel(A, B, C, dt, 20)[0], K_full.real)
    assert float(K_full.imag.abs().max()) < 1e-12


def test_gradcheck_through_kernels_and_views():
    g = torch.Generator().manual_seed(0)
    H, N, L = 2, 3, 9
    A = torch.complex(
        -torch.rand(H, N, generator=g, dtype=torch.float64) - 0.1,
        torch.randn(H, N, generator=g, dtype=torch.float64),
    ).requires_grad_()
    B, C = (
        torch.randn(H, N, generator=g, dtype=torch.complex128).requires_grad_() for _ in range(2)
    )
    dt = (torch.rand(H, generator=g, dtype=torch.float64) * 0.5 + 0.1).requires_grad_()
    for method in ("zoh", "bilinear"):
        assert torch.autograd.gradcheck(
            lambda a, b, c, d, m=method: ssm.s4d_kernel(a, b, c, d, L, m), (A, B, C, dt)
        )
    w, P, Be, _V = hippo.nplr("legs", 4)
    Ce = torch.randn(4, generator=g, dtype=torch.complex128)
    params = [t.clone().requires_grad_() for t in (w, P, Be, Ce)]
    assert torch.autograd.gradcheck(lambda *p: ssm.s4_kernel(*p, 0.1, 6), params)
    u = torch.randn(2, L, generator=g, dtype=torch.float64, requires_grad=True)
    K = torch.randn(2, L, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssm.fft_conv(a, b, 0.3), (u, K))
    Ab = (torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    Bb, Cv = (torch.randn(3, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, b, c, x: ssm.recurrence(a, b, c, x), (Ab, Bb, Cv, u))
    assert torch.autograd.gradcheck(lambda a, b, c: ssm.ssm_kernel(a, b, c, 5), (Ab, Bb, Cv))


R = torch.randn(3, 3, dtype=torch.float64)
V3 = torch.randn(3, dtype=torch.float64)
CA = torch.complex(-torch.ones(2, 3), torch.zeros(2, 3))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ssm.ssm_kernel(R, V3, V3, 0), "L must be an integer >= 1"),
        (lambda: ssm.ssm_kernel(R[:2], V3, V3, 4), "Ab must be square"),
        (lambda: ssm.ssm_kernel(R, V3[:2], V3, 4), r"Bb must have last dimension 3"),
        (lambda: ssm.recurrence(R, V3, V3, torch.zeros(2, 0)), "L >= 1"),
        (lambda: ssm.recurrence(R, V3, V3[:1], torch.zeros(4)), "C must have last dimension 3"),
        (lambda: ssm.fft_conv(torch.zeros(4, dtype=torch.int32), V3), "u must have a"),
        (lambda: ssm.s4d_kernel(CA.real, CA, CA, torch.ones(2), 4), "A must be complex"),
        (lambda: ssm.s4d_kernel(CA, CA[:, :2], CA, torch.ones(2), 4), "B must have the shape"),
        (lambda: ssm.s4d_kernel(CA, CA, CA, torch.ones(3), 4), r"dt must have shape \(2,\)"),
        (lambda: ssm.s4d_kernel(CA, CA, CA, -torch.ones(2), 4), "dt must be > 0"),
        (lambda: ssm.s4d_kernel(CA, CA, CA, torch.ones(2), 4, "euler"), "method must be"),
        (lambda: ssm.s4_kernel(CA[0], CA[:, :2], CA[0], CA[0], 0.1, 4), "P must have shape"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
