"""S4D decoding: the reference step against the recurrence, prefill + steps against the
convolution over the whole sequence, and the Triton step kernel and prefill against float64
(``--device cpu``: Triton's interpreter at small sizes; ``--device cuda``: compiled, at real
sizes too), with outputs NaN-poisoned and results bitwise repeatable."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layouts import LAYOUTS

import ssm
from ssm.ops import dispatch
from ssm.ops.s4d_step import _probe, s4d_prefill, s4d_step, s4d_step_ref
from ssm.ops.s4d_step.triton import s4d_step_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
F64, C64, C128 = torch.float64, torch.complex64, torch.complex128
CHECKED = 8  # channels of a real-size prefill checked against the float64 recurrence


def system(H, N, seed=0, device="cpu", dt_range=(0.01, 0.1)):
    """An S4D-Lin system ``(A, B, C, D, Δ)`` and its ZOH discretization ``(Ā, B̄)``, float64."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.complex(
        -0.5 * torch.ones(H, N, dtype=F64), torch.pi * torch.arange(N, dtype=F64).expand(H, N)
    )
    B = torch.ones(H, N, dtype=C128)
    C = torch.randn(H, N, dtype=C128, generator=gen)
    D = torch.randn(H, dtype=F64, generator=gen)
    lo, hi = dt_range
    dt = lo + (hi - lo) * torch.rand(H, dtype=F64, generator=gen)
    A, B, C, D, dt = (t.to(device) for t in (A, B, C, D, dt))
    Ab, Bb = ssm.discretize(A, B, dt, "zoh", diagonal=True)
    return A, B, C, D, dt, Ab, Bb


def fp32(*ts):
    return tuple(t.to(C64) if t.is_complex() else t.float() for t in ts)


def rounded(*ts):
    """The float32 numbers of ``ts`` back in float64: what the reference should see."""
    return tuple(t.to(C128) if t.is_complex() else t.double() for t in fp32(*ts))


def rand(*shape, seed=0, dtype=F64, device="cpu"):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(
        device
    )


# Small shapes run everywhere; the real sizes (H 1024, N 64, a decoding batch) on a GPU only.
STEP_SHAPES = [
    pytest.param((2, 3, 4), id="B2-H3-N4"),
    pytest.param((1, 70, 16), id="B1-H70-N16"),  # H over two programs
    pytest.param((3, 2, 5), id="B3-H2-N5"),  # N not a power of two
]
GPU_STEP_SHAPES = [
    pytest.param((8, 1024, 64), id="B8-H1024-N64"),
    pytest.param((64, 1024, 64), id="B64-H1024-N64"),
]
PREFILL_SHAPES = [pytest.param((2, 3, 8, L), id=f"L{L}") for L in (1, 7, 33, 64, 100)]
GPU_PREFILL_SHAPES = [
    pytest.param((4, 256, 64, 4096), id="B4-H256-N64-L4096"),
    pytest.param((8, 1024, 64, 16384), id="B8-H1024-N64-L16384"),
]


SIZES = {  # parametrized by tests/ops/conftest.py
    "step_shape": (STEP_SHAPES, GPU_STEP_SHAPES),
    "prefill_shape": (PREFILL_SHAPES, GPU_PREFILL_SHAPES),
}


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


BACKENDS = ["reference", "triton"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefill_where_the_decay_underflows(backend, device):
    """A large step makes ``Ā = exp(ΔA)`` underflow to 0 in some channels: the prefill stays
    finite and equals the recurrence (``log 0 = -inf`` made every output NaN)."""
    _, _, C, D, _, Ab, Bb = system(3, 4, seed=2, device=device)
    _, _, _, _, _, Ab_big, Bb_big = system(3, 4, seed=2, device=device, dt_range=(2000, 3000))
    Ab, Bb = torch.cat([Ab[:1], Ab_big[1:]]), torch.cat([Bb[:1], Bb_big[1:]])
    assert bool((Ab[1:] == 0).all()) and bool((Ab[0] != 0).all())
    u = rand(2, 3, 40, seed=2, device=device)
    args = fp32(u, Ab, Bb, C, D) if backend == "triton" else (u, Ab, Bb, C, D)
    y, state = s4d_prefill(*args, backend=backend)
    u64, Ab64, Bb64, C64_, D64 = rounded(*args) if backend == "triton" else args
    y_rec, x_rec = ssm.recurrence(Ab64, Bb64, C64_, u64, diagonal=True, return_state=True)
    y_rec = 2 * y_rec.real + D64[:, None] * u64
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(state).all())
    tol = {"rtol": 1e-4, "atol": 1e-4} if backend == "triton" else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(y.double(), y_rec, **tol)
    torch.testing.assert_close(state.to(C128), x_rec, **tol)


