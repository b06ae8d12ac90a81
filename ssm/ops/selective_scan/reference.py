"""The selective scan of Mamba, written as the paper writes it.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv:2312.00752v2,
Algorithm 2 and eqs. (1)-(2). For every batch element and channel ``d``, with a diagonal ``A``::

    Δ_t = softplus(δ_t + bias)            (softplus and bias optional)
    Ā_t = exp(Δ_t A)                      zero-order hold of A, eq. (4)
    B̄_t = Δ_t B_t                         the simplified (Euler) discretization of B
    h_t = Ā_t h_{t-1} + B̄_t u_t           eq. (2a), h_{-1} = 0
    y_t = C_t h_t + D u_t                 eq. (2b), plus the skip connection D
    out_t = y_t · silu(z_t)               the gate, when z is given

Same semantics and layouts as ``mamba_ssm``'s ``selective_scan_ref`` (real ``A``, input-dependent
``B`` and ``C``). Dimension letters: B batch, D channels (``dim``), L length, N state size,
G groups (each group of ``B``/``C`` serves ``D / G`` consecutive channels).

Explained in the book's chapter *Making SSMs fast* (``book/making_ssms_fast.ipynb``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import step_size


def _work_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float32, or float64 when an input is float64: the state is never kept in 16 bits."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _per_channel(M: torch.Tensor, dim: int, grouped: bool) -> torch.Tensor:
    """``B`` or ``C``, ``(B, N, ...)`` or grouped ``(B, G, N, ...)``, as ``(B, 1, N, ...)``
    (broadcast over the channels) or ``(B, D, N, ...)``: group ``g`` serves ``D / G`` channels."""
    if not grouped:
        return M[:, None]
    groups = M.shape[1]
    return M.repeat_interleave(dim // groups, dim=1) if groups else M  # G = 0 only for D = 0


def _per_channel_bias(bias: torch.Tensor | None, ndim: int, dtype: torch.dtype):
    """``bias`` ``(D,)`` shaped to broadcast over dimension 1 of a ``(B, D, ...)`` tensor."""
    return None if bias is None else bias.to(dtype).view((-1,) + (1,) * (ndim - 2))


def _ssm_step(
    h: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    u: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of eqs. (2a)-(2b) with ZOH for ``A`` and Euler for ``B``.

    Shapes: ``h`` (B, D, N); ``dt``, ``u`` (B, D); ``A`` (D, N); ``B``, ``C`` (B, D, N) or
    (B, 1, N). Returns the new ``h`` (B, D, N) and ``C h`` (B, D).
    """
    A_bar = torch.exp(dt[..., None] * A)  # (B D N)
    B_bar = dt[..., None] * B  # (B D N)
    h = A_bar * h + B_bar * u[..., None]  # (B D N)   eq. (2a)
    return h, (C * h).sum(-1)  # (B D)            eq. (2b) without D


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan, one time step after the other (Algorithm 2 of arXiv:2312.00752v2).

    Args:
        u: input ``(B, D, L)``.
        delta: step before bias and softplus, ``(B, D, L)``.
        A: diagonal state matrices ``(D, N)``, real (negative for a stable SSM).
        B: input matrices ``(B, N, L)`` or ``(B, G, N, L)``.
        C: output matrices ``(B, N, L)`` or ``(B, G, N, L)``.
        D: skip ``(D,)``.
        z: gate ``(B, D, L)``; the output is multiplied by ``silu(z)``.
        delta_bias: ``(D,)``, added to ``delta`` before the softplus.
        delta_softplus: apply ``softplus`` to ``delta + delta_bias``.
        return_last_state: also return ``h_{L-1}``.

    Returns:
        ``out`` ``(B, D, L)`` in ``u``'s dtype, and with ``return_last_state`` the last state
        ``(B, D, N)`` in float32 (float64 for float64 inputs). The state and all sums are kept in
        at least float32 whatever the input dtype.
    """
    work = _work_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, _ = u.shape
    bias = _per_channel_bias(delta_bias, delta.ndim, work)  # (D 1)
    dt = step_size(delta.to(work), bias, delta_softplus)  # (B D L)   Δ = softplus(δ + bias)
    x = u.to(work)  # (B D L)
    A = A.to(work)  # (D N)
    B = B.to(work)  # (B N L) or (B G N L)
    C = C.to(work)
    h = x.new_zeros(batch, dim, A.shape[1])  # (B D N)
    ys = []
    # one unbind per tensor: indexing [..., t] would cost a full-size gradient per step
    steps = zip(dt.unbind(-1), B.unbind(-1), C.unbind(-1), x.unbind(-1), strict=True)
    for dt_t, B_t, C_t, x_t in steps:
        B_t = _per_channel(B_t, dim, B.ndim == 4)  # (B D N) or (B 1 N)
        C_t = _per_channel(C_t, dim, C.ndim == 4)
        h, y_t = _ssm_step(h, dt_t, A, B_t, C_t, x_t)
        ys.append(y_t)
    y = torch.stack(ys, dim=-1)  # (B D L)
    if D is not None:
        y = y + D.to(work)[:, None] * x
    if z is not None:
        y = y * F.silu(z.to(work))
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out


def selective_state_update_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> torch.Tensor:
    """One decoding step of the selective SSM: eqs. (2a)-(2b) at a single time ``t``.

    Same layout as ``mamba_ssm``'s ``selective_state_update``.

    Args:
        state: ``h_{t-1}`` ``(B, D, N)``, overwritten in place with ``h_t``.
        x: input ``u_t`` ``(B, D)``.
        dt: step before bias and softplus, ``(B, D)``.
        A: ``(D, N)``, real.
        B, C: ``(B, N)`` or ``(B, G, N)``.
        D: skip ``(D,)``.
        z: gate ``(B, D)``.
        dt_bias: ``(D,)``.
        dt_softplus: apply ``softplus`` to ``dt + dt_bias``.

    Returns:
        ``y_t`` ``(B, D)`` in ``x``'s dtype. Running :func:`selective_scan_ref` with
        ``return_last_state=True`` on a prefix and then this step by step gives the full scan.
    """
    work = _work_dtype(state, x, dt, A, B, C, D, z, dt_bias)
    dim = x.shape[1]
    bias = _per_channel_bias(dt_bias, dt.ndim, work)  # (D,)
    step = step_size(dt.to(work), bias, dt_softplus)  # (B D)
    u = x.to(work)  # (B D)
    B_t = _per_channel(B.to(work), dim, B.ndim == 3)  # (B D N) or (B 1 N)
    C_t = _per_channel(C.to(work), dim, C.ndim == 3)
    h, y = _ssm_step(state.to(work), step, A.to(work), B_t, C_t, u)
    state.copy_(h)
    if D is not None:
        y = y + D.to(work) * u
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(x.dtype)
