"""Triton kernels for the selective scan: forward, backward and the decode step.

Same signatures and semantics as :mod:`ssm.ops.selective_scan.reference`. Dimension letters:
B batch, D channels, L length, N state size, G groups, T the time tile.

One program owns a block of channels of one batch element and one group, and walks the sequence
in tiles of ``T`` steps. Inside a tile the recurrence ``h_t = Ā_t h_{t-1} + B̄_t u_t`` is an
associative scan over the pairs ``(Ā_t, B̄_t u_t)`` (a ``(D, N, T)`` block in registers, float32);
between tiles only the state ``h`` (``(D, N)``) is carried. The ``(B, D, N, L)`` tensor of states
is never written: the forward stores the state at the start of each tile (a checkpoint every
``T`` steps), and the backward walks the tiles in reverse, recomputes the tile's states from its
checkpoint and runs the adjoint recurrence ``dh_t = C_t dy_t + Ā_{t+1} dh_{t+1}`` as a reverse scan.

Gradients summed over the batch (``dA``, ``dD``, ``ddelta_bias``) are written per program and
summed with torch. ``dB`` and ``dC`` are summed over the channels of a group: with atomic adds,
or, when ``torch.are_deterministic_algorithms_enabled()``, from per-program partials summed with
torch (deterministic, more memory).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..dispatch import deterministic

# Tile sizes: the forward keeps about 4 (D, N, T) float32 blocks live per program, the backward
# about 12, so the backward gets smaller tiles. Tuned on an H100 (see the README).
BLOCK_T_MAX = 64
FWD_TILE_ELEMENTS = 4096
BWD_TILE_ELEMENTS = 2048
NUM_WARPS = 4


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    """Compose ``h ↦ a_left h + b_left`` then ``h ↦ a_right h + b_right``."""
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _softplus(x):
    # log(1 + exp(x)) without overflow; equals x to float32 precision above 20, as torch's.
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _load_dt(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Load ``δ`` and return (``δ + bias``, ``Δ``), with ``Δ = 0`` outside ``mask``."""
    pre = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        pre = pre + bias[:, None]
    dt = pre
    if SOFTPLUS:
        dt = _softplus(pre)
    return pre, tl.where(mask, dt, 0.0)


