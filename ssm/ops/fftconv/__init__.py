"""Long convolution ``y = k * u + D u`` (causal, per channel) for SSM and Hyena-style layers.

:func:`fftconv` takes the FFT path (PyTorch's cuFFT/pocketfft; :func:`kernel_fft` computes the
kernel's transform once for repeated calls) for long kernels, and for short kernels
(``L_k ≤ 64``) a Triton direct convolution with the skip term fused, on CUDA tensors
(:mod:`ssm.ops.dispatch`). Where each path pays off, with measurements: ``README.md`` in this
folder. Explained in the book's chapter *Making SSMs fast*, section "Long convolutions and
decoding". Dimension letters: B batch, H channels, L length, L_k kernel length.
"""

from __future__ import annotations

import torch

from ... import _checks
from ..dispatch import choose, requested_backend
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
            ``L``) and accumulates in float32; float64 inputs use the FFT under ``"auto"`` and
            raise ``ValueError`` under ``"triton"``.

    Returns:
        ``y`` ``(B, H, L)`` in the promoted dtype of ``u``, ``k`` and ``D`` (float16 and
        bfloat16 inputs are transformed in float32 on the FFT path), differentiable in ``u``,
        ``k`` and ``D``; empty for ``B = 0`` or ``H = 0``.

    Explained in the chapter *Making SSMs fast*, section "Long convolutions and decoding".
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
    _checks.channel_skip(D, H)
    k_tensor = k.k_f if isinstance(k, FFTConvKernel) else k
    _checks.one_device(u=u, k=k_tensor, D=D)
    tensors = (u, k_tensor, D)
    if isinstance(k, FFTConvKernel) or min(k.shape[1], L) > SHORT_KERNEL:
        if requested_backend(backend) == "triton":
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
