"""The recurrent view of a discrete SSM: ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = C x_k + D u_k``.

Explained in Chapter 1 of the book. Dimension letters: L length, N state size.
"""

from __future__ import annotations

import torch

from . import _checks


def recurrence(
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | float | None = None,
    *,
    diagonal: bool | None = None,
    x0: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run the SSM step by step from ``x_{-1} = x0`` (zero by default).

    Args:
        Ab: dense ``(..., N, N)`` or diagonal ``(..., N)`` (1-D, or ``diagonal=True``).
        Bb, C: ``(..., N)``.
        u: input ``(..., L)``; its batch dims broadcast with the system's.
        D: skip term, a scalar or a tensor broadcastable to ``u``'s batch dims.
        x0: initial state ``(..., N)``.
        return_state: also return the last state ``x_{L-1}`` ``(..., N)``.

    Returns:
        ``y`` ``(..., L)`` (and the last state).
    """
    Ab, Bb, C, u = (_checks.tensor(n, t) for n, t in (("Ab", Ab), ("Bb", Bb), ("C", C), ("u", u)))
    diagonal = Ab.ndim == 1 if diagonal is None else diagonal
    N = Ab.shape[-1] if diagonal else _checks.square("Ab", Ab)
    _checks.last_dim("Bb", Bb, N, "the state size N of Ab")
    _checks.last_dim("C", C, N, "the state size N of Ab")
    if u.ndim < 1 or u.shape[-1] < 1:
        raise ValueError(f"u must have shape (..., L) with L >= 1, got {tuple(u.shape)}")
    dtype = _checks.common_dtype(Ab, Bb, C, u)
    Ab, Bb, C, u = Ab.to(dtype), Bb.to(dtype), C.to(dtype), u.to(dtype)
    batch = torch.broadcast_shapes(
        Ab.shape[: -2 if not diagonal else -1], Bb.shape[:-1], C.shape[:-1], u.shape[:-1]
    )
    x = u.new_zeros(*batch, N) if x0 is None else x0.to(dtype).expand(*batch, N)
    ys = []
    for k in range(u.shape[-1]):
        Ax = Ab * x if diagonal else (Ab @ x.unsqueeze(-1)).squeeze(-1)  # (... N)
        x = Ax + Bb * u[..., k, None]  # (... N)
        ys.append((C * x).sum(-1))  # (...)
    y = torch.stack(ys, dim=-1)  # (... L)
    if D is not None:
        y = y + (D[..., None] if isinstance(D, torch.Tensor) else D) * u
    return (y, x) if return_state else y
