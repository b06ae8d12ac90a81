"""The recurrent view of a discrete SSM: ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = C x_k + D u_k``.

- :func:`recurrence`: any ``(Ā, B̄, C)``. Explained in the book's chapter *From ODE to S4*,
  section "Two views of one model: recurrent and convolutional".
- :func:`dss_recurrence` and :func:`dss_step_system`: the recurrent views of DSS's two kernels
  (:func:`ssm.dss_kernel`), with DSS-softmax's two stable cases (chapter *DSS*).

Dimension letters: L length, N state size, H channels; ``(...)`` batch dimensions.
"""

from __future__ import annotations

import torch

from . import _checks
from .discretize import expm1_over_x
from .kernels import DSS_EPS, dss_inputs, reciprocal, softmax_normalizer


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


def dss_step_system(
    Lambda: torch.Tensor,
    W: torch.Tensor,
    dt: float | torch.Tensor,
    L: int,
    k: int,
    variant: str = "exp",
    *,
    eps: float = DSS_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Ā, B̄_k, C_k)`` of step ``k`` of DSS's recurrent view, each ``(H, N)`` complex.

    Step ``k`` is ``x̃_k = Ā x̃_{k-1} + B̄_k u_k``, ``y_k = 2 Re(C_k x̃_k)`` (DSS paper, §3.3):

    - ``exp``: ``Ā = e^{λΔ}``, ``B̄ = (e^{λΔ} - 1)/λ``, ``C = W̃``, the same at every step;
    - ``softmax``, ``Re λ ≤ 0``: ``x̃_k = e^{λΔ} x̃_{k-1} + u_k`` and
      ``x_k = x̃_k (e^{λΔ} - 1) / (λ (e^{λΔL} - 1))``: ``Ā = e^{λΔ}``, ``B̄ = 1``,
      ``C = W / (λ S)``;
    - ``softmax``, ``Re λ > 0``: ``x̃_k = x̃_{k-1} + e^{-kλΔ} u_k`` and
      ``x_k = x̃_k e^{λΔ(k-(L-1))} (e^{-λΔ} - 1) / (λ (e^{-λΔL} - 1))``: ``Ā = 1``,
      ``B̄_k = e^{-kλΔ}``, ``C_k = W e^{λΔ(k-(L-1))} / (λ S)``.

    ``S`` is the softmax's row sum (:func:`ssm.kernels.softmax_normalizer`); the softmax
    recurrence holds for ``k < L`` only, ``L`` the length it normalizes over. No factor
    overflows: every exponent has a real part ``≤ 0``.
    """
    Lambda, W, dt = dss_inputs(Lambda, W, dt, L, variant)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < L:
        raise ValueError(f"k must be an integer step in [0, L) = [0, {L}), got {k!r}")
    Ab, Bb, C = _dss_steps(Lambda, W, dt, L, torch.tensor([k]), variant, eps)
    return Ab, Bb[..., 0], C[..., 0]


def _dss_steps(Lambda, W, dt, L, k, variant, eps):
    """:func:`dss_step_system` at the steps ``k`` ``(T,)``: ``Ā`` ``(H, N)``, ``B̄`` and ``C``
    ``(H, N, T)``, from checked arguments (``dt`` ``(H, 1)``)."""
    dL = Lambda * dt  # (H N)
    k = k.to(device=dL.device, dtype=dL.real.dtype)  # (T)
    if variant == "exp":
        ones = torch.ones(len(k), dtype=dL.dtype, device=dL.device)  # (T)
        return torch.exp(dL), (expm1_over_x(dL) * dt)[..., None] * ones, W[..., None] * ones
    backward, x, S = softmax_normalizer(dL, L)  # (H N) each
    C = (W * reciprocal(Lambda, eps) * reciprocal(S, eps))[..., None]  # (H N 1)
    back = backward[..., None]  # (H N 1)
    Ab = torch.where(backward, torch.ones_like(dL), torch.exp(dL))  # (H N)
    Bb = torch.where(back, torch.exp(x[..., None] * k), 1)  # (H N T), x = -λΔ where backward
    C = torch.where(back, C * torch.exp(x[..., None] * (L - 1 - k)), C)  # (H N T)
    return Ab, Bb, C


def dss_recurrence(
    Lambda: torch.Tensor,
    W: torch.Tensor,
    dt: float | torch.Tensor,
    u: torch.Tensor,
    variant: str = "exp",
    *,
    L: int | None = None,
    eps: float = DSS_EPS,
) -> torch.Tensor:
    """DSS run step by step (:func:`dss_step_system`): equal to ``u`` convolved with
    :func:`ssm.dss_kernel`, without overflow for any ``Re λ``.

    Args:
        Lambda, W: ``(H, N)`` complex.
        dt: ``Δ > 0``, a float or ``(H,)``.
        u: input ``(..., H, T)`` real, ``T ≤ L``.
        variant: ``"exp"`` or ``"softmax"``.
        L: the kernel length the softmax normalizes over; the input length ``T`` by default.

    Returns:
        ``y`` ``(..., H, T)`` real, ``y_k = Σ_{j≤k} K_j u_{k-j}``.
    """
    u = _checks.tensor("u", u, complex_ok=False)
    if u.ndim < 2 or u.shape[-2] != Lambda.shape[0] or u.shape[-1] < 1:
        raise ValueError(
            f"u must have shape (..., H, T) with H={Lambda.shape[0]} (the rows of Lambda) and "
            f"T >= 1, got {tuple(u.shape)}"
        )
    T = u.shape[-1]
    L = T if L is None else L
    if T > _checks.positive_int("L", L):
        raise ValueError(f"u has length {T}, longer than the kernel length L={L}")
    Lambda, W, dt = dss_inputs(Lambda, W, dt, L, variant)
    Ab, Bb, C = _dss_steps(Lambda, W, dt, L, torch.arange(T), variant, eps)  # (H N) (H N T) x2
    inflow = Bb * u[..., None, :].to(Bb.dtype)  # (... H N T): B̄_k u_k
    x = torch.zeros_like(inflow[..., 0])  # (... H N)
    ys = []
    for k in range(T):
        x = Ab * x + inflow[..., k]  # (... H N)
        ys.append(2 * (C[..., k] * x).sum(-1).real)  # (... H)
    return torch.stack(ys, dim=-1)  # (... H T)
