"""Long convolution by FFT, with the kernel's transform computed once and reused.

The convolutional view of an SSM (S4, arXiv:2111.00396v3, eq. (5); H3, Hyena): each channel is
convolved causally with its own kernel,

    y[b, h, l] = Σ_{j ≤ l} k[h, j] u[b, h, l - j]  +  D[h] u[b, h, l].

Zero-padding both to ``2L`` makes the circular convolution of the FFT a linear one:
``y = irfft(rfft(u, 2L) · rfft(k, 2L))[:L]``. The kernel's transform ``rfft(k, 2L)`` depends on
neither the batch nor the input, so a model with a fixed kernel (inference) computes it once:
:func:`kernel_fft` returns it as an :class:`FFTConvKernel` that :func:`fftconv_ref` accepts in
place of ``k``.

Dimension letters: B batch, H channels, L length, L_k kernel length. Explained in the S4 and
Hyena chapters of the book.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FFTConvKernel:
    """A kernel ``k`` ``(H, L_k)`` transformed for inputs of length ``L``.

    ``k_f = rfft(k[:, :L], n=2L)`` ``(H, L + 1)`` complex; ``L`` is the input length it serves.
    """

    k_f: torch.Tensor
    L: int


def kernel_fft(k: torch.Tensor, L: int) -> FFTConvKernel:
    """Transform ``k`` ``(H, L_k)`` once for convolutions with inputs of length ``L``."""
    return FFTConvKernel(torch.fft.rfft(k[..., :L], n=2 * L), L)  # (H L+1) complex


def fftconv_ref(
    u: torch.Tensor,
    k: torch.Tensor | FFTConvKernel,
    D: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """``y = k * u + D u`` (causal, per channel) by FFT, ``O(B H L log L)``.

    Args:
        u: ``(B, H, L)`` real input.
        k: ``(H, L_k)`` real kernel (truncated or zero-padded to ``L``), or its
            :func:`kernel_fft` for length ``L``.
        D: skip term, a float or ``(H,)``.

    Returns:
        ``y`` ``(B, H, L)``.
    """
    L = u.shape[-1]
    k_f = k.k_f if isinstance(k, FFTConvKernel) else kernel_fft(k, L).k_f  # (H L+1)
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * k_f, n=2 * L)[..., :L]  # (B H L)
    if D is None:
        return y
    return y + (D[:, None] if isinstance(D, torch.Tensor) else D) * u
