"""PyTorch references of SSD, the state-space layer of Mamba-2 (Dao & Gu, "Transformers are SSMs",
arXiv:2405.21060v1). Explained in the book's chapter *Making SSMs fast*
(``book/making_ssms_fast.ipynb``); ``README.md`` beside this file has the derivation.

Dimension letters: B batch, L length, H heads, P head dim, N state size, G groups of heads sharing
``B`` and ``C`` (head ``h`` reads group ``h // (H // G)``), Q chunk size, K number of chunks.

All three views compute, per batch and head, with a scalar ``A < 0`` per head,

    dt_t = softplus(dt_t + dt_bias)          (bias and softplus optional)
    h_t  = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ   (P × N state, h_0 = initial_states)
    y_t  = h_t C_t + D x_t                   (D optional)
    out  = y · silu(z)                       (z optional)

with the layouts of ``mamba_ssm``'s ``mamba_chunk_scan_combined``: x ``(B, L, H, P)``, dt
``(B, L, H)``, A ``(H,)``, B and C ``(B, L, G, N)``, D ``(H,)`` or ``(H, P)``, z ``(B, L, H, P)``,
dt_bias ``(H,)``, initial and final states ``(B, H, P, N)``. (``mamba_ssm`` also clamps ``dt`` to
``dt_limit``, by default ``[0, inf)``, which leaves valid, non-negative steps as they are; here
``dt`` is used as given.)

They compute in float32 at least (float64 stays float64); ``out`` has the dtype of ``x``, the final
states the compute dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..common import step_size


def skip_and_gate(
    y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None
) -> torch.Tensor:
    """``(y + D x) · silu(z)``: the skip connection, then the gate, in the dtype of ``y``.
    y, x, z: ``(..., H, P)``."""
    if D is not None:
        y = y + x * (D[:, None] if D.ndim == 1 else D).to(y.dtype)  # (..., H, P)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _heads_by_group(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Split the head axis (dim 2) of ``(B, L, H, ...)`` into ``(B, L, G, H/G, ...)``."""
    return t.unflatten(2, (groups, t.shape[2] // groups))


def ssd_recurrent(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    dt_softplus: bool = False,
    return_final_states: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD by its definition, one step at a time (the linear "SSM mode", eq. (1) with scalar
    ``A_t = exp(dt_t A)``, ``B̄_t = dt_t B_t``): ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ``,
    ``y_t = h_t C_t``. ``chunk_size`` is accepted for a common signature and unused.

    Shapes: x ``(B, L, H, P)``, dt ``(B, L, H)``, A ``(H,)``, B, C ``(B, L, G, N)``; returns out
    ``(B, L, H, P)`` and, with ``return_final_states``, the last state ``(B, H, P, N)``.
    """
    dtype = _compute_dtype(x)
    batch, length, heads, headdim = x.shape
    groups, nstate = B.shape[2:]
    dt = step_size(dt.to(dtype), dt_bias, dt_softplus)  # (B, L, H)
    Bh = B.to(dtype).repeat_interleave(heads // groups, dim=2)  # (B, L, H, N)
    Ch = C.to(dtype).repeat_interleave(heads // groups, dim=2)  # (B, L, H, N)
    xs = x.to(dtype)
    h = x.new_zeros(batch, heads, headdim, nstate, dtype=dtype)
    if initial_states is not None:
        h = initial_states.to(dtype)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A.to(dtype))  # (B, H)
        inject = (dt[:, t, :, None] * xs[:, t])[..., None] * Bh[:, t, :, None, :]  # (B, H, P, N)
        h = decay[..., None, None] * h + inject
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    y = torch.stack(ys, dim=1)  # (B, L, H, P)
    out = skip_and_gate(y, xs, D, z).to(x.dtype)
    return (out, h) if return_final_states else out


def ssd_quadratic(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    dt_softplus: bool = False,
    return_final_states: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD as one masked-attention matrix product (the quadratic "dual" mode).

    Unrolling the recurrence gives ``y = M (dt·x)`` with the semiseparable matrix of eq. (3),
    ``M_ts = C_tᵀ A_t ⋯ A_{s+1} B_s``; with scalar ``A_t = exp(dt_t A)`` it factors as
    ``M = L ∘ (C Bᵀ)``, ``L_ts = exp(Σ_{s<k≤t} dt_k A)`` for ``s ≤ t`` and 0 above the diagonal
    (the 1-semiseparable mask; attention with ``Q = C``, ``K = B``, ``V = dt·x``).
    An initial state adds ``exp(Σ_{k≤t} dt_k A) h_0 C_t``. ``chunk_size`` is unused.

    Shapes as :func:`ssd_recurrent`; builds ``(B, L, L, H)`` matrices: for short sequences.
    """
    dtype = _compute_dtype(x)
    groups = B.shape[2]
    dt = step_size(dt.to(dtype), dt_bias, dt_softplus)  # (B, L, H)
    xs = x.to(dtype)
    xdt = _heads_by_group(xs * dt[..., None], groups)  # (B, L, G, R, P), R = H/G
    a = torch.cumsum(dt * A.to(dtype), dim=1)  # (B, L, H): Σ_{k≤t} dt_k A
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()
    segment = a[:, :, None, :] - a[:, None, :, :]  # (B, L_t, L_s, H): Σ_{s<k≤t} dt_k A
    Lmask = torch.exp(segment.masked_fill(~causal[..., None], -math.inf))  # (B, L, L, H)
    CB = torch.einsum("btgn,bsgn->btsg", C.to(dtype), B.to(dtype))  # (B, L, L, G)
    M = Lmask.unflatten(3, (groups, -1)) * CB[..., None]  # (B, L_t, L_s, G, R)
    y = torch.einsum("btsgr,bsgrp->btgrp", M, xdt)  # (B, L, G, R, P)
    decay_from_start = torch.exp(a)  # (B, L, H)
    to_end = _heads_by_group(torch.exp(a[:, -1:] - a), groups)  # (B, L, G, R)
    final = torch.einsum("bsgr,bsgrp,bsgn->bgrpn", to_end, xdt, B.to(dtype))  # (B, G, R, P, N)
    if initial_states is not None:
        h0 = initial_states.to(dtype).unflatten(1, (groups, -1))  # (B, G, R, P, N)
        y = y + torch.einsum("btgn,bgrpn->btgrp", C.to(dtype), h0) * _heads_by_group(
            decay_from_start, groups
        ).unsqueeze(-1)
        final = final + h0 * decay_from_start[:, -1].unflatten(1, (groups, -1))[..., None, None]
    out = skip_and_gate(y.flatten(2, 3), xs, D, z).to(x.dtype)
    return (out, final.flatten(1, 2)) if return_final_states else out


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    dt_softplus: bool = False,
    return_final_states: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD by the chunked algorithm of §6 (Listing 1): blocks of ``M = L ∘ (C Bᵀ)``.

    Split the sequence into K chunks of Q steps. Diagonal blocks of M are small masked-attention
    products; off-diagonal blocks are low rank, factored through the state at chunk boundaries:

    1. intra-chunk outputs ``Y_diag = (L_c ∘ C_c B_cᵀ) X̄_c`` (quadratic in Q);
    2. chunk states ``S_c = Σ_s exp(a_end - a_s) X̄_s B_sᵀ`` (the state each chunk adds);
    3. state passing ``H_c = exp(a_end,c) H_{c-1} + S_c``, a scan over the K chunks;
    4. state-to-output ``Y_off,t = exp(a_t) H_{c-1} C_t``,

    where ``X̄ = dt·x`` and ``a`` is the within-chunk cumulative sum of ``dt A``. A sequence that
    is not a multiple of Q is padded with steps ``dt = 0``, which leave the state as it is; Q is
    at most L (a longer chunk would only pad).

    Causal under non-finite inputs, as the recurrence: a NaN or inf at step s reaches no output
    before s. The masked products select with ``where`` (``0 · NaN`` is NaN), and a non-finite
    ``X̄_s`` enters the diagonal block as 0 and makes the outputs ``t ≥ s`` of its chunk NaN
    (the recurrence's state is NaN from s on); later chunks receive it through the state.

    Shapes as :func:`ssd_recurrent`; its largest tensors are ``(B, K, Q, Q, H)``.
    """
    dtype = _compute_dtype(x)
    batch, length, heads, headdim = x.shape
    groups, nstate = B.shape[2:]
    Q = min(chunk_size, length)
    K = -(-length // Q)
    pad = K * Q - length
    dt = step_size(dt.to(dtype), dt_bias, dt_softplus)  # (B, L, H)
    xs = x.to(dtype)

    def chunks(t: torch.Tensor) -> torch.Tensor:  # (B, L, ...) -> (B, K, Q, ...), zero padded
        t = F.pad(t, (0, 0) * (t.ndim - 2) + (0, pad))
        return t.unflatten(1, (K, Q))

    dtc = chunks(dt)  # (B, K, Q, H)
    xdt = chunks(_heads_by_group(xs * dt[..., None], groups))  # (B, K, Q, G, R, P)
    Bc, Cc = chunks(B.to(dtype)), chunks(C.to(dtype))  # (B, K, Q, G, N)
    a = torch.cumsum(dtc * A.to(dtype), dim=2).unflatten(3, (groups, -1))  # (B, K, Q, G, R)

    # 1. Intra-chunk (diagonal blocks): Y_diag = (L ∘ C Bᵀ) X̄ inside each chunk.
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()[:, :, None, None]
    segment = a[:, :, :, None] - a[:, :, None, :]  # (B, K, Q_t, Q_s, G, R)
    Lmask = torch.exp(segment.masked_fill(~causal, -math.inf))
    CB = torch.einsum("bktgn,bksgn->bktsg", Cc, Bc)  # (B, K, Q_t, Q_s, G)
    M = torch.where(causal, Lmask * CB[..., None], 0.0)  # (B, K, Q_t, Q_s, G, R)
    finite = xdt.isfinite()  # (B, K, Q, G, R, P)
    y_diag = torch.einsum("bktsgr,bksgrp->bktgrp", M, torch.where(finite, xdt, 0.0))
    seen_non_finite = (~finite).cumsum(dim=2) > 0  # at some step s ≤ t of the chunk
    y_diag = torch.where(seen_non_finite, math.nan, y_diag)

    # 2. Chunk states: S_c = Σ_s exp(a_end - a_s) X̄_s B_sᵀ.
    to_end = torch.exp(a[:, :, -1:] - a)  # (B, K, Q, G, R)
    S = torch.einsum("bksgn,bksgrp->bkgrpn", Bc, xdt * to_end[..., None])  # (B, K, G, R, P, N)

    # 3. State passing: H_c = exp(a_end,c) H_{c-1} + S_c, from H_{-1} = initial state.
    h = S.new_zeros(batch, groups, heads // groups, headdim, nstate)
    if initial_states is not None:
        h = initial_states.to(dtype).unflatten(1, (groups, -1))
    chunk_decay = torch.exp(a[:, :, -1])  # (B, K, G, R)
    entering = []
    for k in range(K):
        entering.append(h)
        h = chunk_decay[:, k, :, :, None, None] * h + S[:, k]
    H_prev = torch.stack(entering, dim=1)  # (B, K, G, R, P, N): the state entering each chunk

    # 4. State to output: Y_off,t = exp(a_t) H_{c-1} C_t.
    y_off = torch.einsum("bktgn,bkgrpn->bktgrp", Cc, H_prev) * torch.exp(a)[..., None]

    y = (y_diag + y_off).reshape(batch, K * Q, heads, headdim)[:, :length]  # (B, L, H, P)
    out = skip_and_gate(y, xs, D, z).to(x.dtype)
    return (out, h.flatten(1, 2)) if return_final_states else out


def ssd_state_update_ref(
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
    """One decoding step of SSD: ``h ← exp(dt A) h + dt x Bᵀ`` (in place), ``y = h C + D x``,
    gated by ``silu(z)``.

    Shapes: state ``(B, H, P, N)`` (updated in place), x ``(B, H, P)``, dt ``(B, H)``,
    A ``(H,)``, B, C ``(B, G, N)``, D ``(H,)`` or ``(H, P)``, z ``(B, H, P)``, dt_bias ``(H,)``.
    Returns y ``(B, H, P)`` in the dtype of x.
    """
    dtype = _compute_dtype(state)
    heads = x.shape[1]
    groups = B.shape[1]
    dt = step_size(dt.to(dtype), dt_bias, dt_softplus)  # (B, H)
    Bh = B.to(dtype).repeat_interleave(heads // groups, dim=1)  # (B, H, N)
    Ch = C.to(dtype).repeat_interleave(heads // groups, dim=1)  # (B, H, N)
    xs = x.to(dtype)
    h = state.to(dtype)
    h = (
        torch.exp(dt * A.to(dtype))[..., None, None] * h
        + (dt[..., None] * xs)[..., None] * Bh[:, :, None]
    )
    state.copy_(h)
    y = torch.einsum("bhpn,bhn->bhp", h, Ch)  # (B, H, P)
    return skip_and_gate(y, xs, D, z).to(x.dtype)
