"""The convolutional view: ``y = K̄ * u`` (causal), computed with the FFT in ``O(L log L)``.

Explained in the book's chapter *From ODE to S4*, section "Two views of one model: recurrent and
convolutional". Dimension letters: L length of the input, L_K of the kernel; ``(...)`` batch
dimensions, broadcast between ``u`` and ``K``.
"""

from __future__ import annotations

import torch

from . import _checks


def causal_conv(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor | float | None = None):
    """The definition, ``y[l] = Σ_{j ≤ l} K[j] u[l - j] + D u[l]``, in ``O(L²)``.

    A reference for :func:`fft_conv`, with the same arguments: ``u`` ``(..., L)``, ``K``
    ``(..., L_K)``, ``D`` a scalar or a tensor that broadcasts to the batch dims. Returns
    ``(..., L)``. Chapter *From ODE to S4*, section "Two views of one model".
    """
    u, K, D, dtype = _inputs(u, K, D)
    L = u.shape[-1]
    K = K[..., :L]
    y = sum(
        K[..., j, None] * torch.nn.functional.pad(u, (j, 0))[..., :L] for j in range(K.shape[-1])
    )
    return _skip(y, u, D).to(dtype)


def fft_conv(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor | float | None = None):
    """Causal convolution by FFT: zero-pad both to ``2L`` so the circular product is linear.

    Args:
        u: input ``(..., L)``.
        K: kernel ``(..., L_K)``; one longer than ``L`` is truncated, a shorter one zero-padded.
        D: skip term, a scalar or a tensor that broadcasts to the batch dims ``(...)`` of ``u``
            and ``K`` (without enlarging them).

    Returns:
        ``y`` ``(..., L)``, the length of ``u``, in the promoted dtype of the inputs (float16
        and bfloat16 are transformed in float32, which ``torch.fft`` needs). Real inputs give a
        real output.

    Explained in the chapter *From ODE to S4*, section "Two views of one model: recurrent and
    convolutional".
    """
    u, K, D, dtype = _inputs(u, K, D)
    L = u.shape[-1]
    K = K[..., :L]
    n = 2 * L
    if u.numel() == 0 or K.numel() == 0:  # no output element; torch.fft rejects empty batches
        y = u * K[..., :1]  # (... L), empty
    elif u.is_complex() or K.is_complex():
        y = torch.fft.ifft(torch.fft.fft(u, n=n) * torch.fft.fft(K, n=n), n=n)[..., :L]
    else:
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)[..., :L]
    return _skip(y, u, D).to(dtype)


def _inputs(u: object, K: object, D: object):
    """Check the arguments; return ``u``, ``K`` and ``D`` in the dtype to compute in, and the
    dtype of the output."""
    u, K = _checks.tensor("u", u), _checks.tensor("K", K)
    _checks.one_device(u=u, K=K, D=D)
    for name, x in (("u", u), ("K", K)):
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(f"{name} must have shape (..., L) with L >= 1, got {tuple(x.shape)}")
    batch = _checks.batch_shape(u=u.shape[:-1], K=K.shape[:-1])
    dtype = _checks.common_dtype(u, K)
    D = _checks.skip_term(D, batch, "u and K")
    if isinstance(D, torch.Tensor):
        dtype = _checks.common_dtype(u, K, D)
    work = torch.float32 if dtype in _checks.HALF else dtype
    return u.to(work), K.to(work), D if not isinstance(D, torch.Tensor) else D.to(work), dtype


def _skip(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | float | None) -> torch.Tensor:
    """``y + D u``, ``D`` a scalar or broadcast to the batch dims ``(...)``."""
    if D is None:
        return y
    return y + (D[..., None] if isinstance(D, torch.Tensor) else D) * u