@triton.jit
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    out_ptr, chunk_state_ptr, last_state_ptr,
    dim, dstate, length, dim_per_group, n_chunks,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    stride_bc_b, stride_bc_g, stride_bc_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_CHUNKS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets for large tensors
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_dg = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # channel within the group
    d_mask = offs_dg < dim_per_group
    offs_d = pid_g * dim_per_group + offs_dg  # (BD)
    offs_n = tl.arange(0, BLOCK_N)
    n_mask = offs_n < dstate
    offs_t = tl.arange(0, BLOCK_T)
    dn_mask = d_mask[:, None] & n_mask[None, :]

    A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=dn_mask, other=0.0)
    A = A.to(tl.float32)  # (BD BN)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)

    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d  # (BD 1)
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    out_row = out_ptr + (pid_b * dim + offs_d[:, None]) * length
    bc_off = pid_b * stride_bc_b + pid_g * stride_bc_g + offs_n[:, None] * stride_bc_n  # (BN 1)
    state_off = (pid_b * dim + offs_d[:, None]) * dstate + offs_n[None, :]  # (BD BN)

    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for c in range(0, n_chunks):
        if STORE_CHUNKS:  # checkpoint: the state before this tile
            chunk_off = ((pid_b * dim + offs_d[:, None]) * n_chunks + c) * dstate + offs_n[None, :]
            tl.store(chunk_state_ptr + chunk_off, h, mask=dn_mask)
        t = c * BLOCK_T + offs_t
        t_mask = t < length
        dt_mask = d_mask[:, None] & t_mask[None, :]
        nt_mask = n_mask[:, None] & t_mask[None, :]
        u = tl.load(u_row + t[None, :], mask=dt_mask, other=0.0).to(tl.float32)  # (BD T)
        _, dt = _load_dt(delta_row + t[None, :], dt_mask, bias, HAS_BIAS, SOFTPLUS)  # (BD T)
        Bt = tl.load(B_ptr + bc_off + t[None, :], mask=nt_mask, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_off + t[None, :], mask=nt_mask, other=0.0).to(tl.float32)

        a = tl.exp(dt[:, None, :] * A[:, :, None])  # (BD BN T)   Ā_t = exp(Δ_t A)
        bu = (dt * u)[:, None, :] * Bt[None, :, :]  # (BD BN T)   B̄_t u_t = Δ_t B_t u_t
        a_cum, bu_cum = tl.associative_scan((a, bu), axis=2, combine_fn=_combine)
        H = a_cum * h[:, :, None] + bu_cum  # (BD BN T)   h_t for every t of the tile
        y = tl.sum(H * Ct[None, :, :], axis=1)  # (BD T)       C_t h_t
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z_ptrs = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d + t[None, :]
            z = tl.load(z_ptrs, mask=dt_mask, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(out_row + t[None, :], y.to(out_ptr.dtype.element_ty), mask=dt_mask)
        # Past the end Δ = 0, so Ā = 1 and B̄u = 0: the last column holds h_{L-1}.
        h = tl.sum(tl.where(offs_t[None, None, :] == BLOCK_T - 1, H, 0.0), axis=2)  # (BD BN)
    tl.store(last_state_ptr + state_off, h, mask=dn_mask)


@triton.jit
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, chunk_state_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
    dim, dstate, length, dim_per_group, groups, n_chunks, n_blocks,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    stride_dout_b, stride_dout_d,
    stride_bc_b, stride_bc_g, stride_bc_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ATOMIC: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets for large tensors
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_dg = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_dg < dim_per_group
    offs_d = pid_g * dim_per_group + offs_dg  # (BD)
    offs_n = tl.arange(0, BLOCK_N)
    n_mask = offs_n < dstate
    offs_t = tl.arange(0, BLOCK_T)
    dn_mask = d_mask[:, None] & n_mask[None, :]

    A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=dn_mask, other=0.0)
    A = A.to(tl.float32)  # (BD BN)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)

    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d  # (BD 1)
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    dout_row = dout_ptr + pid_b * stride_dout_b + offs_d[:, None] * stride_dout_d
    grad_row = (pid_b * dim + offs_d[:, None]) * length  # du, ddelta, dz: contiguous (B D L)
    bc_off = pid_b * stride_bc_b + pid_g * stride_bc_g + offs_n[:, None] * stride_bc_n  # (BN 1)
    if ATOMIC:  # dB, dC: (B G N L) float32, summed over channel blocks by atomic adds
        dbc_off = ((pid_b * groups + pid_g) * dstate + offs_n[:, None]) * length
    else:  # dB, dC: (B G n_blocks N L) float32 partials, summed with torch
        dbc_off = (
            ((pid_b * groups + pid_g) * n_blocks + pid_d) * dstate + offs_n[:, None]
        ) * length

    dh_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # dL/dh at the next tile's start
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for c_rev in range(0, n_chunks):
        c = n_chunks - 1 - c_rev
        t = c * BLOCK_T + offs_t
        t_mask = t < length
        dt_mask = d_mask[:, None] & t_mask[None, :]
        nt_mask = n_mask[:, None] & t_mask[None, :]
        u = tl.load(u_row + t[None, :], mask=dt_mask, other=0.0).to(tl.float32)  # (BD T)
        pre, dt = _load_dt(delta_row + t[None, :], dt_mask, bias, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_off + t[None, :], mask=nt_mask, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_off + t[None, :], mask=nt_mask, other=0.0).to(tl.float32)
        dy = tl.load(dout_row + t[None, :], mask=dt_mask, other=0.0).to(tl.float32)  # (BD T)

        # Recompute the tile's states from its checkpoint, as in the forward.
        chunk_off = ((pid_b * dim + offs_d[:, None]) * n_chunks + c) * dstate + offs_n[None, :]
        h0 = tl.load(chunk_state_ptr + chunk_off, mask=dn_mask, other=0.0)  # (BD BN)
        a = tl.exp(dt[:, None, :] * A[:, :, None])  # (BD BN T)
        bu = (dt * u)[:, None, :] * Bt[None, :, :]  # (BD BN T)
        a_cum, bu_cum = tl.associative_scan((a, bu), axis=2, combine_fn=_combine)
        H = a_cum * h0[:, :, None] + bu_cum  # (BD BN T)

        if (
            HAS_Z
        ):  # out = y_skip · silu(z):  dz = dout · y_skip · silu'(z),  dy_skip = dout · silu(z)
            y = tl.sum(H * Ct[None, :, :], axis=1) + Dv[:, None] * u  # (BD T)
            z_ptrs = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d + t[None, :]
            z = tl.load(z_ptrs, mask=dt_mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            dz = dy * y * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + grad_row + t[None, :], dz.to(dz_ptr.dtype.element_ty), mask=dt_mask)
            dy = dy * z * sig
        dD_acc += tl.sum(dy * u, axis=1)

        # Adjoint recurrence dh_t = C_t dy_t + Ā_{t+1} dh_{t+1}: a reverse scan whose factor
        # at t is Ā_{t+1}, so Δ is loaded again one step ahead (Ā = 1 past the end).
        _, dt_ahead = _load_dt(
            delta_row + t[None, :] + 1, d_mask[:, None] & (t + 1 < length)[None, :], bias,
            HAS_BIAS, SOFTPLUS,
        )  # fmt: skip
        a_ahead = tl.exp(dt_ahead[:, None, :] * A[:, :, None])  # (BD BN T)
        q = dy[:, None, :] * Ct[None, :, :]  # (BD BN T)
        a_rev, q_rev = tl.associative_scan(
            (a_ahead, q), axis=2, combine_fn=_combine, reverse=True
        )  # fmt: skip
        dH = a_rev * dh_next[:, :, None] + q_rev  # (BD BN T)
        dh_next = tl.sum(tl.where(offs_t[None, None, :] == 0, dH, 0.0), axis=2)

        # h_t = Ā_t h_{t-1} + Δ_t B_t u_t with Ā_t h_{t-1} = h_t - B̄_t u_t.
        w = dH * (H - bu)  # (BD BN T)   dL/dĀ_t · Ā_t
        dA_acc += tl.sum(w * dt[:, None, :], axis=2)
        s = tl.sum(dH * Bt[None, :, :], axis=1)  # (BD T)
        ddt = tl.sum(w * A[:, :, None], axis=1) + s * u  # (BD T)   dL/dΔ_t
        du = s * dt + dy * Dv[:, None]
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(pre)
        ddt = tl.where(dt_mask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + grad_row + t[None, :], du.to(du_ptr.dtype.element_ty), mask=dt_mask)
        tl.store(
            ddelta_ptr + grad_row + t[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=dt_mask
        )

        dB = tl.sum(dH * (dt * u)[:, None, :], axis=0)  # (BN T), summed over this block's channels
        dC = tl.sum(H * dy[:, None, :], axis=0)  # (BN T)
        if ATOMIC:
            tl.atomic_add(dB_ptr + dbc_off + t[None, :], dB, mask=nt_mask)
            tl.atomic_add(dC_ptr + dbc_off + t[None, :], dC, mask=nt_mask)
        else:
            tl.store(dB_ptr + dbc_off + t[None, :], dB, mask=nt_mask)
            tl.store(dC_ptr + dbc_off + t[None, :], dC, mask=nt_mask)

    part_off = (pid_b * dim + offs_d[:, None]) * dstate + offs_n[None, :]  # (B D N) partials
    tl.store(dA_ptr + part_off, dA_acc, mask=dn_mask)
    tl.store(dD_ptr + pid_b * dim + offs_d, dD_acc, mask=d_mask)
    tl.store(dbias_ptr + pid_b * dim + offs_d, dbias_acc, mask=d_mask)


@triton.jit
def _step_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr,
    dim, dstate, dim_per_group,
    stride_state_b, stride_state_d, stride_state_n, stride_x_b, stride_dt_b, stride_z_b,
    stride_bc_b, stride_bc_g,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets for large tensors
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_d < dim
    offs_n = tl.arange(0, BLOCK_N)
    dn_mask = d_mask[:, None] & (offs_n < dstate)[None, :]
    group = offs_d // dim_per_group  # (BD)

    state_ptrs = state_ptr + pid_b * stride_state_b + offs_d[:, None] * stride_state_d
    state_ptrs += offs_n[None, :] * stride_state_n
    h = tl.load(state_ptrs, mask=dn_mask, other=0.0).to(tl.float32)  # (BD BN)
    x = tl.load(x_ptr + pid_b * stride_x_b + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    _, dt = _load_dt(dt_ptr + pid_b * stride_dt_b + offs_d[:, None], d_mask[:, None], bias,
                     HAS_BIAS, SOFTPLUS)  # fmt: skip
    A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=dn_mask, other=0.0)
    bc_off = pid_b * stride_bc_b + group[:, None] * stride_bc_g + offs_n[None, :]  # (BD BN)
    Bt = tl.load(B_ptr + bc_off, mask=dn_mask, other=0.0).to(tl.float32)
    Ct = tl.load(C_ptr + bc_off, mask=dn_mask, other=0.0).to(tl.float32)

    h = tl.exp(dt * A.to(tl.float32)) * h + (dt * x[:, None]) * Bt  # (BD BN)   eq. (2a)
    tl.store(state_ptrs, h.to(state_ptr.dtype.element_ty), mask=dn_mask)
    y = tl.sum(h * Ct, axis=1)  # (BD)   eq. (2b)
    if HAS_D:
        y += tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32) * x
    if HAS_Z:
        z = tl.load(z_ptr + pid_b * stride_z_b + offs_d, mask=d_mask, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(out_ptr + pid_b * dim + offs_d, y.to(out_ptr.dtype.element_ty), mask=d_mask)


def _block_t(length: int) -> int:
    return min(BLOCK_T_MAX, max(2, triton.next_power_of_2(length)))


def _block_d(dim_per_group: int, block_n: int, block_t: int, elements: int) -> int:
    """Channels per program, so that a ``(D, N, T)`` tile holds about ``elements`` values."""
    block_d = triton.next_power_of_2(max(1, elements // (block_n * block_t)))
    return min(block_d, triton.next_power_of_2(dim_per_group))


def _strides(x: torch.Tensor | None) -> tuple[int, int]:
    """Batch and channel strides of a ``(B, D, ...)`` tensor (zeros when absent)."""
    return (x.stride(0), x.stride(1)) if x is not None else (0, 0)


def _last_dim_contiguous(x: torch.Tensor | None) -> torch.Tensor | None:
    """The kernels step along the last dimension with stride 1 and take the others as given."""
    if x is None or x.stride(-1) == 1:
        return x
    return x.contiguous()


def _grouped(M: torch.Tensor) -> torch.Tensor:
    """``(B, N, L)`` → ``(B, 1, N, L)``, contiguous (``B`` and ``C`` then share strides)."""
    M = M[:, None] if M.ndim == 3 else M
    return M.contiguous()


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, dim, length = u.shape
        dstate = A.shape[1]
        u, delta, z = (_last_dim_contiguous(x) for x in (u, delta, z))
        A, D, delta_bias = (x.contiguous() if x is not None else None for x in (A, D, delta_bias))
        Bg, Cg = _grouped(B), _grouped(C)  # (B G N L)
        groups = Bg.shape[1]
        dpg = dim // groups
        block_n, block_t = triton.next_power_of_2(dstate), _block_t(length)
        block_d = _block_d(dpg, block_n, block_t, FWD_TILE_ELEMENTS)
        n_chunks = triton.cdiv(length, block_t)
        store_chunks = any(ctx.needs_input_grad)
        dev = u.device
        out = torch.empty(batch, dim, length, dtype=u.dtype, device=dev)
        last_state = torch.empty(batch, dim, dstate, dtype=torch.float32, device=dev)
        chunk_shape = (batch, dim, n_chunks, dstate) if store_chunks else (0,)
        chunk_states = torch.empty(chunk_shape, dtype=torch.float32, device=dev)
        grid = (batch, groups, triton.cdiv(dpg, block_d))
        _fwd_kernel[grid](
            u, delta, A, Bg, Cg, D, z, delta_bias,
            out, chunk_states, last_state,
            dim, dstate, length, dpg, n_chunks,
            *_strides(u), *_strides(delta), *_strides(z),
            Bg.stride(0), Bg.stride(1), Bg.stride(2),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, STORE_CHUNKS=store_chunks,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, num_warps=NUM_WARPS,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, Bg, Cg, D, z, delta_bias, chunk_states)
        ctx.delta_softplus = delta_softplus
        ctx.block_t = block_t  # one checkpoint per forward tile: the backward uses the same tiles
        ctx.B_shape, ctx.C_shape = B.shape, C.shape
        ctx.B_dtype, ctx.C_dtype = B.dtype, C.dtype
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, _dlast_state):
        u, delta, A, Bg, Cg, D, z, delta_bias, chunk_states = ctx.saved_tensors
        batch, dim, length = u.shape
        groups, dstate = Bg.shape[1], A.shape[1]
        dpg = dim // groups
        dout = _last_dim_contiguous(dout)
        block_n, block_t = triton.next_power_of_2(dstate), ctx.block_t
        block_d = _block_d(dpg, block_n, block_t, BWD_TILE_ELEMENTS)
        n_chunks = chunk_states.shape[2]
        n_blocks = triton.cdiv(dpg, block_d)
        atomic = n_blocks > 1 and not deterministic()
        dev = u.device
        du = torch.empty(batch, dim, length, dtype=u.dtype, device=dev)
        ddelta = torch.empty(batch, dim, length, dtype=delta.dtype, device=dev)
        dz = torch.empty(batch, dim, length, dtype=z.dtype, device=dev) if z is not None else None
        dA = torch.empty(batch, dim, dstate, dtype=torch.float32, device=dev)
        dD = torch.empty(batch, dim, dtype=torch.float32, device=dev)
        dbias = torch.empty(batch, dim, dtype=torch.float32, device=dev)
        if atomic:
            dB = torch.zeros(batch, groups, dstate, length, dtype=torch.float32, device=dev)
            dC = torch.zeros_like(dB)
        else:
            shape = (batch, groups, n_blocks, dstate, length)
            dB = torch.empty(shape, dtype=torch.float32, device=dev)
            dC = torch.empty(shape, dtype=torch.float32, device=dev)
        grid = (batch, groups, n_blocks)
        _bwd_kernel[grid](
            u, delta, A, Bg, Cg, D, z, delta_bias, dout, chunk_states,
            du, ddelta, dz, dA, dD, dbias, dB, dC,
            dim, dstate, length, dpg, groups, n_chunks, n_blocks,
            *_strides(u), *_strides(delta), *_strides(z), *_strides(dout),
            Bg.stride(0), Bg.stride(1), Bg.stride(2),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, ATOMIC=atomic,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, num_warps=NUM_WARPS,
        )  # fmt: skip
        if not atomic:
            dB, dC = dB.sum(2), dC.sum(2)  # (B G N L)
        dB = dB.reshape(ctx.B_shape).to(ctx.B_dtype)
        dC = dC.reshape(ctx.C_shape).to(ctx.C_dtype)
        dA = dA.sum(0).to(A.dtype)
        dD = dD.sum(0).to(D.dtype) if D is not None else None
        dbias = dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None


def selective_scan_triton(
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
    """The selective scan on the GPU; arguments, shapes and results as
    :func:`~ssm.ops.selective_scan.reference.selective_scan_ref` (last state float32).

    Differentiable in all tensor arguments; the last state is not (as in ``mamba_ssm``).
    """
    out, last_state = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (out, last_state) if return_last_state else out


def selective_state_update_triton(
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
    """One decoding step, updating ``state`` ``(B, D, N)`` in place; arguments and result as
    :func:`~ssm.ops.selective_scan.reference.selective_state_update_ref`. Not differentiable."""
    batch, dim = x.shape
    dstate = A.shape[1]
    Bg = B[:, None] if B.ndim == 2 else B  # (B G N)
    Cg = C[:, None] if C.ndim == 2 else C
    Bg, Cg = Bg.contiguous(), Cg.contiguous()
    x, dt, A, D, z, dt_bias = (
        t.contiguous() if t is not None else None for t in (x, dt, A, D, z, dt_bias)
    )
    out = torch.empty(batch, dim, dtype=x.dtype, device=x.device)
    block_n = triton.next_power_of_2(dstate)
    block_d = min(triton.next_power_of_2(dim), max(1, 512 // block_n))
    grid = (batch, triton.cdiv(dim, block_d))
    _step_kernel[grid](
        state, x, dt, A, Bg, Cg, D, z, dt_bias, out,
        dim, dstate, dim // Bg.shape[1],
        *state.stride(), x.stride(0), dt.stride(0),
        z.stride(0) if z is not None else 0,
        Bg.stride(0), Bg.stride(1),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=dt_softplus, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=NUM_WARPS,
    )  # fmt: skip
    return out