# ---------------------------------------------------------------- Triton against float64


@pytest.mark.parametrize("skip", ["tensor", "float", "none"])
def test_triton_step(step_shape, skip, device, poisoned):
    B, H, N = step_shape
    _, _, C, D, _, Ab, Bb = system(H, N, seed=N, device=device)
    x = rand(B, H, N, seed=N, dtype=C128, device=device)
    u = rand(B, H, seed=N + 1, device=device)
    D = {"tensor": D, "float": 0.3, "none": None}[skip]
    Ab32, Bb32, C32, x32, u32 = fp32(Ab, Bb, C, x, u)
    Ab, Bb, C, x, u = rounded(Ab, Bb, C, x, u)
    state = x32.clone()
    pointer = state.data_ptr()
    y = s4d_step_triton(state, u32, Ab32, Bb32, C32, D)
    assert state.data_ptr() == pointer and y.dtype == torch.float32 and not y.isnan().any()
    y_ref = s4d_step_ref(x, u, Ab, Bb, C, D)
    size = Ab.abs() * x.abs() + Bb.abs() * u.abs()[..., None]  # |terms| of x_k: (B H N)
    assert ((state.to(C128) - x).abs() <= 4 * EPS32 * size).all()
    bound = 2 * (C.abs() * size).sum(-1) + (0 if D is None else (D * u).abs())
    assert ((y.double() - y_ref).abs() <= 8 * EPS32 * bound).all()


def test_triton_prefill_then_steps_is_the_convolution(prefill_shape, device, poisoned):
    """Prefill by the kernels, then steps, against the float64 convolution of the same numbers,
    within the float32 error of ``Ā^l = exp(l log Ā)`` (which grows with the phase ``|log Ā| l``)
    and of the FFT (``ε log₂(2L) ‖u‖ ‖K‖`` per row, for a prompt longer than the direct path).
    At real size the first channels are checked."""
    B, H, N, L = prefill_shape
    steps = 4
    _, _, C, D, _, Ab, Bb = system(H, N, seed=L, device=device, dt_range=(1e-3, 1e-1))
    u = rand(B, H, L + steps, seed=L, device=device)
    u32, Ab32, Bb32, C32, D32 = fp32(u, Ab, Bb, C, D)
    y, state = s4d_prefill(u32[..., :L], Ab32, Bb32, C32, D32, backend="triton")
    assert state.dtype == C64 and not (y.isnan().any() or state.isnan().any())
    prefilled = state.clone()
    with torch.no_grad():
        ys = [y] + [
            s4d_step(state, u32[..., L + k], Ab32, Bb32, C32, D32, backend="triton")[..., None]
            for k in range(steps)
        ]
    h = slice(0, min(H, CHECKED))
    u, Ab, Bb, C, D = rounded(u[:, h], Ab[h], Bb[h], C[h], D[h])
    x = log_Ab = torch.log(Ab)
    j = torch.arange(L + steps, dtype=F64, device=device)
    V = torch.exp(x[..., None] * j)  # Ā^j: (h N L+steps)
    K = 2 * ((C * Bb)[..., None] * V).sum(1).real  # (h L+steps)
    growth = (Ab.abs()[..., None] ** j) * (1 + log_Ab.abs()[..., None] * j)  # |Ā|^j (1 + |x| j)
    K_abs = 2 * ((C * Bb).abs()[..., None] * growth).sum(1)
    full = ssm.fft_conv(u, K, D)
    fft = (
        math.log2(2 * L)
        * u[..., :L].norm(dim=-1, keepdim=True)
        * K_abs[:, :L].norm(dim=-1)[:, None]
    )  # (B h 1)
    bound = 64 * EPS32 * ssm.causal_conv(u.abs(), K_abs, D.abs()) + 4 * EPS32 * fft
    err = (torch.cat(ys, -1)[:, h].double() - full).abs()
    assert (err <= bound).all(), float((err / bound).max())
    # the state after the prompt: x_{L-1} = B̄ Σ_j Ā^j u_{L-1-j}
    prompt = u[..., :L].flip(-1)[:, :, None, :]  # (B h 1 L)
    x_want = Bb * (V[..., :L] * prompt).sum(-1)  # (B h N)
    x_bound = Bb.abs() * (growth[..., :L] * prompt.abs()).sum(-1)
    assert ((prefilled[:, h].to(C128) - x_want).abs() <= 64 * EPS32 * x_bound).all()


