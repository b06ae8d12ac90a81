"""Triton kernels of the SSD forward pass, one per step of the chunked algorithm (README.md).

Layouts (all contiguous; letters as in ``reference.py``, K chunks of Q steps):
x, z, y ``(B, L, H, P)``; B, C ``(B, L, G, N)``; dt after bias and softplus and its within-chunk
cumulative sum ``a`` of ``dt·A``: ``(B, H, K, Q)`` float32, zero steps past ``L``; chunk states
``(B, K, H, P, N)`` float32.

Matrix products take operands in the dtype of x (bf16, fp16 or fp32) and accumulate in float32;
fp32 operands go through three TF32 products (``tf32x3``, close to fp32 accuracy on tensor
cores). Exponents and cumulative sums are float32.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..dispatch import interpreting

# Triton 3.6's CPU interpreter multiplies bfloat16 blocks in tl.dot as raw 16-bit integers; there,
# operands already rounded to the dot dtype are multiplied in float32 instead (same products).
INTERPRETED = tl.constexpr(interpreting())


@triton.jit
def mma(a, b):
    """``a @ b`` accumulated in float32; fp32 operands split in TF32 high and low parts."""
    if INTERPRETED:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision="tf32x3")


@triton.jit
def chunk_program(per_chunk, heads, HEADS_INNER: tl.constexpr):
    """``(b·K + k, head, piece)`` of this program. Grid ``(B·K·per_chunk, heads)``, or with
    ``HEADS_INNER`` ``(B·K·heads·per_chunk,)``: the heads of one chunk adjacent too (they share
    its B, C and C·B products in the L2 cache)."""
    if HEADS_INNER:
        pid = tl.program_id(0)
        return pid // (per_chunk * heads), (pid // per_chunk) % heads, pid % per_chunk
    else:
        return tl.program_id(0) // per_chunk, tl.program_id(1), tl.program_id(0) % per_chunk


@triton.jit
def dt_cumsum_kernel(
    dt_ptr, A_ptr, bias_ptr, dt_out_ptr, a_out_ptr,
    L, H, Q, nchunks,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """Step 0: ``dt ← softplus(dt + bias)`` and ``a = cumsum(dt·A)`` within each chunk.
    Grid ``(B, K, H)``."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    h = tl.program_id(2)
    q = tl.arange(0, BLOCK_Q)
    t = k * Q + q
    valid = (q < Q) & (t < L)
    dt = tl.load(dt_ptr + (b * L + t) * H + h, mask=valid, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    dt = tl.where(valid, dt, 0.0)
    a = tl.cumsum(dt * tl.load(A_ptr + h).to(tl.float32), axis=0)
    out = ((b * H + h) * nchunks + k) * Q + q
    tl.store(dt_out_ptr + out, dt, mask=q < Q)
    tl.store(a_out_ptr + out, a, mask=q < Q)


@triton.jit
def chunk_outer_kernel(
    u_ptr, v_ptr, dt_ptr, a_ptr, out_ptr,
    L, H, G, P, N, Q, nchunks,
    TO_END: tl.constexpr, HEADS_INNER: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """``out_c = Σ_{t in chunk c} w_t u_t v_tᵀ``, a ``(P, N)`` matrix per chunk and head.

    Step 2 (chunk states) with ``TO_END``: u = x, v = B, ``w_t = exp(a_end - a_t) dt_t``.
    Backward of step 4 otherwise: u = dy, v = C, ``w_t = exp(a_t)`` (gradient of the state
    entering the chunk). Grid ``(B·K·tiles of P × N, H)``, the tiles of one chunk adjacent.
    """
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles = tl.cdiv(P, BLOCK_P) * tiles_n
    pid_bk, h, tile = chunk_program(tiles, H, HEADS_INNER)
    b = (pid_bk // nchunks).to(tl.int64)
    k = pid_bk % nchunks
    p = (tile // tiles_n) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    g = h // (H // G)
    dot_dtype = u_ptr.dtype.element_ty
    a_base = ((b * H + h) * nchunks + k) * Q
    a_end = tl.load(a_ptr + a_base + Q - 1)
    steps = tl.minimum(Q, L - k * Q)
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for q0 in range(0, steps, BLOCK_K):
        q = q0 + tl.arange(0, BLOCK_K)
        ok = q < steps
        t = k * Q + q
        uT = tl.load(
            u_ptr + ((b * L + t[None, :]) * H + h) * P + p[:, None],
            mask=(p[:, None] < P) & ok[None, :],
            other=0.0,
        )  # (P, K)
        v = tl.load(
            v_ptr + ((b * L + t[:, None]) * G + g) * N + n[None, :],
            mask=ok[:, None] & (n[None, :] < N),
            other=0.0,
        ).to(tl.float32)  # (K, N)
        a = tl.load(a_ptr + a_base + q, mask=ok, other=0.0)
        if TO_END:
            w = tl.exp(a_end - a) * tl.load(dt_ptr + a_base + q, mask=ok, other=0.0)
        else:
            w = tl.exp(a)
        w = tl.where(ok, w, 0.0)
        acc += mma(uT.to(dot_dtype), (v * w[:, None]).to(dot_dtype))
    out = (((b * nchunks + k) * H + h) * P + p[:, None]) * N + n[None, :]
    tl.store(out_ptr + out, acc, mask=(p[:, None] < P) & (n[None, :] < N))


@triton.jit
def state_passing_fwd_kernel(
    states_ptr, prev_ptr, a_ptr, init_ptr, final_ptr,
    H, PN, Q, nchunks,
    HAS_INIT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Step 3: ``H_c = exp(a_end,c) H_{c-1} + S_c``, a scan over chunks.

    Reads the chunk states ``S_c`` (float32) and writes the state entering chunk c,
    ``H_{c-1}``, to ``prev`` (in its dtype: the dtype of the matrix-product operands that read
    it); writes the final state (float32). Grid ``(B, H, blocks of P·N)``.
    """
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    e = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    ok = e < PN
    if HAS_INIT:
        state = tl.load(init_ptr + (b * H + h) * PN + e, mask=ok, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(nchunks):
        offs = ((b * nchunks + k) * H + h) * PN + e
        chunk_state = tl.load(states_ptr + offs, mask=ok, other=0.0)
        tl.store(prev_ptr + offs, state.to(prev_ptr.dtype.element_ty), mask=ok)
        decay = tl.exp(tl.load(a_ptr + ((b * H + h) * nchunks + k) * Q + Q - 1))
        state = decay * state + chunk_state
    tl.store(final_ptr + (b * H + h) * PN + e, state, mask=ok)


@triton.jit
def chunk_cb_kernel(
    B_ptr, C_ptr, cb_ptr,
    L, G, N, Q, nchunks,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """``CB_ts = C_t·B_s`` for the pairs ``s ≤ t`` of each chunk and group, ``(B, K, G, Q, Q)``
    float32 (blocks above the diagonal are not written; nothing reads them). Computed once per
    group instead of once per head. Grid ``(B·K·blocks², G)``."""
    blocks = tl.cdiv(Q, BLOCK_M)
    pid_bk = tl.program_id(0) // (blocks * blocks)
    i = (tl.program_id(0) // blocks) % blocks
    j = tl.program_id(0) % blocks
    if j > i:
        return
    b = (pid_bk // nchunks).to(tl.int64)
    k = pid_bk % nchunks
    g = tl.program_id(1)
    steps = tl.minimum(Q, L - k * Q)
    rows = i * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = j * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.arange(0, BLOCK_N)
    C_t = tl.load(
        C_ptr + ((b * L + k * Q + rows[:, None]) * G + g) * N + n[None, :],
        mask=(rows[:, None] < steps) & (n[None, :] < N),
        other=0.0,
    )  # (M, N)
    B_sT = tl.load(
        B_ptr + ((b * L + k * Q + cols[None, :]) * G + g) * N + n[:, None],
        mask=(n[:, None] < N) & (cols[None, :] < steps),
        other=0.0,
    )  # (N, M)
    cb = mma(C_t, B_sT)
    out = ((b * nchunks + k) * G + g) * Q * Q + rows[:, None] * Q + cols[None, :]
    tl.store(cb_ptr + out, cb, mask=(rows[:, None] < Q) & (cols[None, :] < Q))


@triton.jit
def chunk_scan_fwd_kernel(
    x_ptr, z_ptr, B_ptr, C_ptr, D_ptr, dt_ptr, a_ptr, prev_ptr, out_ptr, y_ptr, cb_ptr,
    L, H, G, P, N, Q, nchunks,
    HAS_D: tl.constexpr, D_PER_DIM: tl.constexpr, HAS_Z: tl.constexpr, STORE_Y: tl.constexpr,
    USE_CB: tl.constexpr, HEADS_INNER: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Steps 1 and 4: ``y_t = exp(a_t) H_{c-1} C_t + Σ_{s≤t} (C_t·B_s) exp(a_t - a_s) dt_s x_s``,
    then ``out = (y + D x) · silu(z)``; with ``STORE_Y`` also ``y + D x`` (the gradient of z
    needs it). With ``USE_CB`` the products ``C_t·B_s`` are read from ``chunk_cb_kernel``'s
    output instead of computed here. Grid ``(B·K·blocks of BLOCK_M steps, H)``, the blocks of
    one chunk adjacent (they share its state and inputs in the L2 cache).
    """
    blocks = tl.cdiv(Q, BLOCK_M)
    pid_bk, h, blk = chunk_program(blocks, H, HEADS_INNER)
    b = (pid_bk // nchunks).to(tl.int64)
    k = pid_bk % nchunks
    g = h // (H // G)
    dot_dtype = x_ptr.dtype.element_ty
    steps = tl.minimum(Q, L - k * Q)
    rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < steps
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    a_base = ((b * H + h) * nchunks + k) * Q
    a_t = tl.load(a_ptr + a_base + rows, mask=row_ok, other=0.0)
    C_t = tl.load(
        C_ptr + ((b * L + k * Q + rows[:, None]) * G + g) * N + n[None, :],
        mask=row_ok[:, None] & (n[None, :] < N),
        other=0.0,
    )  # (M, N)
    prevT = tl.load(
        prev_ptr + (((b * nchunks + k) * H + h) * P + p[None, :]) * N + n[:, None],
        mask=(n[:, None] < N) & (p[None, :] < P),
        other=0.0,
    )  # (N, P)
    acc = mma(C_t.to(dot_dtype), prevT.to(dot_dtype))
    acc *= tl.exp(a_t)[:, None]  # (M, P): state-to-output term
    cb_base = ((b * nchunks + k) * G + g) * Q * Q
    for s0 in range(0, tl.minimum((blk + 1) * BLOCK_M, steps), BLOCK_K):
        cols = s0 + tl.arange(0, BLOCK_K)
        col_ok = cols < steps
        if USE_CB:
            cb = tl.load(
                cb_ptr + cb_base + rows[:, None] * Q + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :] & (cols[None, :] <= rows[:, None]),
                other=0.0,
            )  # (M, K)
        else:
            B_sT = tl.load(
                B_ptr + ((b * L + k * Q + cols[None, :]) * G + g) * N + n[:, None],
                mask=(n[:, None] < N) & col_ok[None, :],
                other=0.0,
            )  # (N, K)
            cb = mma(C_t.to(dot_dtype), B_sT.to(dot_dtype))  # (M, K)
        a_s = tl.load(a_ptr + a_base + cols, mask=col_ok, other=0.0)
        dt_s = tl.load(dt_ptr + a_base + cols, mask=col_ok, other=0.0)
        causal = (cols[None, :] <= rows[:, None]) & col_ok[None, :] & row_ok[:, None]
        w = tl.exp(tl.where(causal, a_t[:, None] - a_s[None, :], float("-inf"))) * dt_s[None, :]
        x_s = tl.load(
            x_ptr + ((b * L + k * Q + cols[:, None]) * H + h) * P + p[None, :],
            mask=col_ok[:, None] & (p[None, :] < P),
            other=0.0,
        )  # (K, P)
        acc += mma((cb * w).to(dot_dtype), x_s.to(dot_dtype))
    offs = ((b * L + k * Q + rows[:, None]) * H + h) * P + p[None, :]
    ok = row_ok[:, None] & (p[None, :] < P)
    if HAS_D:
        x_t = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        if D_PER_DIM:
            D = tl.load(D_ptr + h * P + p, mask=p < P, other=0.0).to(tl.float32)[None, :]
        else:
            D = tl.load(D_ptr + h).to(tl.float32)
        acc += x_t * D
    if STORE_Y:
        tl.store(y_ptr + offs, acc, mask=ok)
    if HAS_Z:
        z = tl.load(z_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        acc *= z * tl.sigmoid(z)
    tl.store(out_ptr + offs, acc, mask=ok)


@triton.jit
def state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    H, G, P, N,
    s_stride_b, s_stride_h, s_stride_p, s_stride_n,
    HAS_D: tl.constexpr, D_PER_DIM: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Decoding step: ``h ← exp(dt A) h + dt x Bᵀ`` in place, ``y = (h C + D x) · silu(z)``.
    x, z, y ``(B, H, P)``, dt ``(B, H)``, B, C ``(B, G, N)``, state any strides.
    Grid ``(B, H, blocks of P)``."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    g = h // (H // G)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    dt = tl.load(dt_ptr + b * H + h).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    decay = tl.exp(dt * tl.load(A_ptr + h).to(tl.float32))
    ok = (p[:, None] < P) & (n[None, :] < N)
    s_ptrs = (
        state_ptr
        + b * s_stride_b
        + h * s_stride_h
        + p[:, None] * s_stride_p
        + n[None, :] * s_stride_n
    )
    state = tl.load(s_ptrs, mask=ok, other=0.0).to(tl.float32)  # (P, N)
    x = tl.load(x_ptr + (b * H + h) * P + p, mask=p < P, other=0.0).to(tl.float32)
    B = tl.load(B_ptr + (b * G + g) * N + n, mask=n < N, other=0.0).to(tl.float32)
    C = tl.load(C_ptr + (b * G + g) * N + n, mask=n < N, other=0.0).to(tl.float32)
    state = decay * state + (dt * x)[:, None] * B[None, :]
    tl.store(s_ptrs, state, mask=ok)
    y = tl.sum(state * C[None, :], axis=1)  # (P,)
    if HAS_D:
        if D_PER_DIM:
            D = tl.load(D_ptr + h * P + p, mask=p < P, other=0.0).to(tl.float32)
        else:
            D = tl.load(D_ptr + h).to(tl.float32)
        y += x * D
    if HAS_Z:
        z = tl.load(z_ptr + (b * H + h) * P + p, mask=p < P, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(y_ptr + (b * H + h) * P + p, y, mask=p < P)
