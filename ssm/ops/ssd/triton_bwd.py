"""Triton kernels of the SSD backward pass (layouts as in ``triton_fwd.py``).

The gradient of the state entering each chunk comes from ``triton_fwd.chunk_outer_kernel``;
this file holds the backward of the gate, the reverse scan over chunks and the two per-chunk
kernels, one for ``dx`` (and the part of ``ddt`` that multiplies ``x``), one for ``dB`` or
``dC``. Every output element is written by exactly one program, without atomic adds (sums across
programs go to separate slots, added up afterwards): the backward pass is deterministic.
The gradients of ``a = cumsum(dt·A)`` are assembled from these outputs in ``triton.py``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_fwd import chunk_program, flat, flat3, mma


@triton.jit
def gate_bwd_kernel(
    dout_ptr, z_ptr, ungated_ptr, x_ptr, dy_ptr, dz_ptr, dD_ptr,
    rows, cols,
    HAS_Z: tl.constexpr, HAS_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward of ``out = u · silu(z)``, ``u = y + D x``, elementwise on ``(B·L, H·P)``:
    ``dy = dout · silu(z)`` and ``dz = dout · u · silu'(z)`` (with z), and the sums over this
    program's rows of ``dy · x`` (with D), one row of ``(row blocks, H·P)`` per program.
    Grid ``(row blocks, column blocks)``."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs = r[:, None].to(tl.int64) * cols + c[None, :]
    ok = (r[:, None] < rows) & (c[None, :] < cols)
    dy = tl.load(dout_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        u = tl.load(ungated_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        sig = tl.sigmoid(z)
        tl.store(dz_ptr + offs, dy * u * sig * (1.0 + z * (1.0 - sig)), mask=ok)
        dy *= z * sig
        tl.store(dy_ptr + offs, dy, mask=ok)
    if HAS_D:
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        tl.store(dD_ptr + tl.program_id(0) * cols + c, tl.sum(dy * x, axis=0), mask=c < cols)


@triton.jit
def state_passing_bwd_kernel(
    dstates_ptr, prev_ptr, a_ptr, dfinal_ptr, dinit_ptr, dcarry_ptr,
    H, PN, Q, nchunks,
    HAS_DFINAL: tl.constexpr, HAS_INIT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Backward of step 3, from the last chunk to the first:
    ``dS_c = dH_c``, ``dH_{c-1} = dprev_c + exp(a_end,c) dH_c``.

    ``dstates`` holds ``dprev_c`` (the gradient through the outputs of chunk c) on entry and
    ``dS_c`` on exit. Also writes the partial sums, over this program's block, of
    ``exp(a_end,c) <H_{c-1}, dS_c>`` (the gradient of the carried state's decay), shaped
    ``(B, H, K, blocks)``. Grid ``(B, H, blocks of P·N)``.
    """
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    blk = tl.program_id(2)
    e = blk * BLOCK + tl.arange(0, BLOCK)
    ok = e < PN
    if HAS_DFINAL:
        dstate = tl.load(dfinal_ptr + flat3(b, h, e, H, PN), mask=ok, other=0.0).to(tl.float32)
    else:
        dstate = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(nchunks):
        k = nchunks - 1 - i
        offs = flat3(b * nchunks + k, h, e, H, PN)
        dprev = tl.load(dstates_ptr + offs, mask=ok, other=0.0)
        tl.store(dstates_ptr + offs, dstate, mask=ok)
        entering = tl.load(prev_ptr + offs, mask=ok, other=0.0)
        decay = tl.exp(tl.load(a_ptr + flat(b, h, k, Q - 1, H, nchunks, Q)))
        partial = decay * tl.sum(entering * dstate)
        tl.store(dcarry_ptr + flat(b, h, k, blk, H, nchunks, tl.num_programs(2)), partial)
        dstate = dprev + decay * dstate
    if HAS_INIT:
        tl.store(dinit_ptr + flat3(b, h, e, H, PN), dstate, mask=ok)