def test_triton_deterministic(device, on_gpu, poisoned):
    """The step's output and state bitwise equal from run to run (at real size on a GPU)."""
    B, H, N = (64, 1024, 64) if on_gpu else (2, 3, 8)
    _, _, C, D, _, Ab, Bb = system(H, N, seed=3, device=device)
    x = rand(B, H, N, seed=3, dtype=C64, device=device)
    u = rand(B, H, seed=4, dtype=torch.float32, device=device)
    runs = []
    for _ in range(2):
        state = x.clone()
        y = s4d_step_triton(state, u, *fp32(Ab, Bb, C, D))
        runs.append((y, state))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch


def test_public_function_paths(device):
    _, _, C, D, _, Ab, Bb = system(3, 4, seed=4, device=device)
    x = rand(2, 3, 4, seed=4, dtype=C64, device=device)
    u = rand(2, 3, seed=5, dtype=torch.float32, device=device)
    expected = x.clone()
    y_ref = s4d_step(expected, u, *fp32(Ab, Bb, C, D), backend="reference")
    state = x.clone()
    y = s4d_step(state, u, *fp32(Ab, Bb, C, D), backend="triton")
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(state, expected)


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_float64_policy(backend, device):
    """complex128 / float64 anywhere: the reference in float64 under "auto" (in place), a
    ValueError under "triton"; for the step and the prefill."""
    _, _, C, D, _, Ab, Bb = system(3, 4, seed=4, device=device)
    x = rand(2, 3, 4, seed=4, dtype=C128, device=device)
    u = rand(2, 3, 9, seed=5, device=device)
    state32 = x.to(C64)
    calls = {
        "step": lambda: s4d_step(x, u[..., 0], Ab, Bb, C, D, backend=backend),
        "step-mixed": lambda: s4d_step(
            state32, u[..., 0].float(), Ab, *fp32(Bb, C), backend=backend
        ),
        "prefill": lambda: s4d_prefill(u, Ab, Bb, C, D, backend=backend),
    }
    for call in calls.values():
        if backend == "triton":
            with pytest.raises(ValueError, match=r"float64|complex128"):
                call()
        else:
            call()
    if backend == "auto":
        expected = x.clone()
        s4d_step_ref(expected, u[..., 0], Ab, Bb, C, D)
        state = x.clone()
        y = s4d_step(state, u[..., 0], Ab, Bb, C, D)
        assert y.dtype == F64
        torch.testing.assert_close(state, expected, rtol=0, atol=0)


