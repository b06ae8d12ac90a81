"""Long convolution: the FFT reference against ssm.fft_conv and the O(L²) definition, the
reusable kernel transform, gradients, and the Triton direct convolution in the CPU interpreter."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm.ops.fftconv import SHORT_KERNEL, fftconv, fftconv_ref, kernel_fft
from ssm.ops.fftconv.triton import causal_conv_triton

pytestmark = pytest.mark.triton

EPS32 = torch.finfo(torch.float32).eps
F64 = torch.float64


def inputs(B, H, L, Lk, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, H, L, dtype=F64, generator=gen)
    k = torch.randn(H, Lk, dtype=F64, generator=gen)
    D = torch.randn(H, dtype=F64, generator=gen)
    return u, k, D


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
    assert k_f.L == 50 and k_f.k_f.shape == (3, 51)
    for seed in range(2):  # several inputs, one transform
        u = inputs(2, 3, 50, 50, seed)[0]
        torch.testing.assert_close(fftconv(u, k_f, D), ssm.fft_conv(u, k, D))


def test_reference_gradcheck():
    u, k, D = (t.requires_grad_() for t in inputs(2, 2, 9, 6))
    assert torch.autograd.gradcheck(fftconv_ref, (u, k, D))


# ---------------------------------------------------------------- Triton (interpreted)

SHAPES = [
    pytest.param(2, 3, 1, 4, id="L1-Lk4"),
    pytest.param(1, 2, 7, 7, id="L7-Lk7"),
    pytest.param(2, 2, 33, 1, id="L33-Lk1"),
    pytest.param(1, 3, 64, 64, id="L64-Lk64"),
    pytest.param(2, 2, 300, 20, id="L300-Lk20"),  # several tiles of L
]


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


@pytest.mark.parametrize(("B", "H", "L", "Lk"), SHAPES)
@pytest.mark.parametrize("skip", ["none", "tensor"])
def test_triton_forward_and_gradients(B, H, L, Lk, skip, poisoned):
    u, k, D = inputs(B, H, L, Lk, seed=L)
    D = D if skip == "tensor" else None
    ref_in = [t.requires_grad_() for t in (u, k, D) if t is not None]
    fast_in = [t.detach().float().requires_grad_() for t in ref_in]
    g = torch.randn(B, H, L, dtype=F64, generator=torch.Generator().manual_seed(L))
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


def test_triton_long_kernel_is_truncated():
    u, k, _ = inputs(1, 2, 10, 40, seed=2)
    y = causal_conv_triton(u.float(), k.float(), 0.5)
    torch.testing.assert_close(y.double(), ssm.fft_conv(u, k, 0.5), rtol=1e-5, atol=1e-5)


def test_triton_deterministic(poisoned):
    u, k, D = (t.float() for t in inputs(2, 2, 300, 20, seed=3))
    g = torch.randn(2, 2, 300, generator=torch.Generator().manual_seed(3))
    runs = []
    for _ in range(2):
        args = [t.clone().requires_grad_() for t in (u, k, D)]
        y = causal_conv_triton(*args)
        runs.append((y, *torch.autograd.grad(y, args, g)))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


# ---------------------------------------------------------------- public function and dispatch


def test_public_function_paths():
    u, k, D = (t.float() for t in inputs(2, 3, 40, 8, seed=4))
    y = fftconv(u, k, D, backend="triton")
    torch.testing.assert_close(y, causal_conv_triton(u, k, D), rtol=0, atol=0)
    torch.testing.assert_close(fftconv(u, k, D), fftconv_ref(u, k, D))  # CPU "auto": FFT
    long_k = torch.randn(3, SHORT_KERNEL + 1)  # truncated to L = 40: short
    torch.testing.assert_close(fftconv(u, long_k, backend="triton"), causal_conv_triton(u, long_k))
    u_long = torch.randn(2, 3, SHORT_KERNEL + 10)
    torch.testing.assert_close(fftconv(u_long, long_k, 0.5), fftconv_ref(u_long, long_k, 0.5))
    with pytest.raises(ValueError, match="at most 64 taps"):
        fftconv(u_long, long_k, backend="triton")
    with pytest.raises(ValueError, match="pre-transformed"):
        fftconv(u, kernel_fft(k, 40), backend="triton")
    with pytest.raises(ValueError, match="float32"):
        fftconv(u.double(), k.double(), backend="triton")


BAD = [
    pytest.param(lambda u, k, D: fftconv(u[0], k), "u must have shape", id="2d-u"),
    pytest.param(lambda u, k, D: fftconv(u, k[:2]), "k must have shape", id="k-channels"),
    pytest.param(lambda u, k, D: fftconv(u, k[0]), "k must have shape", id="1d-k"),
    pytest.param(lambda u, k, D: fftconv(u, k, D[:2]), "D must be", id="D-shape"),
    pytest.param(lambda u, k, D: fftconv(u, k, "1"), "D must be", id="D-str"),
    pytest.param(lambda u, k, D: fftconv(u, kernel_fft(k, 9), D), "kernel_fft", id="k_f-L"),
    pytest.param(lambda u, k, D: fftconv(u.to(torch.complex128), k), "real", id="complex-u"),
    pytest.param(lambda u, k, D: fftconv(u, k, backend="fast"), "backend", id="backend"),
]


@pytest.mark.parametrize(("call", "match"), BAD)
def test_bad_inputs(call, match):
    u, k, D = inputs(2, 3, 10, 4)
    with pytest.raises(ValueError, match=match):
        call(u, k, D)


def test_triton_backend_without_gpu_raises():
    code = (
        "import torch\n"
        "from ssm.ops.fftconv import fftconv\n"
        "try:\n"
        "    fftconv(torch.ones(1, 2, 8), torch.ones(2, 3), backend='triton')\n"
        "except RuntimeError as err:\n"
        "    print('RuntimeError:', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SSM_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "RuntimeError: fftconv: backend 'triton' needs CUDA tensors" in out.stdout, out
