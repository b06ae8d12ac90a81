"""Long convolution ``y = k * u + D u`` (causal, per channel) for SSM and Hyena-style layers.

:func:`fftconv` takes the FFT path (PyTorch's cuFFT/pocketfft; :func:`kernel_fft` computes the
kernel's transform once for repeated calls) for long kernels, and for short kernels
(``L_k ≤ 64``) a Triton direct convolution with the skip term fused, on CUDA tensors
(:mod:`ssm.ops.dispatch`). Where each path pays off, with measurements: ``README.md`` in this
folder. Explained in the S4 and Hyena chapters of the book.
"""

from __future__ import annotations

import os

import torch

from ... import _checks
from ..dispatch import BACKENDS, ENV_VAR, choose
from .reference import FFTConvKernel, fftconv_ref, kernel_fft

__all__ = ["SHORT_KERNEL", "FFTConvKernel", "fftconv", "fftconv_ref", "kernel_fft"]

SHORT_KERNEL = 64  # longest kernel of the direct Triton convolution; longer ones use the FFT


def fftconv(
    u: torch.Tensor,
    k: torch.Tensor | FFTConvKernel,
    D: torch.Tensor | float | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """``y[b, h, l] = Σ_{j ≤ l} k[h, j] u[b, h, l - j] + D[h] u[b, h, l]``; equals
    :func:`ssm.fft_conv`.

    Args:
        u: ``(B, H, L)`` real input.
        k: ``(H, L_k)`` real kernel (truncated or zero-padded to ``L``), or
            ``kernel_fft(k, L)`` computed once for repeated calls (always the FFT path).
        D: skip term, a float or ``(H,)``.
        backend: ``"auto"``, ``"reference"`` or ``"triton"`` (see :mod:`ssm.ops.dispatch`); the
            Triton kernel serves kernels of at most ``SHORT_KERNEL`` taps (after truncation to
            ``L``) and computes in float32.

    Returns:
        ``y`` ``(B, H, L)``, differentiable in ``u``, ``k`` and ``D``.
    """
    u = _checks.tensor("u", u, complex_ok=False)
    if u.ndim != 3 or u.shape[-1] < 1:
        raise ValueError(f"u must have shape (B, H, L) with L >= 1, got {tuple(u.shape)}")
    H, L = u.shape[1:]
    if isinstance(k, FFTConvKernel):
        if k.L != L or k.k_f.shape != (H, L + 1):
            raise ValueError(
                f"k was transformed for length {k.L} and {k.k_f.shape[0]} channels; u has "
                f"length {L} and {H} channels: call kernel_fft(k, {L}) for this input"
            )
    else:
        k = _checks.tensor("k", k, complex_ok=False)
        if k.ndim != 2 or k.shape[0] != H or k.shape[1] < 1:
            raise ValueError(
                f"k must have shape (H, L_k) with H={H} (the channels of u), got {tuple(k.shape)}"
            )
    if isinstance(D, torch.Tensor):
        _checks.tensor("D", D, complex_ok=False)
        if D.shape != (H,):
            raise ValueError(f"D must be a float or have shape (H,) = ({H},), got {tuple(D.shape)}")
    elif D is not None and (isinstance(D, bool) or not isinstance(D, (int, float))):
        raise ValueError(f"D must be None, a float or a tensor of shape (H,), got {D!r}")
    k_tensor = k.k_f if isinstance(k, FFTConvKernel) else k
    tensors = (u, k_tensor, D) if isinstance(D, torch.Tensor) else (u, k_tensor)
    if len({t.device for t in tensors}) > 1:
        raise ValueError("u, k and D must be on one device")
    if isinstance(k, FFTConvKernel) or min(k.shape[1], L) > SHORT_KERNEL:
        requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
        if requested == "triton":
            raise ValueError(
                f"fftconv: backend 'triton' is a direct convolution for kernels of at most "
                f"{SHORT_KERNEL} taps, this one is "
                f"{'pre-transformed' if isinstance(k, FFTConvKernel) else k.shape[1]}; long "
                "kernels take the FFT path: use backend='auto' or 'reference'"
            )
        return fftconv_ref(u, k, D)
    if choose("fftconv", tensors, backend, _probe) == "triton":
        from .triton import causal_conv_triton

        return causal_conv_triton(u, k, D)
    return fftconv_ref(u, k, D)


def _probe(device: torch.device) -> None:
    from .triton import causal_conv_triton

    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2, 3, 37, dtype=torch.float64, generator=gen).to(device)
    k = torch.randn(3, 5, dtype=torch.float64, generator=gen).to(device)
    y = causal_conv_triton(u.float(), k.float(), 0.5).double()
    if not torch.allclose(y, fftconv_ref(u, k, 0.5), rtol=1e-4, atol=1e-4):
        raise RuntimeError("fftconv: the Triton kernel disagrees with the reference")
