"""Discretization: from the continuous SSM ``x' = A x + B u`` to ``x_k = Ā x_{k-1} + B̄ u_k``.

With step ``Δ`` (written ``dt``):

- ``zoh`` (zero-order hold, exact for piecewise-constant input):
  ``Ā = exp(ΔA)``, ``B̄ = A⁻¹ (exp(ΔA) - I) B`` (computed without inverting ``A``).
- ``bilinear`` (trapezoid / Tustin, S4 eq. (3)):
  ``Ā = (I - Δ/2 A)⁻¹ (I + Δ/2 A)``, ``B̄ = (I - Δ/2 A)⁻¹ Δ B``.
- ``euler`` (forward): ``Ā = I + ΔA``, ``B̄ = ΔB``.
- ``backward_euler``: ``Ā = (I - ΔA)⁻¹``, ``B̄ = (I - ΔA)⁻¹ ΔB``.

Explained in Chapter 1 of the book.
"""

from __future__ import annotations

import torch

from . import _checks

METHODS = ("zoh", "bilinear", "euler", "backward_euler")


def discretize(
    A: torch.Tensor,
    B: torch.Tensor,
    dt: float | torch.Tensor,
    method: str = "zoh",
    *,
    diagonal: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discretize ``(A, B)`` with step ``dt`` by ``method``.

    Args:
        A: dense ``(..., N, N)`` or diagonal ``(..., N)`` state matrix, real or complex. A 1-D
            ``A`` is diagonal; for a batch of diagonals pass ``diagonal=True``.
        B: ``(..., N)`` input vector.
        dt: step ``Δ > 0``: a float or a real tensor broadcastable to the batch dims ``(...)``.
        method: ``"zoh"``, ``"bilinear"``, ``"euler"`` or ``"backward_euler"``.
        diagonal: whether ``A`` holds diagonals; ``None`` means "only if ``A`` is 1-D".

    Returns:
        ``(Ab, Bb)``: ``Ab`` shaped like ``A`` (batch dims broadcast), ``Bb`` ``(..., N)``.
    """
    A = _checks.tensor("A", A)
    B = _checks.tensor("B", B)
    _checks.choice("method", method, METHODS)
    diagonal = A.ndim == 1 if diagonal is None else diagonal
    N = A.shape[-1] if diagonal else _checks.square("A", A)
    _checks.last_dim("B", B, N, "the state size N of A")
    dtype = _checks.common_dtype(A, B)
    A, B = A.to(dtype), B.to(dtype)
    dt = _checks.positive_step("dt", dt, A).to(dtype.to_real() if dtype.is_complex else dtype)
    if diagonal:
        return _diagonal(A, B, dt[..., None], method)
    return _dense(A, B, dt[..., None, None], method)


def _diagonal(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str):
    dA = dt * A  # (... N)
    if method == "zoh":
        Ab = torch.exp(dA)
        return Ab, _expm1_over_x(dA) * dt * B
    if method == "bilinear":
        return (1 + dA / 2) / (1 - dA / 2), dt * B / (1 - dA / 2)
    if method == "euler":
        return 1 + dA, (dt * B).expand_as(dA + B)
    return 1 / (1 - dA), dt * B / (1 - dA)


def _expm1_over_x(x: torch.Tensor) -> torch.Tensor:
    """``(exp(x) - 1) / x``, equal to 1 at ``x = 0`` and accurate near it."""
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(x), x)
    series = 1 + x / 2 + x * x / 6
    return torch.where(
        small,
        series,
        torch.expm1(safe) / safe if not x.is_complex() else (torch.exp(safe) - 1) / safe,
    )


def _dense(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str):
    N = A.shape[-1]
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    dA = dt * A  # (... N N)
    dB = dt[..., 0] * B  # (... N)
    if method == "zoh":
        return _zoh_dense(dA, dB)
    if method == "euler":
        return eye + dA, dB.expand(dA.shape[:-1])
    left = eye - dA / 2 if method == "bilinear" else eye - dA
    right = eye + dA / 2 if method == "bilinear" else eye
    Ab = torch.linalg.solve(left, right.expand_as(left))
    Bb = torch.linalg.solve(left, dB.expand(left.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return Ab, Bb


def _zoh_dense(dA: torch.Tensor, dB: torch.Tensor):
    """``expm([[ΔA, ΔB], [0, 0]]) = [[Ā, B̄], [0, 1]]`` (Van Loan), valid for singular ``A``."""
    N = dA.shape[-1]
    batch = torch.broadcast_shapes(dA.shape[:-2], dB.shape[:-1])
    M = dA.new_zeros(*batch, N + 1, N + 1)
    M[..., :N, :N] = dA
    M[..., :N, N] = dB
    E = torch.linalg.matrix_exp(M)
    return E[..., :N, :N], E[..., :N, N]