@triton.jit
def chunk_bwd_dx_kernel(
    x_ptr, dy_ptr, B_ptr, C_ptr, D_ptr, dt_ptr, a_ptr, dstates_ptr,
    dx_ptr, ddt_ptr, dweight_ptr, ddecay_ptr,
    L, H, G, P, N, Q, nchunks,
    HAS_D: tl.constexpr, D_PER_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """For the steps s of a block of rows, the gradient of ``dt_s x_s``,
    ``g_s = exp(a_end - a_s) dS_c B_s + Σ_{t≥s} (B_s·C_t) exp(a_t - a_s) dy_t``; writes

    - ``dx_s = dt_s g_s + D dy_s`` and ``ddt_s = x_s·g_s`` (``(B, H, K, Q)``);
    - ``dweight_s = dt_s x_s·(exp(a_end - a_s) dS_c B_s)``, the gradient of the log of the
      weight with which step s enters the chunk state (``(B, H, K, Q)``);
    - for every step k, ``Σ_{s<k≤t} M_ts`` over this block's rows s, where
      ``M_ts = (C_t·B_s) exp(a_t - a_s) dt_s (dy_t·x_s)``: the intra-chunk part of the
      gradient of ``dt_k A``, each block its own row of ``(B, H, K, blocks, Q)``.

    The columns t are visited from the last block back, carrying the suffix sums over t.
    Grid ``(B·K·H·blocks of BLOCK_M steps,)`` (:func:`~.triton_fwd.chunk_program`)."""
    blocks = tl.cdiv(Q, BLOCK_M)
    pid_bk, h, blk = chunk_program(blocks, H)
    b = (pid_bk // nchunks).to(tl.int64)
    k = pid_bk % nchunks
    g = h // (H // G)
    dot_dtype = x_ptr.dtype.element_ty
    steps = tl.minimum(Q, L - k * Q)
    first = blk * BLOCK_M
    rows = first + tl.arange(0, BLOCK_M)
    row_ok = rows < steps
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    t0 = k * Q  # the chunk's first step
    a_base = flat(b, h, k, 0, H, nchunks, Q)
    a_s = tl.load(a_ptr + a_base + rows, mask=row_ok, other=0.0)
    a_end = tl.load(a_ptr + a_base + Q - 1)
    dt_s = tl.load(dt_ptr + a_base + rows, mask=row_ok, other=0.0)
    offs = flat(b, t0 + rows[:, None], h, p[None, :], L, H, P)
    ok = row_ok[:, None] & (p[None, :] < P)
    x_s = tl.load(x_ptr + offs, mask=ok, other=0.0)  # (M, P)
    B_s = tl.load(
        B_ptr + flat(b, t0 + rows[:, None], g, n[None, :], L, G, N),
        mask=row_ok[:, None] & (n[None, :] < N),
        other=0.0,
    )  # (M, N)
    dST = tl.load(
        dstates_ptr + flat(b * nchunks + k, h, p[None, :], n[:, None], H, P, N),
        mask=(n[:, None] < N) & (p[None, :] < P),
        other=0.0,
    )  # (N, P)
    acc = mma(B_s.to(dot_dtype), dST.to(dot_dtype))
    acc *= tl.where(row_ok, tl.exp(a_end - a_s), 0.0)[:, None]  # (M, P): the state part of g
    dweight = dt_s * tl.sum(acc * x_s.to(tl.float32), axis=1)
    tl.store(dweight_ptr + a_base + rows, dweight, mask=rows < Q)  # zero past the last step

    suffix_carry = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ over the columns already seen
    col_blocks = tl.cdiv(steps - first, BLOCK_K)
    ddecay_row = ddecay_ptr + flat(b, h, k, blk, H, nchunks, blocks) * Q  # (B, H, K, blocks, Q)
    for i in range(col_blocks):
        cols = first + (col_blocks - 1 - i) * BLOCK_K + tl.arange(0, BLOCK_K)
        col_ok = cols < steps
        C_tT = tl.load(
            C_ptr + flat(b, t0 + cols[None, :], g, n[:, None], L, G, N),
            mask=(n[:, None] < N) & col_ok[None, :],
            other=0.0,
        )  # (N, K)
        bc = mma(B_s.to(dot_dtype), C_tT.to(dot_dtype))  # (M, K)
        a_t = tl.load(a_ptr + a_base + cols, mask=col_ok, other=0.0)
        causal = (cols[None, :] >= rows[:, None]) & col_ok[None, :] & row_ok[:, None]
        bcw = bc * tl.exp(tl.where(causal, a_t[None, :] - a_s[:, None], float("-inf")))
        dy_t = tl.load(
            dy_ptr + flat(b, t0 + cols[:, None], h, p[None, :], L, H, P),
            mask=col_ok[:, None] & (p[None, :] < P),
            other=0.0,
        )  # (K, P)
        acc += mma(bcw.to(dot_dtype), dy_t.to(dot_dtype))
        xdy = mma(x_s.to(dot_dtype), tl.trans(dy_t).to(dot_dtype))  # (M, K): x_s·dy_t
        m = bcw * xdy * dt_s[:, None]  # M_ts, rows s, columns t
        suffix = tl.cumsum(m, axis=1, reverse=True) + suffix_carry[:, None]  # Σ_{t'≥t} M_t's
        suffix_carry += tl.sum(m, axis=1)
        ddecay = tl.sum(tl.where(rows[:, None] < cols[None, :], suffix, 0.0), axis=0)
        tl.store(ddecay_row + cols, ddecay, mask=col_ok)
    tl.store(ddt_ptr + a_base + rows, tl.sum(acc * x_s.to(tl.float32), axis=1), mask=rows < Q)
    dx = acc * dt_s[:, None]
    if HAS_D:
        dy_s = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        if D_PER_DIM:
            D = tl.load(D_ptr + h * P + p, mask=p < P, other=0.0).to(tl.float32)[None, :]
        else:
            D = tl.load(D_ptr + h).to(tl.float32)
        dx += dy_s * D
    tl.store(dx_ptr + offs, dx, mask=ok)


@triton.jit
def chunk_bwd_dbc_kernel(
    x_ptr, dy_ptr, other_ptr, dt_ptr, a_ptr, st_ptr, out_ptr, C_ptr, dout_decay_ptr,
    batch, L, H, G, P, N, Q, nchunks,
    FOR_B: tl.constexpr, HEADS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Gradient of B (``FOR_B``) or of C for a block of steps, summed over the heads of a group:

    - ``dB_s = Σ_h [exp(a_end - a_s) dt_s dS_cᵀ x_s + Σ_{t≥s} exp(a_t - a_s) dt_s (x_s·dy_t) C_t]``
      with ``other = C`` and ``st = dS`` (gradients of the chunk states);
    - ``dC_t = Σ_h [exp(a_t) H_{c-1}ᵀ dy_t + Σ_{s≤t} exp(a_t - a_s) dt_s (dy_t·x_s) B_s]``
      with ``other = B`` and ``st`` the states entering the chunks.

    Each program sums ``HEADS`` heads of a group in a loop and writes its own slot of the
    output ``(H/G/HEADS, B, L, G, N)`` float32 (the slots are added up afterwards). For C it
    also writes, per head, ``dy_t·(exp(a_t) H_{c-1} C_t)``, the gradient of ``a_t`` through
    the state-to-output term (``(B, H, K, Q)``).
    Grid ``(B·K·G·H/G/HEADS·blocks of BLOCK_M steps,)`` (:func:`~.triton_fwd.chunk_program`).
    """
    blocks = tl.cdiv(Q, BLOCK_M)
    splits = H // G // HEADS
    pid_bk, pid_g, blk = chunk_program(blocks, G * splits)
    b = (pid_bk // nchunks).to(tl.int64)
    k = pid_bk % nchunks
    g = pid_g // splits
    split = pid_g % splits
    dot_dtype = x_ptr.dtype.element_ty
    steps = tl.minimum(Q, L - k * Q)
    t0 = k * Q  # the chunk's first step
    first = blk * BLOCK_M
    rows = first + tl.arange(0, BLOCK_M)
    row_ok = rows < steps
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    if FOR_B:  # rows are sources s, columns targets t >= s
        row_src = x_ptr
        col_src = dy_ptr
        lo = first
        hi = steps
    else:  # rows are targets t, columns sources s <= t
        row_src = dy_ptr
        col_src = x_ptr
        lo = 0
        hi = tl.minimum(first + BLOCK_M, steps)
        C_t = tl.load(
            C_ptr + flat(b, t0 + rows[:, None], g, n[None, :], L, G, N),
            mask=row_ok[:, None] & (n[None, :] < N),
            other=0.0,
        ).to(tl.float32)  # (M, N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r in range(HEADS):
        h = (g * splits + split) * HEADS + r
        a_base = flat(b, h, k, 0, H, nchunks, Q)
        a_r = tl.load(a_ptr + a_base + rows, mask=row_ok, other=0.0)
        u = tl.load(
            row_src + flat(b, t0 + rows[:, None], h, p[None, :], L, H, P),
            mask=row_ok[:, None] & (p[None, :] < P),
            other=0.0,
        )  # (M, P)
        st = tl.load(
            st_ptr + flat(b * nchunks + k, h, p[:, None], n[None, :], H, P, N),
            mask=(p[:, None] < P) & (n[None, :] < N),
            other=0.0,
        )  # (P, N)
        if FOR_B:
            dt_r = tl.load(dt_ptr + a_base + rows, mask=row_ok, other=0.0)
            w_row = tl.exp(tl.load(a_ptr + a_base + Q - 1) - a_r) * dt_r
        else:
            w_row = tl.exp(a_r)
        w_row = tl.where(row_ok, w_row, 0.0)
        from_state = mma(u.to(dot_dtype), st.to(dot_dtype)) * w_row[:, None]  # (M, N)
        acc += from_state
        if not FOR_B:
            decay_grad = tl.sum(from_state * C_t, axis=1)  # zero past the last step
            tl.store(dout_decay_ptr + a_base + rows, decay_grad, mask=rows < Q)
        for c0 in range(lo, hi, BLOCK_K):
            cols = c0 + tl.arange(0, BLOCK_K)
            col_ok = cols < steps
            vT = tl.load(
                col_src + flat(b, t0 + cols[None, :], h, p[:, None], L, H, P),
                mask=(p[:, None] < P) & col_ok[None, :],
                other=0.0,
            )  # (P, K)
            uv = mma(u.to(dot_dtype), vT.to(dot_dtype))  # (M, K)
            a_c = tl.load(a_ptr + a_base + cols, mask=col_ok, other=0.0)
            ok = col_ok[None, :] & row_ok[:, None]
            if FOR_B:
                causal = ok & (cols[None, :] >= rows[:, None])
                w = tl.exp(tl.where(causal, a_c[None, :] - a_r[:, None], float("-inf")))
                w *= dt_r[:, None]
            else:
                causal = ok & (cols[None, :] <= rows[:, None])
                w = tl.exp(tl.where(causal, a_r[:, None] - a_c[None, :], float("-inf")))
                w *= tl.load(dt_ptr + a_base + cols, mask=col_ok, other=0.0)[None, :]
            o = tl.load(
                other_ptr + flat(b, t0 + cols[:, None], g, n[None, :], L, G, N),
                mask=col_ok[:, None] & (n[None, :] < N),
                other=0.0,
            )  # (K, N)
            acc += mma((uv * w).to(dot_dtype), o.to(dot_dtype))
    out = flat(split * batch + b, t0 + rows[:, None], g, n[None, :], L, G, N)
    tl.store(out_ptr + out, acc, mask=row_ok[:, None] & (n[None, :] < N))
