"""The recurrent view of a discrete SSM: ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = C x_k + D u_k``.

Explained in the book's chapter *From ODE to S4*, section "Two views of one model: recurrent and
convolutional". Dimension letters: L length, N state size; ``(...)`` batch dimensions.
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
        D: skip term, a scalar or a tensor that broadcasts to the batch dims ``(...)`` of the
            output (without enlarging them).
        x0: initial state ``(..., N)``; its batch dims broadcast with the others.
        return_state: also return the last state ``x_{L-1}`` ``(..., N)``.

    Returns:
        ``y`` ``(..., L)`` (and the last state), in the promoted dtype of the inputs.

    Explained in the chapter *From ODE to S4*, section "Two views of one model: recurrent and
    convolutional".
    """
    Ab, Bb, C, u = (_checks.tensor(n, t) for n, t in (("Ab", Ab), ("Bb", Bb), ("C", C), ("u", u)))
    x0 = None if x0 is None else _checks.tensor("x0", x0)
    _checks.one_device(Ab=Ab, Bb=Bb, C=C, u=u, D=D, x0=x0)
    diagonal = Ab.ndim == 1 if diagonal is None else diagonal
    N = Ab.shape[-1] if diagonal else _checks.square("Ab", Ab)
    _checks.last_dim("Bb", Bb, N, "the state size N of Ab")
    _checks.last_dim("C", C, N, "the state size N of Ab")
    if u.ndim < 1 or u.shape[-1] < 1:
        raise ValueError(f"u must have shape (..., L) with L >= 1, got {tuple(u.shape)}")
    shapes = {
        "Ab": Ab.shape[: -2 if not diagonal else -1],
        "Bb": Bb.shape[:-1],
        "C": C.shape[:-1],
        "u": u.shape[:-1],
    }
    inputs = [Ab, Bb, C, u]
    if x0 is not None:
        _checks.last_dim("x0", x0, N, "the state size N of Ab")
        shapes["x0"] = x0.shape[:-1]
        inputs.append(x0)
    batch = _checks.batch_shape(**shapes)
    D = _checks.skip_term(D, batch, "the output")
    if isinstance(D, torch.Tensor):
        inputs.append(D)
    dtype = _checks.common_dtype(*inputs)
    Ab, Bb, C, u = Ab.to(dtype), Bb.to(dtype), C.to(dtype), u.to(dtype)
    x = u.new_zeros(*batch, N) if x0 is None else x0.to(dtype).expand(*batch, N)  # (... N)
    ys = []
    for k in range(u.shape[-1]):
        Ax = Ab * x if diagonal else (Ab @ x.unsqueeze(-1)).squeeze(-1)  # (... N)
        x = Ax + Bb * u[..., k, None]  # (... N)
        ys.append((C * x).sum(-1))  # (...)
    y = torch.stack(ys, dim=-1)  # (... L)
    if D is not None:
        y = y + (D.to(dtype)[..., None] if isinstance(D, torch.Tensor) else D) * u
    return (y, x) if return_state else y
