"""Triton kernels for the selective scan: forward, backward and the decode step.

Same signatures and semantics as :mod:`ssm.ops.selective_scan.reference`. Dimension letters:
B batch, D channels, L length, N state size, G groups, T the time tile.

One program owns a block of channels of one batch element (within one group) and walks the
sequence in tiles of ``T = CHUNK`` steps. A tile is a 2-D block (channels × time), loaded
coalesced along time. For each state ``n`` the program computes ``Ā = exp(Δ A_n)`` and
``B̄ u = Δ B_n u`` over the whole tile and runs ``tl.associative_scan`` along time with the
composition of affine maps ``h ↦ a h + b``, so that the lanes of a warp work on different steps
of the same channel in parallel. The incoming state is folded into the tile's first step; the
last column is the state handed to the next tile, kept in registers as a (channels × N) block.
``y_t += C_t h_t`` is accumulated over ``n``.

The ``(B, D, N, L)`` tensor of states is never written. The forward saves the state at the start
of every tile (``N`` float32 per channel every ``CHUNK`` steps) when a backward will follow.
The backward walks the tiles in reverse, recomputes each tile's states from its saved state with
the same scan, and runs the adjoint recurrence ``dh_t = C_t dy_t + exp(Δ_{t+1} A) dh_{t+1}`` as a
reverse scan whose incoming ``dh`` (from the tile after) is kept in registers. Gradients summed
over the batch (``dA``, ``dD``, ``ddelta_bias``) are written per batch element and summed with
torch. ``dB`` and ``dC`` are summed over the channels of a group: within a program by a reduction
over the tile's channels, across programs with atomic adds or, when
``torch.are_deterministic_algorithms_enabled()``, through per-program partials summed with torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common import contiguous
from ..dispatch import deterministic
from ..triton_common import softplus, softplus_grad

# Knobs, measured on an H100 (see the README). CHUNK: steps per tile, and between two states
# saved for the backward (a power of 2). *_BLOCK_D: channels per program (at most); *_WARPS:
# warps per program.
CHUNK = 64
FWD_BLOCK_D = 16
FWD_WARPS = 4
BWD_BLOCK_D = 16
BWD_WARPS = 2
LOG2_E = tl.constexpr(1.4426950408889634)


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    """Compose ``h ↦ a_left h + b_left`` then ``h ↦ a_right h + b_right``."""
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _load_dt(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Load ``δ`` and return (``δ + bias``, ``Δ``), with ``Δ = 0`` outside ``mask``."""
    pre = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        pre = pre + bias
    dt = pre
    if SOFTPLUS:
        dt = softplus(pre)
    return pre, tl.where(mask, dt, 0.0)


@triton.jit
def _column(x, offs, k):
    """Column ``k`` of the 2-D block ``x`` (``offs`` indexes its second axis)."""
    return tl.sum(tl.where(offs[None, :] == k, x, 0.0), axis=1)


