"""Long convolution: the FFT reference against ssm.fft_conv and the O(L²) definition, the
reusable kernel transform, gradients, and the Triton direct convolution against the float64
reference (``--device cpu``: Triton's interpreter at small sizes; ``--device cuda``: compiled,
at real sizes too), with outputs NaN-poisoned and results bitwise repeatable."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layouts import LAYOUTS

import ssm
from ssm.ops import dispatch
from ssm.ops.fftconv import SHORT_KERNEL, _probe, fftconv, fftconv_ref, kernel_fft
from ssm.ops.fftconv.triton import causal_conv_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
F64 = torch.float64


def inputs(B, H, L, Lk, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, H, L, dtype=F64, generator=gen)
    k = torch.randn(H, Lk, dtype=F64, generator=gen)
    D = torch.randn(H, dtype=F64, generator=gen)
    return u.to(device), k.to(device), D.to(device)


# Small shapes run everywhere; the real sizes (B 8, H 1024, L 16384, 64 taps) on a GPU only.
SHAPES = [
    pytest.param((2, 3, 1, 4), id="L1-Lk4"),
    pytest.param((1, 2, 7, 7), id="L7-Lk7"),
    pytest.param((2, 2, 33, 1), id="L33-Lk1"),
    pytest.param((1, 3, 64, 64), id="L64-Lk64"),
    pytest.param((2, 2, 300, 20), id="L300-Lk20"),  # several tiles of L
]
GPU_SHAPES = [
    pytest.param((4, 256, 4096, 16), id="B4-H256-L4096-Lk16"),
    pytest.param((8, 1024, 16384, 64), id="B8-H1024-L16384-Lk64"),
]


SIZES = {"shape": (SHAPES, GPU_SHAPES)}  # parametrized by tests/ops/conftest.py


# ---------------------------------------------------------------- references (float64)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    H=st.integers(1, 3),
    L=st.integers(1, 40),
    Lk=st.integers(1, 50),
    skip=st.sampled_from(["none", "float", "tensor"]),
    seed=st.integers(0, 999),
)
def test_reference_equals_fft_conv_and_the_definition(B, H, L, Lk, skip, seed):
    u, k, D = inputs(B, H, L, Lk, seed)
    D = {"none": None, "float": 0.7, "tensor": D}[skip]
    y = fftconv_ref(u, k, D)
    torch.testing.assert_close(y, ssm.fft_conv(u, k, D), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, ssm.causal_conv(u, k, D), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fftconv_ref(u, kernel_fft(k, L), D), y, rtol=0, atol=0)


def test_kernel_transform_is_reused():
    u, k, D = inputs(2, 3, 50, 50)
    k_f = kernel_fft(k, 50)
    assert k_f.L == 50 and k_f.k_f.shape == (3, 51) and k_f.dtype == F64
    for seed in range(2):  # several inputs, one transform
        u = inputs(2, 3, 50, 50, seed)[0]
        torch.testing.assert_close(fftconv(u, k_f, D), ssm.fft_conv(u, k, D))


def test_reference_gradcheck():
    u, k, D = (t.requires_grad_() for t in inputs(2, 2, 9, 6))
    assert torch.autograd.gradcheck(fftconv_ref, (u, k, D))


# ---------------------------------------------------------------- Triton against float64


def bounds(u, k, g):
    """Sizes of the sums: ``Σ_i |k_i| |u_{l-i}| + |D u|`` and the same for each gradient."""
    ua, ka, ga = u.abs(), k.abs(), g.abs()
    y = ssm.causal_conv(ua, ka, 1.0)
    du = ssm.causal_conv(ga.flip(-1), ka, 1.0).flip(-1)
    L = u.shape[-1]
    dk = torch.stack(
        [(ga[..., i:] * ua[..., : L - i]).sum((0, 2)) for i in range(min(k.shape[1], L))], -1
    )
    return y, du, dk, (ga * ua).sum((0, 2))


@pytest.mark.parametrize("skip", ["none", "tensor"])
def test_triton_forward_and_gradients(shape, skip, device, poisoned):
    B, H, L, Lk = shape
    u, k, D = inputs(B, H, L, Lk, seed=L, device=device)
    D = D if skip == "tensor" else None
    ref_in = [t.requires_grad_() for t in (u, k, D) if t is not None]
    fast_in = [t.detach().float().requires_grad_() for t in ref_in]
    g = torch.randn(B, H, L, dtype=F64, generator=torch.Generator().manual_seed(L)).to(device)
    y_ref = fftconv_ref(*ref_in)
    y = causal_conv_triton(*fast_in)
    assert y.dtype == torch.float32 and not y.isnan().any()
    grads = torch.autograd.grad(y_ref, ref_in, g)
    fast = torch.autograd.grad(y, fast_in, g.float())
    for name, got, expected, bound in zip(
        ["y", "du", "dk", "dD"], (y, *fast), (y_ref, *grads), bounds(u, k.detach(), g), strict=False
    ):
        assert not got.isnan().any(), name
        err = (got.double() - expected).abs()
        assert (err <= 8 * EPS32 * bound[..., : err.shape[-1]] + 1e-30).all(), name


def test_fft_path_in_float32(device, on_gpu):
    """A kernel as long as the input takes the FFT: float32 against float64 within the FFT's
    relative error ``ε log₂(2L)`` of ``‖u‖ ‖k‖``, the size of any output (Cauchy–Schwarz), per
    row; at real size on a GPU."""
    B, H, L = (8, 1024, 16384) if on_gpu else (2, 3, 500)
    u, k, D = inputs(B, H, L, L, seed=7, device=device)
    k = k * torch.exp(-torch.arange(L, device=device) / (0.1 * L))  # a long, decaying kernel
    y64 = fftconv_ref(u, k, D)
    size = u.norm(dim=-1) * k.norm(dim=-1) + (D[:, None] * u).abs().amax(-1)  # (B H)
    u32, k32, D32 = u.float(), k.float(), D.float()
    for y in (fftconv(u32, k32, D32), fftconv(u32, kernel_fft(k32, L), D32)):
        assert y.dtype == torch.float32
        assert ((y.double() - y64).abs().amax(-1) <= 4 * EPS32 * math.log2(2 * L) * size).all()


def test_triton_long_kernel_is_truncated(device):
    u, k, _ = inputs(1, 2, 10, 40, seed=2, device=device)
    y = causal_conv_triton(u.float(), k.float(), 0.5)
    torch.testing.assert_close(y.double(), ssm.fft_conv(u, k, 0.5), rtol=1e-5, atol=1e-5)


def test_triton_deterministic(device, on_gpu, poisoned):
    """Output and gradients bitwise equal from run to run (at real size on a GPU)."""
    B, H, L, Lk = (8, 1024, 16384, 64) if on_gpu else (2, 2, 300, 20)
    u, k, D = (t.float() for t in inputs(B, H, L, Lk, seed=3, device=device))
    g = torch.randn(B, H, L, generator=torch.Generator().manual_seed(3)).to(device)
    runs = []
    for _ in range(2):
        args = [t.clone().requires_grad_() for t in (u, k, D)]
        y = causal_conv_triton(*args)
        runs.append((y, *torch.autograd.grad(y, args, g)))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch

BACKENDS = ["reference", "triton"]


def test_public_function_paths(device):
    u, k, D = (t.float() for t in inputs(2, 3, 40, 8, seed=4, device=device))
    y = fftconv(u, k, D, backend="triton")
    torch.testing.assert_close(y, causal_conv_triton(u, k, D), rtol=0, atol=0)
    torch.testing.assert_close(fftconv(u, k, D, backend="reference"), fftconv_ref(u, k, D))
    long_k = torch.randn(3, SHORT_KERNEL + 1, device=device)  # truncated to L = 40: short
    torch.testing.assert_close(fftconv(u, long_k, backend="triton"), causal_conv_triton(u, long_k))
    u_long = torch.randn(2, 3, SHORT_KERNEL + 10, device=device)
    torch.testing.assert_close(fftconv(u_long, long_k, 0.5), fftconv_ref(u_long, long_k, 0.5))
    with pytest.raises(ValueError, match="at most 64 taps"):
        fftconv(u_long, long_k, backend="triton")
    with pytest.raises(ValueError, match="pre-transformed"):
        fftconv(u, kernel_fft(k, 40), backend="triton")


@pytest.mark.parametrize("backend", ["auto", "triton"])
@pytest.mark.parametrize("Lk", [8, SHORT_KERNEL + 20], ids=["short", "long"])
def test_float64_policy(backend, Lk, device):
    """float64 anywhere (here ``D`` alone for the short kernel): the FFT reference in float64
    under "auto", a ValueError under "triton"."""
    u, k, D = inputs(2, 3, 90, Lk, seed=4, device=device)
    args = (u.float(), k.float(), D) if Lk == 8 else (u, k, D)
    if backend == "triton":
        with pytest.raises(ValueError, match="float64" if Lk == 8 else "at most 64 taps"):
            fftconv(*args, backend=backend)
    else:
        y = fftconv(*args, backend=backend)
        assert y.dtype == F64
        torch.testing.assert_close(y, fftconv_ref(*(t.double() for t in args)))


def test_backend_names_are_checked_on_both_paths(monkeypatch, device):
    u, k, _ = inputs(1, 2, 80, 70, device=device)
    for kernel in (k, k[:, :4]):  # the FFT path and the direct one
        with pytest.raises(ValueError, match="backend must be one of"):
            fftconv(u.float(), kernel.float(), backend="fast")
        monkeypatch.setenv(dispatch.ENV_VAR, "fast")
        with pytest.raises(ValueError, match="SSM_BACKEND must be one of"):
            fftconv(u.float(), kernel.float())
        monkeypatch.delenv(dispatch.ENV_VAR)


def test_auto_runs_the_kernel_on_a_gpu(device, on_gpu):
    """The probe passes: on a GPU "auto" then runs the direct kernel without a warning; on the
    CPU the same probe runs in the interpreter (and "auto" keeps to the FFT reference)."""
    u, k, D = (t.float() for t in inputs(2, 3, 50, 9, seed=5, device=device))
    _probe(device)
    assert dispatch.choose("fftconv", (u, k, D), "auto", _probe) == (
        "triton" if on_gpu else "reference"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fftconv(u, k, D)
    expected = causal_conv_triton if on_gpu else fftconv_ref
    torch.testing.assert_close(y, expected(u, k, D), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("Lk", [8, SHORT_KERNEL + 20], ids=["short", "long"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(dtype, Lk, backend, device):
    """Half-precision ``u`` and ``k``: the output in their dtype on both paths (the FFT in
    float32), within a rounding of the float64 convolution of the same numbers."""
    u, k, D = inputs(2, 3, 90, Lk, seed=8, device=device)
    u, k = u.to(dtype), (k / 4).to(dtype)
    if backend == "triton" and Lk > SHORT_KERNEL:
        backend = "auto"  # a long kernel has no Triton path
    y = fftconv(u, k, D.to(dtype), backend=backend)  # (B H L)
    assert y.dtype == dtype
    D = D.to(dtype).double()
    want = fftconv_ref(u.double(), k.double(), D)
    bound = ssm.causal_conv(u.double().abs(), k.double().abs(), D.abs())
    assert ((y.double() - want).abs() <= 2 * torch.finfo(dtype).eps * bound).all()
    y_f = fftconv(u, kernel_fft(k, 90), backend="auto")
    assert y_f.dtype == dtype


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_equal_the_reference(layout, backend, device):
    """Strided, expanded (stride-0) and negated views of ``u``, ``k`` and ``D``: the output and
    gradients equal the float64 reference on the same views."""
    view = LAYOUTS[layout]
    ref_in = [t.requires_grad_() for t in inputs(2, 3, 150, 12, seed=9, device=device)]
    fast_in = [t.detach().float().requires_grad_() for t in ref_in]
    y = fftconv(*map(view, fast_in), backend=backend)
    want = fftconv_ref(*map(view, ref_in))
    tol = {"rtol": 1e-5, "atol": 1e-5 * float(want.detach().abs().max())}
    torch.testing.assert_close(y.double(), want, **tol)
    g = torch.randn(2, 3, 150, dtype=F64, generator=torch.Generator().manual_seed(9)).to(device)
    for a, b in zip(
        torch.autograd.grad(y, fast_in, g.float()),
        torch.autograd.grad(want, ref_in, g),
        strict=True,
    ):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


EMPTY = [
    pytest.param((0, 3), id="B0"),
    pytest.param((2, 0), id="H0"),
]


@pytest.mark.parametrize("BH", EMPTY)
@pytest.mark.parametrize("Lk", [8, SHORT_KERNEL + 20], ids=["short", "long"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_dimensions(BH, Lk, backend, device):
    """No batch or no channels: an empty output on both paths (torch.fft itself refuses empty
    batches), also through a pre-transformed kernel."""
    u, k, D = (t.float() for t in inputs(*BH, 90, Lk, device=device))
    backend = backend if Lk <= SHORT_KERNEL else "reference"
    assert fftconv(u, k, D, backend=backend).shape == (*BH, 90)
    assert fftconv(u, kernel_fft(k, 90), D).shape == (*BH, 90)


def bad_calls():
    u, k, D = inputs(2, 3, 10, 4)
    meta = torch.device("meta")
    return [
        pytest.param(lambda: fftconv(u[0], k), "u must have shape", id="2d-u"),
        pytest.param(lambda: fftconv(u[..., :0], k), "L >= 1", id="L0"),
        pytest.param(lambda: fftconv(u, k[:, :0]), "k must have shape", id="Lk0"),
        pytest.param(lambda: fftconv(u, k[:2]), "k must have shape", id="k-channels"),
        pytest.param(lambda: fftconv(u, k[0]), "k must have shape", id="1d-k"),
        pytest.param(lambda: fftconv(u, k, D[:2]), "D must be", id="D-shape"),
        pytest.param(lambda: fftconv(u, k, "1"), "D must be", id="D-str"),
        pytest.param(lambda: fftconv(u, kernel_fft(k, 9), D), "kernel_fft", id="k_f-L"),
        pytest.param(lambda: fftconv(u, kernel_fft(k[:2], 10), D), "kernel_fft", id="k_f-H"),
        pytest.param(lambda: fftconv(u.to(torch.complex128), k), "real", id="complex-u"),
        pytest.param(lambda: fftconv(u, k, backend="fast"), "backend", id="backend"),
        pytest.param(lambda: fftconv(u.to(meta), k), "u is a meta", id="meta-u"),
        pytest.param(lambda: fftconv(u, k, D.to(meta), backend="triton"), "D is a", id="meta-D"),
        pytest.param(lambda: kernel_fft(k[0], 10), "k must have shape", id="kernel_fft-1d"),
        pytest.param(lambda: kernel_fft(k, 0), "L must be", id="kernel_fft-L0"),
        pytest.param(lambda: kernel_fft(k.to(meta), 10), "k is a meta", id="kernel_fft-meta"),
    ]


@pytest.mark.parametrize(("call", "match"), bad_calls())
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_another_device_is_refused(device):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    u, k, D = inputs(2, 3, 10, 4, device=device)
    with pytest.raises(ValueError, match="k"):
        fftconv(u, k.to(other))
    with pytest.raises(ValueError, match="D"):
        fftconv(u, k, D.to(other))
