"""The Vandermonde kernel of diagonal SSMs, written as S4D writes it.

Gu, Gupta, Goel & Ré, "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D), arXiv:2206.11893v2, Section 3 and Listing 1: for a diagonal ``Ā = exp(ΔA)``
holding one eigenvalue of each conjugate pair,

    K[h, l] = 2 Re( Σ_n v[h, n] · exp(x[h, n] · l) ),   l = 0 .. L-1,

with ``x = log Ā = ΔA`` (zero-order hold) and ``v = C ∘ B̄``: the product of ``v`` with the
Vandermonde matrix ``V[n, l] = Ā_n^l``. DSS and Mega's EMA use the same product.

Dimension letters: H channels, N state size (one of each conjugate pair), L length.
``x`` and ``v`` are complex ``(H, N)``; the kernel is real ``(H, L)``.

Explained in the book's chapter *Making SSMs fast*, section "Diagonal kernels: the Vandermonde
and Cauchy products".
"""

from __future__ import annotations

import math

import torch

# The finite stand-in for ``log 0``: ``exp(l · LOG_ZERO)`` is exactly 0 in float32 and float64
# for every ``l ≥ 1`` and 1 at ``l = 0``, the powers of ``Ā = 0``. (``log 0 = -inf`` would give
# ``exp(-inf · 0) = NaN`` at ``l = 0``.)
LOG_ZERO = -1000.0


def log_eigenvalues(Ab: torch.Tensor) -> torch.Tensor:
    """``x`` with ``exp(x l) = Ā^l`` for every integer ``l ≥ 0``: ``log Ā``, and ``LOG_ZERO``
    where ``Ā = 0`` (a decay that underflowed, e.g. ``exp(ΔA)`` at a large step ``Δ``).

    ``Ab`` ``(H, N)`` complex; returns ``(H, N)`` complex, the input of :func:`vandermonde_ref`.
    Used by :func:`ssm.s4d_kernel` and :func:`ssm.ops.s4d_step.s4d_prefill` (chapter *Making SSMs
    fast*).
    """
    zero = Ab == 0
    return torch.where(zero, LOG_ZERO, torch.log(torch.where(zero, 1, Ab)))  # (H N)


def vandermonde_ref(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """``K[h, l] = 2 Re(Σ_n v[h,n] exp(x[h,n] l))``, materializing ``exp(x l)`` ``(H, N, L)``.

    Args:
        v: ``(H, N)`` complex, the weights ``C ∘ B̄``.
        x: ``(H, N)`` complex, the log-eigenvalues ``log Ā = ΔA``.
        L: kernel length.

    Returns:
        ``K`` ``(H, L)``, real, in the real dtype of ``v``.
    """
    l = torch.arange(L, device=x.device, dtype=x.real.dtype)  # (L)
    V = torch.exp(x[..., None] * l)  # Vandermonde matrix exp(x l) = Ā^l: (H N L) complex
    return 2 * torch.einsum("hn,hnl->hl", v, V).real  # (H L)


def vandermonde_blocked(
    v: torch.Tensor, x: torch.Tensor, L: int, T: int | None = None
) -> torch.Tensor:
    """The same kernel by two-level blocking, ``O(H N √L)`` memory instead of ``O(H N L)``.

    Split ``l = l₁ T + l₂`` (``0 ≤ l₂ < T``), so that ``Ā^l = Ā^{l₁ T} · Ā^{l₂}``:

        K[h, l₁ T + l₂] = 2 Re( Σ_n W[h, l₁, n] E[h, n, l₂] ),
        W[h, l₁, n] = v[h, n] exp(x[h, n] l₁ T),   E[h, n, l₂] = exp(x[h, n] l₂),

    that is ``K = 2 (Re W @ Re E - Im W @ Im E)``: two batched real matmuls. ``T`` defaults to
    ``⌈√L⌉``, which makes ``W`` and ``E`` equally large. A PyTorch anchor for the benchmarks.

    Args:
        v, x: ``(H, N)`` complex.
        L: kernel length.
        T: inner block length.

    Returns:
        ``K`` ``(H, L)``, real.
    """
    T = math.isqrt(L - 1) + 1 if T is None else T
    L1 = -(-L // T)  # number of outer blocks ⌈L / T⌉
    rdtype = x.real.dtype
    outer = torch.arange(L1, device=x.device, dtype=rdtype) * T  # l₁ T: (L1)
    inner = torch.arange(T, device=x.device, dtype=rdtype)  # l₂: (T)
    W = v[:, None, :] * torch.exp(x[:, None, :] * outer[:, None])  # (H L1 N) complex
    E = torch.exp(x[..., None] * inner)  # (H N T) complex
    K = 2 * (W.real @ E.real - W.imag @ E.imag)  # (H L1 T)
    return K.reshape(K.shape[0], L1 * T)[:, :L]  # (H L)


def vandermonde_transpose_ref(g: torch.Tensor, x: torch.Tensor, weighted: bool = False):
    """The transposed product ``S[..., h, n] = Σ_l g[..., h, l] exp(x[h, n] l)``.

    With ``weighted``, also ``S¹[..., h, n] = Σ_l g[..., h, l] · l · exp(x[h, n] l)``. These give
    the gradients of :func:`vandermonde_ref` (``dv = 2 conj(S)``, ``dx = 2 conj(v S¹)``) and the
    final state of a diagonal SSM after ``L`` steps (``g`` the reversed input).

    Args:
        g: ``(..., H, L)`` real.
        x: ``(H, N)`` complex.

    Returns:
        ``S`` ``(..., H, N)`` complex, and ``S¹`` when ``weighted``.
    """
    L = g.shape[-1]
    l = torch.arange(L, device=x.device, dtype=x.real.dtype)  # (L)
    V = torch.exp(x[..., None] * l)  # (H N L) complex
    S = torch.einsum("...hl,hnl->...hn", g.to(V.dtype), V)  # (... H N)
    if not weighted:
        return S
    return S, torch.einsum("...hl,hnl->...hn", g.to(V.dtype), V * l)  # (... H N) twice