# Saved states: a float32 buffer (B, n_tiles + 1, D, N); row i holds the state at the start of
# tile i (row 0 zeros), row n_tiles the state after the sequence.
@triton.jit
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, state_ptr, last_ptr,
    dim, length, dim_per_group, n_tiles,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    stride_bc_b, stride_bc_g, stride_bc_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_CHUNKS: tl.constexpr,
    DSTATE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets for large tensors
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_dg = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # channel within the group
    d_mask = offs_dg < dim_per_group
    offs_d = pid_g * dim_per_group + offs_dg  # (D)
    offs_t = tl.arange(0, BLOCK_T)
    offs_n = tl.arange(0, BLOCK_N)
    dn_mask = d_mask[:, None] & (offs_n < DSTATE)[None, :]

    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d  # (D 1)
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    out_row = out_ptr + (pid_b * dim + offs_d[:, None]) * length
    bc_base = pid_b * stride_bc_b + pid_g * stride_bc_g  # (b, g) in B and C
    row_size = dim * DSTATE
    dn_offs = offs_d[:, None] * DSTATE + offs_n[None, :]  # (D N)
    state_base = state_ptr + pid_b * (n_tiles + 1) * row_size + dn_offs

    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # the state entering the tile
    for i in range(0, n_tiles):
        t = i * BLOCK_T + offs_t
        t_mask = t < length
        dt_mask = d_mask[:, None] & t_mask[None, :]
        u = tl.load(u_row + t[None, :], mask=dt_mask, other=0.0).to(tl.float32)  # (D T)
        _, dt = _load_dt(delta_row + t[None, :], dt_mask, bias[:, None], HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = tl.zeros([BLOCK_D, BLOCK_T], dtype=tl.float32)
        for n in range(DSTATE):
            A_n = tl.load(A_ptr + offs_d * DSTATE + n, mask=d_mask, other=0.0).to(tl.float32)
            bc_n = bc_base + n * stride_bc_n + t  # (T)
            B_n = tl.load(B_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
            h0_n = _column(h, offs_n, n)  # (D)
            a = tl.exp2(dt * (A_n * LOG2_E)[:, None])  # (D T)   Ā_t = exp(Δ_t A_n)
            bu = dtu * B_n[None, :]  # (D T)   B̄_t u_t = Δ_t B_t u_t
            # Fold h0 into the first step; then the second component of the scan is h_t.
            bu = tl.where(offs_t[None, :] == 0, a * h0_n[:, None] + bu, bu)
            _, H = tl.associative_scan((a, bu), axis=1, combine_fn=_combine)  # (D T)
            y += H * C_n[None, :]  # C_t h_t, summed over n
            # The last column; Ā = 1 past the end of the sequence, so it is the state there.
            h_end = _column(H, offs_t, BLOCK_T - 1)
            h = tl.where(offs_n[None, :] == n, h_end[:, None], h)
        if STORE_CHUNKS:
            tl.store(state_base + (i + 1) * row_size, h, mask=dn_mask)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z_ptrs = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d + t[None, :]
            z = tl.load(z_ptrs, mask=dt_mask, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(out_row + t[None, :], y.to(out_ptr.dtype.element_ty), mask=dt_mask)
    tl.store(last_ptr + pid_b * row_size + dn_offs, h, mask=dn_mask)


@triton.jit
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, state_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
    dim, length, dim_per_group, groups, n_tiles, n_blocks,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    stride_dout_b, stride_dout_d, stride_bc_b, stride_bc_g, stride_bc_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ATOMIC: tl.constexpr,
    DSTATE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_dg = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_dg < dim_per_group
    offs_d = pid_g * dim_per_group + offs_dg  # (D)
    offs_t = tl.arange(0, BLOCK_T)
    offs_n = tl.arange(0, BLOCK_N)
    dn_mask = d_mask[:, None] & (offs_n < DSTATE)[None, :]

    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d  # (D 1)
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    dout_row = dout_ptr + pid_b * stride_dout_b + offs_d[:, None] * stride_dout_d
    grad_row = (pid_b * dim + offs_d[:, None]) * length  # du, ddelta, dz: contiguous (B D L)
    bc_base = pid_b * stride_bc_b + pid_g * stride_bc_g
    if ATOMIC:  # dB, dC: (B G N L) float32, summed over channel blocks by atomic adds
        dbc_base = (pid_b * groups + pid_g) * DSTATE * length
    else:  # dB, dC: (B G blocks N L) float32 partials, summed with torch
        dbc_base = ((pid_b * groups + pid_g) * n_blocks + pid_d) * DSTATE * length
    row_size = dim * DSTATE
    h_col = state_ptr + pid_b * (n_tiles + 1) * row_size + offs_d * DSTATE  # (D)

    dh = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # dL/dh at the start of the next tile
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i_rev in range(0, n_tiles):
        i = n_tiles - 1 - i_rev
        t = i * BLOCK_T + offs_t
        t_mask = t < length
        dt_mask = d_mask[:, None] & t_mask[None, :]
        u = tl.load(u_row + t[None, :], mask=dt_mask, other=0.0).to(tl.float32)  # (D T)
        pre, dt = _load_dt(delta_row + t[None, :], dt_mask, bias[:, None], HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        # Ā_{t+1} needs Δ one step ahead (0 past the end, so Ā = 1 there).
        ahead_mask = d_mask[:, None] & (t + 1 < length)[None, :]
        _, dt_ahead = _load_dt(
            delta_row + t[None, :] + 1, ahead_mask, bias[:, None], HAS_BIAS, SOFTPLUS
        )
        dy = tl.load(dout_row + t[None, :], mask=dt_mask, other=0.0).to(tl.float32)
        if HAS_Z:  # out = y_skip · silu(z): the scan sees dout · silu(z)
            z_ptrs = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d + t[None, :]
            z = tl.load(z_ptrs, mask=dt_mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            dz_in = dy  # dout, kept for dz = dout · y_skip · silu'(z)
            dy = dy * z * sig
            y = Dv[:, None] * u  # y_skip = C h + D u, accumulated over n
        dD_acc += tl.sum(dy * u, axis=1)
        ddt = tl.zeros([BLOCK_D, BLOCK_T], dtype=tl.float32)  # dL/dΔ
        du = dy * Dv[:, None]
        for n in range(DSTATE):
            A_n = tl.load(A_ptr + offs_d * DSTATE + n, mask=d_mask, other=0.0).to(tl.float32)
            A2_n = A_n * LOG2_E
            bc_n = bc_base + n * stride_bc_n + t  # (T)
            B_n = tl.load(B_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
            h0_n = tl.load(h_col + i * row_size + n, mask=d_mask, other=0.0)  # saved state
            a = tl.exp2(dt * A2_n[:, None])  # (D T), as in the forward
            bu = dtu * B_n[None, :]
            first = tl.where(offs_t[None, :] == 0, a * h0_n[:, None] + bu, bu)
            _, H = tl.associative_scan((a, first), axis=1, combine_fn=_combine)
            if HAS_Z:
                y += H * C_n[None, :]

            # dh_t = C_t dy_t + Ā_{t+1} dh_{t+1}, the last step taking dh from the next tile.
            a_ahead = tl.exp2(dt_ahead * A2_n[:, None])  # (D T)
            sel = offs_n[None, :] == n
            dh_next = _column(dh, offs_n, n)
            q = dy * C_n[None, :]
            q = tl.where(offs_t[None, :] == BLOCK_T - 1, q + a_ahead * dh_next[:, None], q)
            _, dH = tl.associative_scan((a_ahead, q), axis=1, combine_fn=_combine, reverse=True)
            dh = tl.where(sel, _column(dH, offs_t, 0)[:, None], dh)

            # h_t = Ā_t h_{t-1} + Δ_t B_t u_t, with Ā_t h_{t-1} = h_t - B̄_t u_t.
            w = dH * (H - bu)  # (D T)   dL/dĀ_t · Ā_t
            dA_acc += tl.where(sel, tl.sum(w * dt, axis=1)[:, None], 0.0)
            s = dH * B_n[None, :]
            ddt += w * A_n[:, None] + s * u
            du += s * dt
            dB_n = tl.sum(dH * dtu, axis=0)  # (T), over this program's channels
            dC_n = tl.sum(H * dy, axis=0)
            dbc = dbc_base + n * length + t
            if ATOMIC:
                tl.atomic_add(dB_ptr + dbc, dB_n, mask=t_mask, sem="relaxed")
                tl.atomic_add(dC_ptr + dbc, dC_n, mask=t_mask, sem="relaxed")
            else:
                tl.store(dB_ptr + dbc, dB_n, mask=t_mask)
                tl.store(dC_ptr + dbc, dC_n, mask=t_mask)

        if HAS_Z:
            dz = dz_in * y * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + grad_row + t[None, :], dz.to(dz_ptr.dtype.element_ty), mask=dt_mask)
        if SOFTPLUS:  # d softplus / dx: sigmoid, exactly 1 above the threshold
            ddt = ddt * softplus_grad(pre)
        ddt = tl.where(dt_mask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + grad_row + t[None, :], du.to(du_ptr.dtype.element_ty), mask=dt_mask)
        tl.store(
            ddelta_ptr + grad_row + t[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=dt_mask
        )
    dn_offs = offs_d[:, None] * DSTATE + offs_n[None, :]
    tl.store(dA_ptr + pid_b * row_size + dn_offs, dA_acc, mask=dn_mask)
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
    _, dt = _load_dt(dt_ptr + pid_b * stride_dt_b + offs_d[:, None], d_mask[:, None], bias[:, None],
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


def _block_d(dim_per_group: int, most: int) -> int:
    """Channels per program: ``most``, or fewer when a group has fewer channels."""
    return min(most, triton.next_power_of_2(dim_per_group))


def _strides(x: torch.Tensor | None) -> tuple[int, int]:
    """Batch and channel strides of a ``(B, D, ...)`` tensor (zeros when absent)."""
    return (x.stride(0), x.stride(1)) if x is not None else (0, 0)


def _rows(x: torch.Tensor | None) -> torch.Tensor | None:
    """A ``(B, D, L)`` tensor as the kernels read it: steps adjacent (stride 1 along ``L``), the
    batch and channel strides taken as they are (any, 0 included, so that ``u`` and ``z`` may be
    the two halves of one projection without a copy), lazy negation and conjugation applied."""
    if x is None:
        return None
    x = x.resolve_conj().resolve_neg()
    return x if x.stride(-1) == 1 else x.contiguous()


def _grouped(M: torch.Tensor) -> torch.Tensor:
    """``(B, N, L)`` → ``(B, 1, N, L)``, contiguous (``B`` and ``C`` then share strides)."""
    (M,) = contiguous(M[:, None] if M.ndim == 3 else M)
    return M


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, dim, length = u.shape
        dstate = A.shape[1]
        u, delta, z = (_rows(x) for x in (u, delta, z))
        A, D, delta_bias = contiguous(A, D, delta_bias)
        Bg, Cg = _grouped(B), _grouped(C)  # (B G N L)
        groups = Bg.shape[1]
        dpg = dim // groups
        block_d = _block_d(dpg, FWD_BLOCK_D)
        block_t = CHUNK
        n_tiles = triton.cdiv(length, block_t)
        store_chunks = any(ctx.needs_input_grad)
        dev = u.device
        out = torch.empty(batch, dim, length, dtype=u.dtype, device=dev)
        last_state = torch.empty(batch, dim, dstate, dtype=torch.float32, device=dev)
        if store_chunks:  # row i: the state at the start of tile i
            states = torch.empty(batch, n_tiles + 1, dim, dstate, dtype=torch.float32, device=dev)
            states[:, 0].zero_()
        else:
            states = last_state  # never written
        grid = (batch, groups, triton.cdiv(dpg, block_d))
        _fwd_kernel[grid](
            u, delta, A, Bg, Cg, D, z, delta_bias, out, states, last_state,
            dim, length, dpg, n_tiles,
            *_strides(u), *_strides(delta), *_strides(z),
            Bg.stride(0), Bg.stride(1), Bg.stride(2),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, STORE_CHUNKS=store_chunks,
            DSTATE=dstate, BLOCK_N=triton.next_power_of_2(dstate), BLOCK_D=block_d,
            BLOCK_T=block_t, num_warps=FWD_WARPS,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, Bg, Cg, D, z, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        ctx.block_t = block_t
        ctx.B_shape, ctx.C_shape = B.shape, C.shape
        ctx.B_dtype, ctx.C_dtype = B.dtype, C.dtype
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, _dlast_state):
        u, delta, A, Bg, Cg, D, z, delta_bias, states = ctx.saved_tensors
        block_t = ctx.block_t
        batch, dim, length = u.shape
        groups, dstate = Bg.shape[1], A.shape[1]
        dpg = dim // groups
        block_d = _block_d(dpg, BWD_BLOCK_D)
        n_tiles = triton.cdiv(length, block_t)
        dout = _rows(dout)
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
            u, delta, A, Bg, Cg, D, z, delta_bias, dout, states,
            du, ddelta, dz, dA, dD, dbias, dB, dC,
            dim, length, dpg, groups, n_tiles, n_blocks,
            *_strides(u), *_strides(delta), *_strides(z), *_strides(dout),
            Bg.stride(0), Bg.stride(1), Bg.stride(2),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, ATOMIC=atomic,
            DSTATE=dstate, BLOCK_N=triton.next_power_of_2(dstate), BLOCK_D=block_d,
            BLOCK_T=block_t, num_warps=BWD_WARPS,
        )  # fmt: skip
        if not atomic:
            dB, dC = dB.sum(2), dC.sum(2)  # (B G N L)
        dB = dB.reshape(ctx.B_shape).to(ctx.B_dtype)
        dC = dC.reshape(ctx.C_shape).to(ctx.C_dtype)
        dA = dA.sum(0).to(A.dtype)  # (D N)
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
    Bg, Cg, x, dt, A, D, z, dt_bias = contiguous(Bg, Cg, x, dt, A, D, z, dt_bias)
    # The state is read and written in place through its strides; a lazily negated view is
    # updated through a resolved copy, written back afterwards.
    work = state.resolve_neg() if state.is_neg() else state
    out = torch.empty(batch, dim, dtype=x.dtype, device=x.device)
    block_n = triton.next_power_of_2(dstate)
    block_d = min(triton.next_power_of_2(dim), max(1, 512 // block_n))
    grid = (batch, triton.cdiv(dim, block_d))
    _step_kernel[grid](
        work, x, dt, A, Bg, Cg, D, z, dt_bias, out,
        dim, dstate, dim // Bg.shape[1],
        *work.stride(), x.stride(0), dt.stride(0),
        z.stride(0) if z is not None else 0,
        Bg.stride(0), Bg.stride(1),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=dt_softplus, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=4,
    )  # fmt: skip
    if work is not state:
        state.copy_(work)
    return out
