"""The functional core (ssm.recurrence, ssm.fft_conv, ssm.causal_conv, ssm.ssm_kernel,
ssm.s4_kernel, ssm.s4d_kernel) on bad, edge and strided inputs: errors that name the argument,
correct results for empty and half-precision inputs, and views equal to their clean copies."""

import pytest
import torch

import ssm
from ssm import _checks, hippo

F64, C128 = torch.float64, torch.complex128


def system(N=3, seed=0):
    """A stable dense discrete system ``(Ab, Bb, C)``, float64."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, N, generator=g, dtype=F64) / N**0.5 - torch.eye(N, dtype=F64)
    B, C = (torch.randn(N, generator=g, dtype=F64) for _ in range(2))
    return (*ssm.discretize(A, B, 0.1, "zoh"), C)


def diagonal_system(H=2, N=4, seed=0):
    """S4D-like ``(A, B, C, dt)``: complex ``(H, N)`` and steps ``(H,)``."""
    g = torch.Generator().manual_seed(seed)
    A = torch.complex(
        -0.1 - torch.rand(H, N, generator=g, dtype=F64), torch.randn(H, N, generator=g, dtype=F64)
    )
    B, C = (torch.randn(H, N, generator=g, dtype=C128) for _ in range(2))
    return A, B, C, 0.01 + torch.rand(H, generator=g, dtype=F64)


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- bad arguments

Ab, Bb, C = system()
U = rand(2, 9)
K9 = rand(2, 9, seed=1)
W, P, BW, _V = hippo.nplr("legs", 4)
A4, B4, C4, DT4 = diagonal_system()
META = torch.device("meta")

BAD = [
    pytest.param(
        lambda: ssm.recurrence(Ab, Bb, C, U, x0=torch.zeros(4, dtype=F64)),
        r"x0 must have last dimension 3",
        id="recurrence-x0-state-size",
    ),
    pytest.param(
        lambda: ssm.recurrence(Ab, Bb, C, U, x0=torch.zeros(3, 3, dtype=F64)),
        r"batch dims must broadcast, got .*u \(2,\), x0 \(3,\)",
        id="recurrence-x0-batch",
    ),
    pytest.param(
        lambda: ssm.recurrence(Ab, Bb, C, U, x0=torch.zeros(3, device=META)),
        "x0 is a meta tensor",
        id="recurrence-x0-meta",
    ),
    pytest.param(
        lambda: ssm.recurrence(Ab, Bb, C, U, x0=torch.zeros(3, dtype=torch.int64)),
        "x0 must have a floating",
        id="recurrence-x0-int",
    ),
    pytest.param(
        lambda: ssm.recurrence(Ab, Bb, C, U[0], D=torch.ones(3, dtype=F64)),
        r"D must be a scalar or broadcast to the batch dims \(\)",
        id="recurrence-D-enlarges-batch",
    ),
    pytest.param(
        lambda: ssm.recurrence(Ab, Bb, C, U, D=torch.ones(3, dtype=F64)),
        r"D must be a scalar or broadcast to the batch dims \(2,\)",
        id="recurrence-D-shape",
    ),
    pytest.param(lambda: ssm.recurrence(Ab, Bb, C, U, D=True), "D must be", id="recurrence-D-bool"),
    pytest.param(
        lambda: ssm.recurrence(Ab, Bb, C, U.to(META)), "u is a meta", id="recurrence-meta"
    ),
    pytest.param(
        lambda: ssm.recurrence(Ab.expand(3, 3, 3), Bb, C, U),
        r"batch dims must broadcast, got Ab \(3,\)",
        id="recurrence-batch",
    ),
    pytest.param(
        lambda: ssm.fft_conv(U, rand(3, 9)),
        r"batch dims must broadcast, got u \(2,\), K \(3,\)",
        id="fft_conv-batch",
    ),
    pytest.param(
        lambda: ssm.fft_conv(U[0], K9[0], torch.ones(3, dtype=F64)),
        r"D must be a scalar or broadcast to the batch dims \(\)",
        id="fft_conv-D-enlarges-batch",
    ),
    pytest.param(lambda: ssm.fft_conv(U, K9, "0.5"), "D must be", id="fft_conv-D-str"),
    pytest.param(lambda: ssm.fft_conv(U.to(META), K9), "u is a meta", id="fft_conv-meta"),
    pytest.param(
        lambda: ssm.fft_conv(U, K9, torch.ones(2, device=META)), "D is a meta", id="fft_conv-D-meta"
    ),
    pytest.param(lambda: ssm.fft_conv(U, K9[:, :0]), "K must have shape", id="fft_conv-K-empty"),
    pytest.param(
        lambda: ssm.causal_conv(U, rand(3, 9)), "batch dims must broadcast", id="causal_conv-batch"
    ),
    pytest.param(
        lambda: ssm.ssm_kernel(Ab.expand(2, 3, 3), Bb.expand(3, 3), C, 4),
        r"batch dims must broadcast, got Ab \(2,\), Bb \(3,\)",
        id="ssm_kernel-batch",
    ),
    pytest.param(
        lambda: ssm.ssm_kernel(Ab.to(META), Bb, C, 4), "Ab is a meta", id="ssm_kernel-meta"
    ),
    pytest.param(
        lambda: ssm.s4_kernel(W.expand(2, 4), P, BW, BW, torch.ones(3, dtype=F64), 8),
        r"dt must be a float or a tensor that broadcasts with the batch dims \(2,\)",
        id="s4_kernel-dt-shape",
    ),
    pytest.param(
        lambda: ssm.s4_kernel(W, P, BW, BW, float("inf"), 8),
        "dt must be finite",
        id="s4_kernel-dt-inf",
    ),
    pytest.param(
        lambda: ssm.s4_kernel(W, P, BW, BW, -0.1, 8), "dt must be > 0", id="s4_kernel-dt-negative"
    ),
    pytest.param(
        lambda: ssm.s4_kernel(W.expand(2, 4), P.expand(3, 1, 4), BW, BW, 0.1, 8),
        r"batch dims must broadcast, got w \(2,\), P \(3,\)",
        id="s4_kernel-batch",
    ),
    pytest.param(
        lambda: ssm.s4_kernel(W.to(META), P, BW, BW, 0.1, 8), "w is a meta", id="s4_kernel-meta"
    ),
    pytest.param(
        lambda: ssm.s4d_kernel(A4, B4, C4, torch.full((2,), float("inf"), dtype=F64), 8),
        "dt must be finite",
        id="s4d_kernel-dt-inf",
    ),
    pytest.param(
        lambda: ssm.s4d_kernel(A4, B4, C4, DT4.to(META), 8), "dt is a meta", id="s4d_kernel-meta"
    ),
    pytest.param(
        lambda: ssm.s4d_kernel(A4, B4, C4, DT4[:, None], 8),
        r"dt must have shape \(2,\)",
        id="s4d_kernel-dt-shape",
    ),
]


@pytest.mark.parametrize(("call", "match"), BAD)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_another_device_is_refused(device):
    """An initial state or skip term on another device than the system (on a GPU run: the CPU
    beside CUDA tensors; on the CPU: a meta tensor)."""
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    args = [t.to(device) for t in (Ab, Bb, C, U)]
    with pytest.raises(ValueError, match="x0"):
        ssm.recurrence(*args, x0=torch.zeros(3, dtype=F64, device=other))
    with pytest.raises(ValueError, match="D"):
        ssm.recurrence(*args, D=torch.ones(2, dtype=F64, device=other))
    with pytest.raises(ValueError, match="K"):
        ssm.fft_conv(args[3], K9.to(other))


# ---------------------------------------------------------------- what recurrence's x0 and D mean


def test_initial_state_broadcasts_and_keeps_its_dtype():
    """``x0`` ``(2, N)`` for an unbatched input runs two sequences; a complex ``x0`` for a real
    system gives ``y(a + ib) = y(a) + i (y(b) - y(0))`` (the state enters linearly)."""
    u = rand(9, seed=2)
    x0 = rand(2, 3, seed=3)
    y = ssm.recurrence(Ab, Bb, C, u, x0=x0)
    assert y.shape == (2, 9)
    for i in range(2):
        torch.testing.assert_close(y[i], ssm.recurrence(Ab, Bb, C, u, x0=x0[i]))
    y_c = ssm.recurrence(Ab, Bb, C, u, x0=torch.complex(x0[0], x0[1]))
    assert y_c.dtype == C128
    y0 = ssm.recurrence(Ab, Bb, C, u)
    torch.testing.assert_close(y_c, torch.complex(y[0], y[1] - y0))


def test_skip_term_per_batch_row():
    y = ssm.recurrence(Ab, Bb, C, U, D=torch.tensor([0.5, -2.0], dtype=F64))
    y0 = ssm.recurrence(Ab, Bb, C, U)
    torch.testing.assert_close(y, y0 + torch.tensor([[0.5], [-2.0]], dtype=F64) * U)


# ---------------------------------------------------------------- edge inputs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("fn", [ssm.fft_conv, ssm.causal_conv], ids=["fft_conv", "causal_conv"])
def test_half_precision_convolution(fn, dtype):
    """Computed in float32 (torch.fft takes no half precision), returned in the input dtype."""
    u, K = rand(2, 50, seed=4).to(dtype), (rand(2, 50, seed=5) / 10).to(dtype)
    y = fn(u, K, 0.5)
    assert y.dtype == dtype
    want = ssm.causal_conv(u.double(), K.double(), 0.5)
    bound = ssm.causal_conv(u.double().abs(), K.double().abs(), 0.5)
    assert ((y.double() - want).abs() <= 2 * torch.finfo(dtype).eps * (bound + 1)).all()


EMPTY = [
    pytest.param(lambda: ssm.fft_conv(rand(0, 9), K9[:1]), (0, 9), id="fft_conv-batch0"),
    pytest.param(
        lambda: ssm.fft_conv(rand(0, 9, dtype=C128), K9[:1]), (0, 9), id="fft_conv-complex-batch0"
    ),
    pytest.param(lambda: ssm.causal_conv(rand(0, 9), K9[:1]), (0, 9), id="causal_conv-batch0"),
    pytest.param(lambda: ssm.recurrence(Ab, Bb, C, rand(0, 9)), (0, 9), id="recurrence-batch0"),
    pytest.param(lambda: ssm.ssm_kernel(Ab, Bb.expand(0, 3), C, 5), (0, 5), id="ssm_kernel-batch0"),
    pytest.param(lambda: ssm.s4d_kernel(A4[:0], B4[:0], C4[:0], DT4[:0], 5), (0, 5), id="s4d-H0"),
]


@pytest.mark.parametrize(("call", "shape"), EMPTY)
def test_empty_batches_give_empty_results(call, shape):
    assert call().shape == shape


def test_empty_state_gives_zero_kernels():
    """``N = 0``: the sums over the state are empty, so the kernels and outputs are zero (and
    ``D u``)."""
    e = torch.zeros(0, dtype=F64)
    torch.testing.assert_close(ssm.ssm_kernel(e, e, e, 5), torch.zeros(5, dtype=F64))
    torch.testing.assert_close(ssm.recurrence(e, e, e, U, D=0.5), 0.5 * U)
    K = ssm.s4d_kernel(A4[:, :0], B4[:, :0], C4[:, :0], DT4, 5)
    torch.testing.assert_close(K, torch.zeros(2, 5, dtype=F64))


def test_s4d_kernel_where_the_bilinear_eigenvalue_is_zero():
    """``1 + ΔA/2 = 0`` makes the bilinear ``Ā = 0`` exactly: ``K = 2 Re(C B̄)`` at ``l = 0``
    and zero after, as the power series says (``log Ā = -inf`` gave NaN)."""
    A = torch.complex(torch.tensor([[-1.0, -0.5]], dtype=F64), torch.zeros(1, 2, dtype=F64))
    B, C = torch.ones(1, 2, dtype=C128), torch.ones(1, 2, dtype=C128)
    dt = torch.tensor([2.0], dtype=F64)
    K = ssm.s4d_kernel(A, B, C, dt, 6, "bilinear")
    Abar, Bbar = ssm.discretize(A, B, dt, "bilinear", diagonal=True)
    assert Abar[0, 0] == 0
    want = 2 * ssm.ssm_kernel(Abar, Bbar, C, 6, diagonal=True).real
    torch.testing.assert_close(K, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- views: strided, expanded, conj


def views(x):
    """Non-contiguous, expanded and conjugated views of ``x`` ``(..., L)`` with the values of
    ``x`` (or of ``x.conj()``)."""
    return {
        "strided": torch.stack([x, x], -1)[..., 0],
        "transposed": x.mT.contiguous().mT if x.ndim >= 2 else x,
        "expanded": x[..., :1, :].expand_as(x) if x.ndim >= 2 else x,
    }


@pytest.mark.parametrize("layout", ["strided", "transposed", "expanded"])
def test_views_equal_their_clean_copies(layout):
    u = rand(3, 20, seed=6, dtype=C128)
    K = rand(3, 20, seed=7, dtype=C128) / 5
    uv, Kv = views(u)[layout], views(K)[layout]
    clean = (uv.clone(), Kv.clone())
    for fn in (ssm.fft_conv, ssm.causal_conv):
        torch.testing.assert_close(fn(uv, Kv, 0.5), fn(*clean, 0.5), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            fn(uv.conj(), Kv.conj()), fn(clean[0].conj().resolve_conj(), clean[1].conj())
        )
    Abar, Bbar, Cbar = (views(t[None].expand(3, -1))[layout] for t in (A4[0], B4[0], C4[0]))
    y = ssm.recurrence(Abar.conj(), Bbar, Cbar, uv, diagonal=True)
    clean_sys = (Abar.conj().resolve_conj().clone(), Bbar.clone(), Cbar.clone())
    torch.testing.assert_close(y, ssm.recurrence(*clean_sys, clean[0], diagonal=True))


# ---------------------------------------------------------------- one discretization


def test_structured_kernels_discretize_once_through_ssm_discretize(monkeypatch):
    """S4's and S4D's kernels take ``(Ā, B̄)`` from :func:`ssm.discretize`, the one place the
    bilinear formula is written, and check ``dt`` once."""
    import ssm.kernels

    methods, checks = [], []
    discretize, positive_step = ssm.kernels.discretize, _checks.positive_step

    def spy(A, B, dt, method="zoh", **kw):
        methods.append(method)
        return discretize(A, B, dt, method, **kw)

    def counted(*args):
        checks.append(args[0])
        return positive_step(*args)

    monkeypatch.setattr(ssm.kernels, "discretize", spy)
    monkeypatch.setattr(_checks, "positive_step", counted)
    ssm.s4_kernel(W, P, BW, BW, 0.1, 8)
    assert methods == ["bilinear"] and checks == ["dt"]
    methods.clear(), checks.clear()
    ssm.s4d_kernel(A4, B4, C4, DT4, 8, "bilinear")
    assert methods == ["bilinear"] and checks == ["dt"]
