"""HiPPO operators: the state matrices that make an SSM remember its input.

Conventions follow the S4 authors' reference code (``transition`` and ``rank_correction`` in their
``hippo`` module): ``A`` is ``(N, N)``, ``B`` is ``(N,)``, and for each measure there is a low-rank
``P`` (``(rank, N)``) such that ``A + Pᵀ P`` is normal. Explained in the book's chapter *From ODE
to S4*, section "HiPPO: a state matrix that remembers".

Gu et al., "HiPPO: Recurrent Memory with Optimal Polynomial Projections", NeurIPS 2020
(arXiv:2008.07669); Gu et al., "How to Train Your HiPPO", ICLR 2023 (arXiv:2206.12037).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from . import _checks

MEASURES = ("legs", "legt", "lagt", "fout")


def transition(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO matrices ``(A, B)`` of the ODE ``x'(t) = A x(t) + B u(t)``, in float64.

    - ``legs`` (scaled Legendre, HiPPO eq. (2) in S4):
      ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)`` for ``n > k``, ``-(n+1)`` for ``n = k``, 0 above;
      ``B[n] = sqrt(2n+1)``.
    - ``legt`` (translated Legendre, window of length 1, halved for timescale):
      ``A[n, k] = -½ sqrt(2n+1) sqrt(2k+1) · (1 if n >= k else (-1)^(n-k))``;
      ``B[n] = ½ sqrt(2n+1)``.
    - ``lagt`` (translated Laguerre): ``A = I/2 - tril(1)``, ``B = 1``.
    - ``fout`` (truncated Fourier, "How to Train Your HiPPO"): rotations at frequencies
      ``π·k`` on pairs of coordinates minus the rank-one term ``B Bᵀ``, with
      ``B = (1, 0, √2, 0, √2, 0, ...)`` (cosines weighted, sines not).

    Returns ``A`` of shape ``(N, N)`` and ``B`` of shape ``(N,)``.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _check_size(measure, N)
    q = np.arange(N, dtype=np.float64)
    row, col = np.meshgrid(q, q, indexing="ij")
    if measure == "legs":
        r = np.sqrt(2 * q + 1)
        A = -np.where(row > col, np.outer(r, r), 0.0) - np.diag(q + 1)
        B = r
    elif measure == "legt":
        r = np.sqrt(2 * q + 1)
        sign = np.where(row >= col, 1.0, (-1.0) ** (row - col))
        A = -0.5 * np.outer(r, r) * sign
        B = 0.5 * r
    elif measure == "lagt":
        A = np.eye(N) / 2 - np.tril(np.ones((N, N)))
        B = np.ones(N)
    else:
        freqs = np.arange(N // 2)
        d = np.stack([np.zeros(N // 2), freqs], axis=-1).reshape(-1)[1:]
        A = np.pi * (-np.diag(d, 1) + np.diag(d, -1))
        B = _fout_b(N)
        A = A - np.outer(B, B)
    return torch.from_numpy(np.ascontiguousarray(A)), torch.from_numpy(np.ascontiguousarray(B))


def _check_size(measure: str, N: int) -> None:
    _checks.choice("measure", measure, MEASURES)
    _checks.positive_int("N", N)
    if measure == "fout" and N % 2:
        raise ValueError(f"N must be even for measure 'fout' (cosine/sine pairs), got {N}")


def _fout_b(N: int) -> np.ndarray:
    B = np.zeros(N)
    B[0::2] = math.sqrt(2)
    B[0] = 1.0
    return B


def rank_correction(measure: str, N: int) -> torch.Tensor:
    """The low-rank ``P`` (``(rank, N)``, float64) that makes ``A + Pᵀ P`` normal.

    Rank 1 for ``legs``, ``lagt`` and ``fout``; rank 2 for ``legt``.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _check_size(measure, N)
    q = np.arange(N, dtype=np.float64)
    if measure == "legs":
        P = np.sqrt(q + 0.5)[None]
    elif measure == "legt":
        r = np.sqrt(2 * q + 1) / math.sqrt(2)
        P = np.stack([np.where(q % 2 == 1, r, 0.0), np.where(q % 2 == 0, r, 0.0)])
    elif measure == "lagt":
        P = np.full((1, N), math.sqrt(0.5))
    else:
        P = _fout_b(N)[None]
    return torch.from_numpy(P)


