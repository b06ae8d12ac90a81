"""Triton kernels for the selective scan: forward, backward and the decode step.

Same signatures and semantics as :mod:`ssm.ops.selective_scan.reference`. Dimension letters:
B batch, D channels, L length, N state size, G groups, T the time tile.

One program owns a block of channels of one batch element (within one group) and walks the
sequence in tiles of ``T`` steps, ``T`` being one 16-byte vector of the input (8 steps in 16-bit
types, 4 in float32). Each thread owns one channel: it loads the ``T`` steps of its channel with
one vector load, and for each state ``n`` in turn runs the recurrence
``h_t = exp(Δ_t A_n) h_{t-1} + Δ_t B_t u_t`` over the tile in registers (an associative scan
that the compiler keeps inside the thread), accumulating ``y_t += C_t h_t``. The state of each
``(channel, n)`` goes from tile to tile through a small buffer that only its thread touches.

The ``(B, D, N, L)`` tensor of states is never written. The forward saves the state every
``CHUNK`` steps; the backward walks the chunks in reverse, recomputes the states at the start of
each tile of the chunk from its checkpoint, then walks the tiles in reverse, recomputes their
states and runs the adjoint recurrence ``dh_t = C_t dy_t + exp(Δ_{t+1} A) dh_{t+1}`` as a reverse
scan. Gradients summed over the batch (``dA``, ``dD``, ``ddelta_bias``) are written per batch
element and summed with torch. ``dB`` and ``dC`` are summed over the channels of a group: within
a program by the compiler's reduction, across programs with atomic adds or, when
``torch.are_deterministic_algorithms_enabled()``, through per-program partials summed with torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..dispatch import deterministic

# Knobs, measured on an H100 (see the README). Steps between two saved states, a power of 2:
# N float32 per channel every CHUNK steps (128 was no faster).
CHUNK = 64
# A program holds 32 · NUM_WARPS channels (1 or 2 made the backward 5-13 % faster in bf16).
NUM_WARPS = 4
# A tile is one vector load per thread: 16 bytes on a GPU. The CPU interpreter has no vectors
# and pays per operation, so larger tiles (e.g. 64 bytes) make it much faster. The backward
# keeps about three times more of a tile live than the forward; 8-byte tiles there halve its
# registers but made it 40 % slower.
TILE_BYTES = 16
BWD_TILE_BYTES = 16
LOG2_E = tl.constexpr(1.4426950408889634)


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
        pre = pre + bias
    dt = pre
    if SOFTPLUS:
        dt = _softplus(pre)
    return pre, tl.where(mask, dt, 0.0)


# The running states live in a float32 buffer (B, rows, D, N), read and written only by the
# thread that owns the channel. Its strides (N and 1) are passed as run-time values, never
# specialized, so that the compiler does not vectorize along N and keeps one channel per thread
# as in the tiles (a vectorized layout would cost a shuffle through shared memory per state).
# Rows: 0 holds zeros; c + 1 the state after chunk c (the last one after the sequence).
@triton.jit(do_not_specialize=["stride_state_d", "stride_state_n"])
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, state_ptr,
    dim, length, dim_per_group, n_tiles, n_rows,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    stride_bc_b, stride_bc_g, stride_bc_n, stride_state_d, stride_state_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_CHUNKS: tl.constexpr, TILES_PER_CHUNK: tl.constexpr,
    DSTATE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets for large tensors
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_dg = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # channel within the group
    d_mask = offs_dg < dim_per_group
    offs_d = pid_g * dim_per_group + offs_dg  # (D)
    offs_t = tl.arange(0, BLOCK_T)

    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    u_col = u_ptr + pid_b * stride_u_b + offs_d[None, :] * stride_u_d  # (1 D)
    delta_col = delta_ptr + pid_b * stride_delta_b + offs_d[None, :] * stride_delta_d
    out_col = out_ptr + (pid_b * dim + offs_d[None, :]) * length
    bc_base = pid_b * stride_bc_b + pid_g * stride_bc_g  # (b, g) in B and C
    row_size = dim * DSTATE
    h_col = state_ptr + pid_b * n_rows * row_size + offs_d * stride_state_d  # (D)

    for i in range(0, n_tiles):
        # Chunk c starts from row c and leaves its state in row c + 1 (all in row 1 when
        # nothing is saved for a backward pass).
        chunk = i // TILES_PER_CHUNK if STORE_CHUNKS else 0
        read_row = chunk + (i > chunk * TILES_PER_CHUNK)
        t = i * BLOCK_T + offs_t
        t_mask = t < length
        td_mask = t_mask[:, None] & d_mask[None, :]
        u = tl.load(u_col + t[:, None], mask=td_mask, other=0.0).to(tl.float32)  # (T D)
        _, dt = _load_dt(delta_col + t[:, None], td_mask, bias[None, :], HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
        for n in range(DSTATE):
            A_n = tl.load(A_ptr + offs_d * DSTATE + n, mask=d_mask, other=0.0).to(tl.float32)
            A2_n = A_n * LOG2_E
            bc_n = bc_base + n * stride_bc_n + t  # (T)
            B_n = tl.load(B_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
            h_ptrs = h_col + n * stride_state_n
            h0_n = tl.load(h_ptrs + read_row * row_size, mask=d_mask, other=0.0)

            a = tl.exp2(dt * A2_n[None, :])  # (T D)   Ā_t = exp(Δ_t A_n)
            bu = dtu * B_n[:, None]  # (T D)   B̄_t u_t = Δ_t B_t u_t
            # Fold h0 into the first step; then the second component of the scan is h_t.
            bu = tl.where(offs_t[:, None] == 0, a * h0_n[None, :] + bu, bu)
            _, H = tl.associative_scan((a, bu), axis=0, combine_fn=_combine)  # (T D)
            y += H * C_n[:, None]  # C_t h_t, summed over n
            # The last row (x + -0.0 folds to x: the sum costs nothing); Ā = 1 past the end.
            h_end = tl.sum(tl.where(offs_t[:, None] == BLOCK_T - 1, H, -0.0), axis=0)
            tl.store(h_ptrs + (chunk + 1) * row_size, h_end, mask=d_mask)
        if HAS_D:
            y += Dv[None, :] * u
        if HAS_Z:
            z_ptrs = z_ptr + pid_b * stride_z_b + offs_d[None, :] * stride_z_d + t[:, None]
            z = tl.load(z_ptrs, mask=td_mask, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(out_col + t[:, None], y.to(out_ptr.dtype.element_ty), mask=td_mask)


# The backward reuses the forward's state buffer, with TILES_PER_CHUNK + 2 more rows after the
# n_slots saved states: the states at the start of each tile of the current chunk, dL/dh at the
# start of the tile after the current one (zeros to begin with), and dA accumulated over the
# sequence (zeros to begin with).
@triton.jit(do_not_specialize=["stride_state_d", "stride_state_n"])
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, state_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
    dim, length, dim_per_group, groups, n_tiles, n_chunks, n_slots, n_rows, n_blocks,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    stride_dout_b, stride_dout_d, stride_bc_b, stride_bc_g, stride_bc_n,
    stride_state_d, stride_state_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ATOMIC: tl.constexpr, TILES_PER_CHUNK: tl.constexpr,
    DSTATE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    pid_g = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_dg = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_dg < dim_per_group
    offs_d = pid_g * dim_per_group + offs_dg  # (D)
    offs_t = tl.arange(0, BLOCK_T)

    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    u_col = u_ptr + pid_b * stride_u_b + offs_d[None, :] * stride_u_d  # (1 D)
    delta_col = delta_ptr + pid_b * stride_delta_b + offs_d[None, :] * stride_delta_d
    dout_col = dout_ptr + pid_b * stride_dout_b + offs_d[None, :] * stride_dout_d
    grad_col = (pid_b * dim + offs_d[None, :]) * length  # du, ddelta, dz: contiguous (B D L)
    bc_base = pid_b * stride_bc_b + pid_g * stride_bc_g
    if ATOMIC:  # dB, dC: (B G N L) float32, summed over channel blocks by atomic adds
        dbc_base = (pid_b * groups + pid_g) * DSTATE * length
    else:  # dB, dC: (B G blocks N L) float32 partials, summed with torch
        dbc_base = ((pid_b * groups + pid_g) * n_blocks + pid_d) * DSTATE * length
    row_size = dim * DSTATE
    h_col = state_ptr + pid_b * n_rows * row_size + offs_d * stride_state_d  # (D)
    carry_row = n_slots + TILES_PER_CHUNK
    dA_row = carry_row + 1

    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for c_rev in range(0, n_chunks):
        chunk = n_chunks - 1 - c_rev
        chunk_tiles = tl.minimum(TILES_PER_CHUNK, n_tiles - chunk * TILES_PER_CHUNK)
        # 1. The states at the start of the chunk's tiles, from its saved state (row chunk).
        for k in range(0, chunk_tiles - 1):
            read_row = tl.where(k == 0, chunk, n_slots + k)
            t = (chunk * TILES_PER_CHUNK + k) * BLOCK_T + offs_t
            t_mask = t < length
            td_mask = t_mask[:, None] & d_mask[None, :]
            u = tl.load(u_col + t[:, None], mask=td_mask, other=0.0).to(tl.float32)
            _, dt = _load_dt(delta_col + t[:, None], td_mask, bias[None, :], HAS_BIAS, SOFTPLUS)
            dtu = dt * u
            for n in range(DSTATE):
                A_n = tl.load(A_ptr + offs_d * DSTATE + n, mask=d_mask, other=0.0).to(tl.float32)
                B_n = tl.load(B_ptr + bc_base + n * stride_bc_n + t, mask=t_mask, other=0.0)
                h_ptrs = h_col + n * stride_state_n
                h0_n = tl.load(h_ptrs + read_row * row_size, mask=d_mask, other=0.0)
                a = tl.exp2(dt * (A_n * LOG2_E)[None, :])  # as in the forward
                bu = dtu * B_n.to(tl.float32)[:, None]
                bu = tl.where(offs_t[:, None] == 0, a * h0_n[None, :] + bu, bu)
                _, H = tl.associative_scan((a, bu), axis=0, combine_fn=_combine)
                h_end = tl.sum(tl.where(offs_t[:, None] == BLOCK_T - 1, H, -0.0), axis=0)
                tl.store(h_ptrs + (n_slots + k + 1) * row_size, h_end, mask=d_mask)

        # 2. The chunk's tiles in reverse: recompute their states, then the adjoint scan.
        for k_rev in range(0, chunk_tiles):
            k = chunk_tiles - 1 - k_rev
            read_row = tl.where(k == 0, chunk, n_slots + k)
            t = (chunk * TILES_PER_CHUNK + k) * BLOCK_T + offs_t
            t_mask = t < length
            td_mask = t_mask[:, None] & d_mask[None, :]
            u = tl.load(u_col + t[:, None], mask=td_mask, other=0.0).to(tl.float32)  # (T D)
            pre, dt = _load_dt(delta_col + t[:, None], td_mask, bias[None, :], HAS_BIAS, SOFTPLUS)
            dtu = dt * u
            # Ā_{t+1} needs Δ one step ahead (0 past the end, so Ā = 1 there).
            ahead_mask = (t + 1 < length)[:, None] & d_mask[None, :]
            _, dt_ahead = _load_dt(
                delta_col + t[:, None] + 1, ahead_mask, bias[None, :], HAS_BIAS, SOFTPLUS
            )
            dy = tl.load(dout_col + t[:, None], mask=td_mask, other=0.0).to(tl.float32)
            if HAS_Z:  # out = y_skip · silu(z): the scan sees dout · silu(z)
                z_ptrs = z_ptr + pid_b * stride_z_b + offs_d[None, :] * stride_z_d + t[:, None]
                z = tl.load(z_ptrs, mask=td_mask, other=0.0).to(tl.float32)
                sig = tl.sigmoid(z)
                dz_in = dy  # dout, kept for dz = dout · y_skip · silu'(z)
                dy = dy * z * sig
                y = Dv[None, :] * u  # y_skip = C h + D u, accumulated over n
            dD_acc += tl.sum(dy * u, axis=0)
            ddt = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)  # dL/dΔ
            du = dy * Dv[None, :]
            for n in range(DSTATE):
                A_n = tl.load(A_ptr + offs_d * DSTATE + n, mask=d_mask, other=0.0).to(tl.float32)
                A2_n = A_n * LOG2_E
                bc_n = bc_base + n * stride_bc_n + t  # (T)
                B_n = tl.load(B_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
                C_n = tl.load(C_ptr + bc_n, mask=t_mask, other=0.0).to(tl.float32)
                h_ptrs = h_col + n * stride_state_n
                h0_n = tl.load(h_ptrs + read_row * row_size, mask=d_mask, other=0.0)
                a = tl.exp2(dt * A2_n[None, :])  # (T D), as in the forward
                bu = dtu * B_n[:, None]
                first = tl.where(offs_t[:, None] == 0, a * h0_n[None, :] + bu, bu)
                _, H = tl.associative_scan((a, first), axis=0, combine_fn=_combine)
                if HAS_Z:
                    y += H * C_n[:, None]

                # dh_t = C_t dy_t + Ā_{t+1} dh_{t+1}, the last step taking dh from the next tile.
                a_ahead = tl.exp2(dt_ahead * A2_n[None, :])  # (T D)
                dh_next = tl.load(h_ptrs + carry_row * row_size, mask=d_mask, other=0.0)
                q = dy * C_n[:, None]
                q = tl.where(offs_t[:, None] == BLOCK_T - 1, q + a_ahead * dh_next[None, :], q)
                _, dH = tl.associative_scan(
                    (a_ahead, q), axis=0, combine_fn=_combine, reverse=True
                )  # fmt: skip
                dh_start = tl.sum(tl.where(offs_t[:, None] == 0, dH, -0.0), axis=0)
                tl.store(h_ptrs + carry_row * row_size, dh_start, mask=d_mask)

                # h_t = Ā_t h_{t-1} + Δ_t B_t u_t, with Ā_t h_{t-1} = h_t - B̄_t u_t.
                w = dH * (H - bu)  # (T D)   dL/dĀ_t · Ā_t
                dA_ptrs = h_ptrs + dA_row * row_size
                dA_n = tl.load(dA_ptrs, mask=d_mask, other=0.0) + tl.sum(w * dt, axis=0)
                tl.store(dA_ptrs, dA_n, mask=d_mask)
                s = dH * B_n[:, None]
                ddt += w * A_n[None, :] + s * u
                du += s * dt
                dB_n = tl.sum(dH * dtu, axis=1)  # (T), over this program's channels
                dC_n = tl.sum(H * dy, axis=1)
                dbc = dbc_base + n * length + t
                if ATOMIC:
                    tl.atomic_add(dB_ptr + dbc, dB_n, mask=t_mask, sem="relaxed")
                    tl.atomic_add(dC_ptr + dbc, dC_n, mask=t_mask, sem="relaxed")
                else:
                    tl.store(dB_ptr + dbc, dB_n, mask=t_mask)
                    tl.store(dC_ptr + dbc, dC_n, mask=t_mask)

            if HAS_Z:
                dz = dz_in * y * sig * (1.0 + z * (1.0 - sig))
                tl.store(
                    dz_ptr + grad_col + t[:, None], dz.to(dz_ptr.dtype.element_ty), mask=td_mask
                )
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(pre)
            ddt = tl.where(td_mask, ddt, 0.0)
            dbias_acc += tl.sum(ddt, axis=0)
            tl.store(du_ptr + grad_col + t[:, None], du.to(du_ptr.dtype.element_ty), mask=td_mask)
            tl.store(
                ddelta_ptr + grad_col + t[:, None],
                ddt.to(ddelta_ptr.dtype.element_ty),
                mask=td_mask,
            )
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


def _blocks(dim_per_group: int, u: torch.Tensor, tile_bytes: int) -> tuple[int, int, int]:
    """``(BLOCK_D, BLOCK_T, num_warps)``: a tile's steps are one ``tile_bytes`` vector of ``u``,
    at most ``CHUNK`` steps, and a program has one channel per thread."""
    block_t = min(CHUNK, max(2, tile_bytes // u.element_size()))
    block_d = min(32 * NUM_WARPS, triton.next_power_of_2(dim_per_group))
    return block_d, block_t, max(1, block_d // 32)


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
        block_d, block_t, num_warps = _blocks(dpg, u, TILE_BYTES)
        tiles_per_chunk = CHUNK // block_t
        n_tiles = triton.cdiv(length, block_t)
        n_chunks = triton.cdiv(length, CHUNK)
        store_chunks = any(ctx.needs_input_grad)
        # rows: zeros, one per chunk (or one for the final state), and the backward's scratch
        n_slots = n_chunks + 1 if store_chunks else 2
        bwd_block_t = _blocks(dpg, u, BWD_TILE_BYTES)[1]
        n_rows = n_slots + (CHUNK // bwd_block_t + 2 if store_chunks else 0)
        dev = u.device
        out = torch.empty(batch, dim, length, dtype=u.dtype, device=dev)
        states = torch.empty(batch, n_rows, dim, dstate, dtype=torch.float32, device=dev)
        states[:, 0].zero_()
        grid = (batch, groups, triton.cdiv(dpg, block_d))
        _fwd_kernel[grid](
            u, delta, A, Bg, Cg, D, z, delta_bias, out, states,
            dim, length, dpg, n_tiles, n_rows,
            *_strides(u), *_strides(delta), *_strides(z),
            Bg.stride(0), Bg.stride(1), Bg.stride(2), dstate, 1,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, STORE_CHUNKS=store_chunks, TILES_PER_CHUNK=tiles_per_chunk,
            DSTATE=dstate, BLOCK_D=block_d, BLOCK_T=block_t, num_warps=num_warps,
        )  # fmt: skip
        last_state = states[:, n_slots - 1].clone(memory_format=torch.contiguous_format)
        ctx.save_for_backward(u, delta, A, Bg, Cg, D, z, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        ctx.layout = (n_chunks, n_slots, bwd_block_t, CHUNK // bwd_block_t)
        ctx.B_shape, ctx.C_shape = B.shape, C.shape
        ctx.B_dtype, ctx.C_dtype = B.dtype, C.dtype
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, _dlast_state):
        u, delta, A, Bg, Cg, D, z, delta_bias, states = ctx.saved_tensors
        n_chunks, n_slots, block_t, tiles_per_chunk = ctx.layout
        batch, dim, length = u.shape
        groups, dstate = Bg.shape[1], A.shape[1]
        dpg = dim // groups
        block_d, _, num_warps = _blocks(dpg, u, BWD_TILE_BYTES)
        n_tiles = triton.cdiv(length, block_t)
        dout = _last_dim_contiguous(dout)
        n_blocks = triton.cdiv(dpg, block_d)
        atomic = n_blocks > 1 and not deterministic()
        dev = u.device
        states[:, -2:].zero_()  # dL/dh after the sequence, and the dA accumulator
        du = torch.empty(batch, dim, length, dtype=u.dtype, device=dev)
        ddelta = torch.empty(batch, dim, length, dtype=delta.dtype, device=dev)
        dz = torch.empty(batch, dim, length, dtype=z.dtype, device=dev) if z is not None else None
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
            du, ddelta, dz, dD, dbias, dB, dC,
            dim, length, dpg, groups, n_tiles, n_chunks, n_slots, states.shape[1], n_blocks,
            *_strides(u), *_strides(delta), *_strides(z), *_strides(dout),
            Bg.stride(0), Bg.stride(1), Bg.stride(2), dstate, 1,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, ATOMIC=atomic, TILES_PER_CHUNK=tiles_per_chunk,
            DSTATE=dstate, BLOCK_D=block_d, BLOCK_T=block_t, num_warps=num_warps,
        )  # fmt: skip
        if not atomic:
            dB, dC = dB.sum(2), dC.sum(2)  # (B G N L)
        dB = dB.reshape(ctx.B_shape).to(ctx.B_dtype)
        dC = dC.reshape(ctx.C_shape).to(ctx.C_dtype)
        dA = states[:, -1].sum(0).to(A.dtype)  # (D N)
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
