"""Discretization: from the continuous SSM ``x' = A x + B u`` to ``x_k = Ā x_{k-1} + B̄ u_k``.

With step ``Δ`` (written ``dt``):

- ``zoh`` (zero-order hold, exact for piecewise-constant input):
  ``Ā = exp(ΔA)``, ``B̄ = A⁻¹ (exp(ΔA) - I) B`` (computed without inverting ``A``).
- ``bilinear`` (trapezoid / Tustin, S4 eq. (3)):
  ``Ā = (I - Δ/2 A)⁻¹ (I + Δ/2 A)``, ``B̄ = (I - Δ/2 A)⁻¹ Δ B``.
- ``euler`` (forward): ``Ā = I + ΔA``, ``B̄ = ΔB``.
- ``backward_euler``: ``Ā = (I - ΔA)⁻¹``, ``B̄ = (I - ΔA)⁻¹ ΔB``.

This module is the one place these formulas are written: the structured kernels
(:func:`ssm.s4_kernel`, :func:`ssm.s4d_kernel`) call :func:`discretize`. Explained in the book's
chapter *From ODE to S4*, section "Discretization: from a differential equation to a sequence
model". Dimension letters: N state size; ``(...)`` batch dimensions.
"""

from __future__ import annotations

import torch

from . import _checks

METHODS = ("zoh", "bilinear", "euler", "backward_euler")
# Half precision has no matrix exponential or LU solve on the CPU, and too few digits for them
# anywhere: inputs in these dtypes are discretized in float32 and returned in their own dtype.


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
        dt: step ``Δ``, finite and ``> 0``: a float or a real tensor broadcastable to the batch
            dims ``(...)``.
        method: ``"zoh"``, ``"bilinear"``, ``"euler"`` or ``"backward_euler"``.
        diagonal: whether ``A`` holds diagonals; ``None`` means "only if ``A`` is 1-D".

    Returns:
        ``(Ab, Bb)``: ``Ab`` shaped like ``A`` and ``Bb`` ``(..., N)``, batch dims broadcast, in
        the promoted dtype of ``A`` and ``B`` (float16 and bfloat16 are computed in float32).

    Explained in the chapter *From ODE to S4*, section "Discretization: from a differential
    equation to a sequence model".
    """
    A = _checks.tensor("A", A)
    B = _checks.tensor("B", B)
    _checks.choice("method", method, METHODS)
    _checks.one_device(A=A, B=B, dt=dt)
    diagonal = A.ndim == 1 if diagonal is None else diagonal
    N = A.shape[-1] if diagonal else _checks.square("A", A)
    _checks.last_dim("B", B, N, "the state size N of A")
    batch = _checks.batch_shape(A=A.shape[: -1 if diagonal else -2], B=B.shape[:-1])
    dtype = _checks.common_dtype(A, B)
    work = torch.promote_types(dtype, torch.float32) if dtype in _checks.HALF else dtype
    step = _checks.positive_step("dt", dt, A)
    if not _checks.broadcasts(step.shape, batch):
        raise ValueError(
            f"dt must be a float or a tensor that broadcasts with the batch dims {tuple(batch)} "
            f"of A and B, got shape {tuple(step.shape)}"
        )
    A, B = A.to(work), B.to(work)
    step = step.to(work.to_real() if work.is_complex else work)
    if diagonal:
        Ab, Bb = torch.broadcast_tensors(*_diagonal(A, B, step[..., None], method))  # (... N)
    else:
        Ab, Bb = _dense(A, B, step[..., None, None], method)
    return Ab.to(dtype), Bb.to(dtype)


def _diagonal(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str):
    dA = dt * A  # (... N)
    if method == "zoh":
        Ab = torch.exp(dA)
        return Ab, expm1_over_x(dA) * dt * B
    if method == "bilinear":
        return (1 + dA / 2) / (1 - dA / 2), dt * B / (1 - dA / 2)
    if method == "euler":
        return 1 + dA, dt * B
    return 1 / (1 - dA), dt * B / (1 - dA)


def expm1_over_x(x: torch.Tensor) -> torch.Tensor:
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
    dA, dB = dt * A, dt[..., 0] * B  # (... N N), (... N)
    batch = torch.broadcast_shapes(dA.shape[:-2], dB.shape[:-1])
    dA, dB = dA.expand(*batch, N, N), dB.expand(*batch, N)
    if method == "zoh":
        return _zoh_dense(dA, dB)
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    if method == "euler":
        return eye + dA, dB
    left = eye - dA / 2 if method == "bilinear" else eye - dA  # (... N N)
    right = eye + dA / 2 if method == "bilinear" else eye
    Ab = torch.linalg.solve(left, right.expand_as(left))  # (... N N)
    Bb = torch.linalg.solve(left, dB[..., None])[..., 0]  # (... N)
    return Ab, Bb


def _zoh_dense(dA: torch.Tensor, dB: torch.Tensor):
    """``expm([[ΔA, ΔB], [0, 0]]) = [[Ā, B̄], [0, 1]]`` (Van Loan), valid for singular ``A``."""
    N = dA.shape[-1]
    M = dA.new_zeros(*dA.shape[:-2], N + 1, N + 1)
    M[..., :N, :N] = dA
    M[..., :N, N] = dB
    E = torch.linalg.matrix_exp(M)  # (... N+1 N+1)
    return E[..., :N, :N], E[..., :N, N]
