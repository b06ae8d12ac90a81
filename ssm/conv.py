"""The convolutional view: ``y = K̄ * u`` (causal), computed with the FFT in ``O(L log L)``.

Explained in Chapter 1 of the book.
"""

from __future__ import annotations

import torch

from . import _checks


def causal_conv(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor | float | None = None):
    """The definition, ``y[l] = Σ_{j ≤ l} K[j] u[l - j] + D u[l]``, in ``O(L²)``.

    A reference for :func:`fft_conv`. ``u`` ``(..., L)``, ``K`` ``(..., L_K)``;
    returns ``(..., L)``.
    """
    u, K = _inputs(u, K)
    L = u.shape[-1]
    K = K[..., :L]
    y = sum(
        K[..., j, None] * torch.nn.functional.pad(u, (j, 0))[..., :L] for j in range(K.shape[-1])
    )
    return _skip(y, u, D)


def fft_conv(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor | float | None = None):
    """Causal convolution by FFT: zero-pad both to ``2L`` so the circular product is linear.

    ``u`` ``(..., L)``, ``K`` ``(..., L_K)`` (a kernel longer than ``L`` is truncated, a shorter
    one zero-padded), ``D`` a scalar or broadcastable to the batch dims. Returns ``(..., L)``, the
    length of ``u``. Real inputs give a real output.
    """
    u, K = _inputs(u, K)
    L = u.shape[-1]
    K = K[..., :L]
    n = 2 * L
    if u.is_complex() or K.is_complex():
        y = torch.fft.ifft(torch.fft.fft(u, n=n) * torch.fft.fft(K, n=n), n=n)[..., :L]
    else:
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)[..., :L]
    return _skip(y, u, D)


def _inputs(u: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, K = _checks.tensor("u", u), _checks.tensor("K", K)
    for name, x in (("u", u), ("K", K)):
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(f"{name} must have shape (..., L) with L >= 1, got {tuple(x.shape)}")
    dtype = _checks.common_dtype(u, K)
    return u.to(dtype), K.to(dtype)


def _skip(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | float | None) -> torch.Tensor:
    if D is None:
        return y
    return y + (D[..., None] if isinstance(D, torch.Tensor) else D) * u