def test_auto_runs_the_kernel_on_a_gpu(device, on_gpu):
    """The probe passes: on a GPU "auto" then runs the kernel without a warning; on the CPU the
    same probe runs in the interpreter (and "auto" keeps to the reference)."""
    _, _, C, D, _, Ab, Bb = system(3, 4, seed=6, device=device)
    params = fp32(Ab, Bb, C, D)
    x = rand(2, 3, 4, seed=6, dtype=C64, device=device)
    u = rand(2, 3, seed=7, dtype=torch.float32, device=device)
    _probe(device)
    assert dispatch.choose("s4d_step", (x, u, *params), "auto", _probe) == (
        "triton" if on_gpu else "reference"
    )
    state, expected = x.clone(), x.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = s4d_step(state, u, *params)
    y_want = (s4d_step_triton if on_gpu else s4d_step_ref)(expected, u, *params)
    torch.testing.assert_close(y, y_want, rtol=0, atol=0)
    torch.testing.assert_close(state, expected, rtol=0, atol=0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_equal_the_reference(layout, backend, device):
    """Strided, expanded (stride-0), ``conj()`` and negated views of the parameters, the input
    and the state: the output and the updated state equal the reference on dense copies, and
    the update is written through the view (an expanded state, which has no room for it, only
    as parameters)."""
    view = LAYOUTS[layout]
    _, _, C, D, _, Ab, Bb = system(3, 4, seed=8, device=device)
    params = [view(t) for t in fp32(Ab, Bb, C)] + [view(fp32(D)[0][None])[0]]
    u = view(rand(2, 3, seed=8, dtype=torch.float32, device=device))
    base = rand(2, 3, 4, seed=9, dtype=C64, device=device)
    state = base.clone() if layout == "expanded" else view(base.clone())
    clean = [t.resolve_conj().resolve_neg().clone() for t in (state, u, *params)]
    y_want = s4d_step_ref(*clean)
    with torch.no_grad():
        y = s4d_step(state, u, *params, backend=backend)
    torch.testing.assert_close(y, y_want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state.resolve_conj(), clean[0], rtol=1e-6, atol=1e-6)


EMPTY_STEP = [
    pytest.param((0, 3, 4), id="B0"),
    pytest.param((2, 0, 4), id="H0"),
    pytest.param((2, 3, 0), id="N0"),
]


@pytest.mark.parametrize("BHN", EMPTY_STEP)
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_dimensions(BHN, backend, device):
    """No batch or no channels: empty outputs; no state: ``y = D u`` (the empty sum is zero);
    the prefill likewise, through the FFT (a prompt longer than the short-kernel path)."""
    B, H, N = BHN
    _, _, C, D, _, Ab, Bb = system(H, N, device=device)
    params = fp32(Ab, Bb, C, D)
    state = torch.zeros(B, H, N, dtype=C64, device=device)
    u = rand(B, H, 90, seed=10, dtype=torch.float32, device=device)
    y = s4d_step(state, u[..., 0], *params, backend=backend)
    torch.testing.assert_close(y, params[3] * u[..., 0])
    y, state = s4d_prefill(u, *params, backend=backend)
    assert y.shape == (B, H, 90) and state.shape == (B, H, N)
    torch.testing.assert_close(y, params[3][:, None] * u)


def bad_calls():
    _, _, C, D, _, Ab, Bb = system(3, 4)
    x, u = torch.zeros(2, 3, 4, dtype=C128), torch.zeros(2, 3, dtype=F64)
    grad_u = u.clone().requires_grad_()
    meta = torch.device("meta")
    return [
        pytest.param(lambda: s4d_step(x.real, u, Ab, Bb, C), "state must be a complex", id="real"),
        pytest.param(lambda: s4d_step(x[0], u, Ab, Bb, C), "state must be", id="2d-state"),
        pytest.param(lambda: s4d_step(x, u[0], Ab, Bb, C), "u must have shape", id="u-shape"),
        pytest.param(lambda: s4d_step(x, u, Ab[:2], Bb, C), "Ab must be", id="Ab-shape"),
        pytest.param(lambda: s4d_step(x, u, Ab, Bb.real, C), "Bb must be", id="real-Bb"),
        pytest.param(lambda: s4d_step(x, u, Ab, Bb, C, D[:2]), "D must be", id="D-shape"),
        pytest.param(lambda: s4d_step(x, grad_u, Ab, Bb, C), "inference", id="grad"),
        pytest.param(lambda: s4d_step(x, u, Ab, Bb, C, backend="x"), "backend", id="backend"),
        pytest.param(lambda: s4d_step(x.to(meta), u, Ab, Bb, C), "state is a meta", id="meta"),
        pytest.param(
            lambda: s4d_step(x[:, :, :1].expand_as(x), u, Ab, Bb, C), "expanded", id="expanded"
        ),
        pytest.param(
            lambda: s4d_step(x, u, Ab, Bb, C.to(meta), backend="triton"), "C is a", id="meta-C"
        ),
        pytest.param(lambda: s4d_prefill(u, Ab, Bb, C), "u must have shape", id="prefill-u"),
        pytest.param(
            lambda: s4d_prefill(u[..., None][..., :0], Ab, Bb, C), "L >= 1", id="prefill-L0"
        ),
        pytest.param(
            lambda: s4d_prefill(u[..., None], Ab[0], Bb, C), "Ab must have shape", id="prefill-Ab"
        ),
        pytest.param(
            lambda: s4d_prefill(u[..., None], "Ab", Bb, C), "Ab must be a torch", id="prefill-str"
        ),
        pytest.param(
            lambda: s4d_prefill(u[..., None].to(meta), Ab, Bb, C), "u is a meta", id="prefill-meta"
        ),
    ]


@pytest.mark.parametrize(("call", "match"), bad_calls())
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_another_device_is_refused(device):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    _, _, C, D, _, Ab, Bb = system(3, 4, device=device)
    x = torch.zeros(2, 3, 4, dtype=C128, device=device)
    u = torch.zeros(2, 3, dtype=F64, device=device)
    with pytest.raises(ValueError, match="Bb"):
        s4d_step(x, u, Ab, Bb.to(other), C, D)
    with pytest.raises(ValueError, match="D"):
        s4d_prefill(u[..., None], Ab, Bb, C, D.to(other))