def nplr(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal-plus-low-rank form of a HiPPO matrix (S4 paper, Theorem 1), complex128.

    ``A = V (diag(w) - Σ_r p_r p_rᴴ) Vᴴ`` with ``V`` unitary. ``A + Pᵀ P`` is normal and equal to
    ``c·I + S`` with ``S`` skew-symmetric, so its eigenvalues are ``c + iμ`` where ``μ`` are the
    eigenvalues of the Hermitian ``-iS`` (computed by ``eigh``, hence ``V`` exactly unitary).

    Returns ``w`` ``(N,)``, ``P`` ``(rank, N)`` and ``B`` ``(N,)`` expressed in the eigenbasis
    (``P ← Vᴴ P``, ``B ← Vᴴ B``), and ``V`` ``(N, N)``. Chapter *From ODE to S4*, sections
    "HiPPO: a state matrix that remembers" and "Computing the kernel fast: the S4 algorithm".
    """
    A, B = transition(measure, N)
    P = rank_correction(measure, N)
    normal = A + P.T @ P  # (N N)
    c = torch.diagonal(normal).mean()
    skew = normal - c * torch.eye(N, dtype=normal.dtype)
    if not torch.allclose(skew, -skew.T, atol=1e-8 * max(1.0, float(skew.abs().max()))):
        raise RuntimeError(f"A + PᵀP is not identity plus skew-symmetric for measure {measure!r}")
    mu, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # (N) (N N)
    w = c + 1j * mu  # (N) complex
    Vh = V.conj().T
    return w, (Vh @ P.to(V.dtype).T).T, Vh @ B.to(V.dtype), V


def legs_memory(u: torch.Tensor, N: int) -> torch.Tensor:
    """Online LegS projection of a sampled signal: the HiPPO state after each sample.

    The scaled-Legendre ODE ``x'(t) = (1/t)(A x + B u)`` (HiPPO eq. (19)) is discretized with the
    bilinear method at step ``1/k`` at sample ``k = 1..L`` (time and step scale together, so the
    sampling period drops out):
    ``(I - A/(2k)) x_k = (I + A/(2k)) x_{k-1} + (B/k) u_k``, a triangular solve since LegS's
    ``A`` is lower triangular. ``u``: ``(L,)`` real. Returns the states ``(L, N)``, float64, on
    ``u``'s device.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _checks.tensor("u", u, complex_ok=False)
    _checks.one_device(u=u)
    if u.ndim != 1 or u.shape[0] < 1:
        raise ValueError(
            f"u must be a 1-D signal (L,) of at least one sample, got shape {tuple(u.shape)}"
        )
    A, B = transition("legs", N)
    eye = torch.eye(N, dtype=torch.float64)
    A, B, eye = A.to(u.device), B.to(u.device), eye.to(u.device)
    u = u.to(torch.float64)
    x = torch.zeros(N, 1, dtype=torch.float64, device=u.device)
    states = []
    for k in range(1, u.shape[0] + 1):
        rhs = x + (A @ x) / (2 * k) + (B[:, None] / k) * u[k - 1]  # (N 1)
        x = torch.linalg.solve_triangular(eye - A / (2 * k), rhs, upper=False)  # (N 1)
        states.append(x[:, 0])
    return torch.stack(states)


def legs_reconstruct(x: torch.Tensor, num: int) -> torch.Tensor:
    """Evaluate the signal a LegS state remembers on ``num`` evenly spaced points of ``[0, t]``.

    ``f(s·t) ≈ Σ_n x_n sqrt(2n+1) P_n(2s - 1)`` for ``s ∈ [0, 1]`` (``s = 1`` is the present).
    ``x``: ``(..., N)``. Returns ``(..., num)``, float64.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _checks.tensor("x", x, complex_ok=False)
    _checks.one_device(x=x)
    if x.ndim < 1:
        raise ValueError("x must have shape (..., N), got a scalar")
    _checks.positive_int("num", num)
    N = x.shape[-1]
    s = np.linspace(0.0, 1.0, num)
    basis = special.eval_legendre(np.arange(N)[:, None], 2 * s[None] - 1)  # (N num)
    basis = basis * np.sqrt(2 * np.arange(N) + 1)[:, None]
    return x.to(torch.float64) @ torch.from_numpy(basis).to(x.device)
