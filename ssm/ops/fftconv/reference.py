"""Long convolution by FFT, with the kernel's transform computed once and reused.

The convolutional view of an SSM (S4, arXiv:2111.00396v3, eq. (5); H3, Hyena): each channel is
convolved causally with its own kernel,

    y[b, h, l] = Σ_{j ≤ l} k[h, j] u[b, h, l - j]  +  D[h] u[b, h, l].

Zero-padding both to ``2L`` makes the circular convolution of the FFT a linear one:
``y = irfft(rfft(u, 2L) · rfft(k, 2L))[:L]``. The kernel's transform ``rfft(k, 2L)`` depends on
neither the batch nor the input, so a model with a fixed kernel (inference) computes it once:
:func:`kernel_fft` returns it as an :class:`FFTConvKernel` that :func:`fftconv_ref` accepts in
place of ``k``.

Dimension letters: B batch, H channels, L length, L_k kernel length. Explained in the book's
chapter *Making SSMs fast*, section "Long convolutions and decoding".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import _checks

# torch.fft takes no float16 or bfloat16 on the CPU (and only power-of-two lengths of them on a
# GPU): such inputs are transformed in float32 and the output returned in their dtype.
HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class FFTConvKernel:
    """A kernel ``k`` ``(H, L_k)`` transformed for inputs of length ``L``.

    ``k_f = rfft(k[:, :L], n=2L)`` ``(H, L + 1)`` complex; ``L`` is the input length it serves;
    ``dtype`` is the dtype of ``k`` (which the output of a convolution with it promotes with).
    """

    k_f: torch.Tensor
    L: int
    dtype: torch.dtype


def kernel_fft(k: torch.Tensor, L: int) -> FFTConvKernel:
    """Transform ``k`` ``(H, L_k)`` once for convolutions with inputs of length ``L``.

    Returns an :class:`FFTConvKernel` whose ``k_f`` is ``(H, L + 1)`` complex (complex64 for a
    float16 or bfloat16 ``k``), which :func:`ssm.ops.fftconv.fftconv` takes in place of ``k``.
    Explained in the chapter *Making SSMs fast*, section "Long convolutions and decoding".
    """
    k = _checks.tensor("k", k, complex_ok=False)
    _checks.positive_int("L", L)
    _checks.one_device(k=k)
    if k.ndim != 2 or k.shape[1] < 1:
        raise ValueError(f"k must have shape (H, L_k) with L_k >= 1, got {tuple(k.shape)}")
    k = k[..., :L]
    return FFTConvKernel(_rfft(k.float() if k.dtype in HALF else k, 2 * L), L, k.dtype)


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
        ``y`` ``(B, H, L)`` in the promoted dtype of ``u``, ``k`` and ``D``.
    """
    L = u.shape[-1]
    dtype = torch.promote_types(u.dtype, k.dtype)
    if isinstance(D, torch.Tensor):
        dtype = torch.promote_types(dtype, D.dtype)
    work = torch.float32 if dtype in HALF else dtype
    k_f = k.k_f if isinstance(k, FFTConvKernel) else kernel_fft(k.to(work), L).k_f  # (H L+1)
    u = u.to(work)
    y = _irfft(_rfft(u, 2 * L) * k_f, 2 * L)[..., :L]  # (B H L)
    if D is not None:
        y = y + (D[:, None] if isinstance(D, torch.Tensor) else D) * u
    return y.to(dtype)


def _rfft(x: torch.Tensor, n: int) -> torch.Tensor:
    """``rfft(x, n)`` along the last dim; an empty batch, which torch.fft rejects, gives an
    empty transform."""
    if x.numel() == 0:
        return x.new_zeros(*x.shape[:-1], n // 2 + 1, dtype=x.dtype.to_complex())
    return torch.fft.rfft(x, n=n)


def _irfft(X: torch.Tensor, n: int) -> torch.Tensor:
    """``irfft(X, n)`` along the last dim; empty batches as in :func:`_rfft`."""
    if X.numel() == 0:
        return X.real.new_zeros(*X.shape[:-1], n)
    return torch.fft.irfft(X, n=n)
