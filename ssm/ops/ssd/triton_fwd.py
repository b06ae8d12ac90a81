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
from ..triton_common import softplus

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
def chunk_program(per_chunk, heads):
    """``(b·K + k, head, piece)`` of this program, in a grid ``(B·K·heads·per_chunk,)``: the
    pieces of one chunk adjacent, then its heads (they share its B and C in the L2 cache)."""
    pid = tl.program_id(0)
    return pid // (per_chunk * heads), (pid // per_chunk) % heads, pid % per_chunk


@triton.jit
def flat(i0, i1, i2, i3, n1, n2, n3):
    """Offset of element ``(i0, i1, i2, i3)`` of a contiguous ``(n0, n1, n2, n3)`` tensor (blocks
    of indices broadcast): x, z, y ``(B, L, H, P)`` as ``flat(b, t, h, p, L, H, P)``, B and C
    ``(B, L, G, N)``, dt and a ``(B, H, K, Q)``, chunk states ``(B·K, H, P, N)``."""
    return ((i0 * n1 + i1) * n2 + i2) * n3 + i3


@triton.jit
def flat3(i0, i1, i2, n1, n2):
    """Offset of element ``(i0, i1, i2)`` of a contiguous ``(n0, n1, n2)`` tensor: the decoding
    step's x, z, y ``(B, H, P)`` and B, C ``(B, G, N)``, the states ``(B, H, P·N)``."""
    return (i0 * n1 + i1) * n2 + i2


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
    dt = tl.load(dt_ptr + flat3(b, t, h, L, H), mask=valid, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        dt = softplus(dt)
    dt = tl.where(valid, dt, 0.0)
    a = tl.cumsum(dt * tl.load(A_ptr + h).to(tl.float32), axis=0)
    out = flat(b, h, k, q, H, nchunks, Q)
    tl.store(dt_out_ptr + out, dt, mask=q < Q)
    tl.store(a_out_ptr + out, a, mask=q < Q)


@triton.jit
def chunk_outer_kernel(
    u_ptr, v_ptr, dt_ptr, a_ptr, out_ptr,
    L, H, G, P, N, Q, nchunks,
    TO_END: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """``out_c = Σ_{t in chunk c} w_t u_t v_tᵀ``, a ``(P, N)`` matrix per chunk and head.

    Step 2 (chunk states) with ``TO_END``: u = x, v = B, ``w_t = exp(a_end - a_t) dt_t``.
    Backward of step 4 otherwise: u = dy, v = C, ``w_t = exp(a_t)`` (gradient of the state
    entering the chunk). Grid ``(B·K·H·tiles of P × N,)`` (:func:`chunk_program`).
    """
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles = tl.cdiv(P, BLOCK_P) * tiles_n
    pid_bk, h, tile = chunk_program(tiles, H)
    b = (pid_bk // nchunks).to(tl.int64)
    k = pid_bk % nchunks
    p = (tile // tiles_n) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    g = h // (H // G)
    dot_dtype = u_ptr.dtype.element_ty
    a_base = flat(b, h, k, 0, H, nchunks, Q)
    a_end = tl.load(a_ptr + a_base + Q - 1)
    steps = tl.minimum(Q, L - k * Q)
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for q0 in range(0, steps, BLOCK_K):
        q = q0 + tl.arange(0, BLOCK_K)
        ok = q < steps
        t = k * Q + q
        uT = tl.load(
            u_ptr + flat(b, t[None, :], h, p[:, None], L, H, P),
            mask=(p[:, None] < P) & ok[None, :],
            other=0.0,
        )  # (P, K)
        v = tl.load(
            v_ptr + flat(b, t[:, None], g, n[None, :], L, G, N),
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
    out = flat(b * nchunks + k, h, p[:, None], n[None, :], H, P, N)
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
        state = tl.load(init_ptr + flat3(b, h, e, H, PN), mask=ok, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(nchunks):
        offs = flat3(b * nchunks + k, h, e, H, PN)
        chunk_state = tl.load(states_ptr + offs, mask=ok, other=0.0)
        tl.store(prev_ptr + offs, state.to(prev_ptr.dtype.element_ty), mask=ok)
        decay = tl.exp(tl.load(a_ptr + flat(b, h, k, Q - 1, H, nchunks, Q)))
        state = decay * state + chunk_state
    tl.store(final_ptr + flat3(b, h, e, H, PN), state, mask=ok)


@triton.jit
def _block_weights(
    x_ptr, B_ptr, dt_ptr, a_ptr, C_t, a_t, a_base, b, t0, s0, h, g, p, n, steps,
    L, H, G, P, N, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """For the block of columns ``s0 ..`` of one chunk: the weights
    ``w[t, s] = (C_t·B_s) exp(a_t - a_s) dt_s`` ``(M, K)`` and the inputs ``x_s`` ``(K, P)``
    (zero past the chunk's last step)."""
    cols = s0 + tl.arange(0, BLOCK_M)
    col_ok = cols < steps
    B_sT = tl.load(
        B_ptr + flat(b, t0 + cols[None, :], g, n[:, None], L, G, N),
        mask=(n[:, None] < N) & col_ok[None, :],
        other=0.0,
    )  # (N, K)
    cb = mma(C_t.to(x_ptr.dtype.element_ty), B_sT.to(x_ptr.dtype.element_ty))  # (M, K)
    a_s = tl.load(a_ptr + a_base + cols, mask=col_ok, other=0.0)
    dt_s = tl.load(dt_ptr + a_base + cols, mask=col_ok, other=0.0)
    w = cb * tl.exp(a_t[:, None] - a_s[None, :]) * dt_s[None, :]
    x_s = tl.load(
        x_ptr + flat(b, t0 + cols[:, None], h, p[None, :], L, H, P),
        mask=col_ok[:, None] & (p[None, :] < P),
        other=0.0,
    )  # (K, P)
    return w, x_s


@triton.jit
def chunk_scan_fwd_kernel(
    x_ptr, z_ptr, B_ptr, C_ptr, D_ptr, dt_ptr, a_ptr, prev_ptr, out_ptr, y_ptr,
    L, H, G, P, N, Q, nchunks,
    HAS_D: tl.constexpr, D_PER_DIM: tl.constexpr, HAS_Z: tl.constexpr, STORE_Y: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Steps 1 and 4: ``y_t = exp(a_t) H_{c-1} C_t + Σ_{s≤t} (C_t·B_s) exp(a_t - a_s) dt_s x_s``,
    then ``out = (y + D x) · silu(z)``; with ``STORE_Y`` also ``y + D x`` (the gradient of z
    needs it). The columns s are visited in blocks of ``BLOCK_M`` steps up to the diagonal one.
    Causal under non-finite inputs: in the diagonal block the weights of pairs ``s > t`` are
    selected away with ``where``, and a non-finite ``x_s`` enters the product as 0 and makes the
    rows ``t ≥ s`` NaN (as the reference); the blocks before it hold only pairs ``s < t``.
    Grid ``(B·K·H·blocks of BLOCK_M steps,)``.
    """
    blocks = tl.cdiv(Q, BLOCK_M)
    pid_bk, h, blk = chunk_program(blocks, H)
    b = (pid_bk // nchunks).to(tl.int64)
    k = pid_bk % nchunks
    g = h // (H // G)
    dot_dtype = x_ptr.dtype.element_ty
    steps = tl.minimum(Q, L - k * Q)
    t0 = k * Q  # the chunk's first step
    first = blk * BLOCK_M
    rows = first + tl.arange(0, BLOCK_M)
    row_ok = rows < steps
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    a_base = flat(b, h, k, 0, H, nchunks, Q)
    a_t = tl.load(a_ptr + a_base + rows, mask=row_ok, other=0.0)
    C_t = tl.load(
        C_ptr + flat(b, t0 + rows[:, None], g, n[None, :], L, G, N),
        mask=row_ok[:, None] & (n[None, :] < N),
        other=0.0,
    )  # (M, N)
    prevT = tl.load(
        prev_ptr + flat(b * nchunks + k, h, p[None, :], n[:, None], H, P, N),
        mask=(n[:, None] < N) & (p[None, :] < P),
        other=0.0,
    )  # (N, P)
    acc = mma(C_t.to(dot_dtype), prevT.to(dot_dtype))
    acc *= tl.exp(a_t)[:, None]  # (M, P): state-to-output term
    for s0 in range(0, tl.minimum(first, steps), BLOCK_M):  # blocks before the diagonal: s < t
        w, x_s = _block_weights(
            x_ptr, B_ptr, dt_ptr, a_ptr, C_t, a_t, a_base, b, t0, s0, h, g, p, n, steps,
            L, H, G, P, N, BLOCK_M,
        )  # fmt: skip
        acc += mma(w.to(dot_dtype), x_s.to(dot_dtype))
    w, x_s = _block_weights(
        x_ptr, B_ptr, dt_ptr, a_ptr, C_t, a_t, a_base, b, t0, first, h, g, p, n, steps,
        L, H, G, P, N, BLOCK_M,
    )  # fmt: skip
    # The diagonal block (columns s = rows t): pairs s > t are selected away, and a
    # non-finite x_s enters as 0 and makes the rows t ≥ s NaN, as in the recurrence.
    local = tl.arange(0, BLOCK_M)
    w = tl.where(local[None, :] <= local[:, None], w, 0.0)
    xf = x_s.to(tl.float32)
    finite = (xf - xf) == 0.0  # False for NaN and ±inf
    first_bad = tl.min(tl.where(finite, BLOCK_M, local[:, None]), axis=0)  # (P,)
    acc += mma(w.to(dot_dtype), tl.where(finite, x_s, 0.0).to(dot_dtype))
    acc = tl.where(local[:, None] >= first_bad[None, :], float("nan"), acc)
    offs = flat(b, t0 + rows[:, None], h, p[None, :], L, H, P)
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
        dt = softplus(dt)
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
    x = tl.load(x_ptr + flat3(b, h, p, H, P), mask=p < P, other=0.0).to(tl.float32)
    B = tl.load(B_ptr + flat3(b, g, n, G, N), mask=n < N, other=0.0).to(tl.float32)
    C = tl.load(C_ptr + flat3(b, g, n, G, N), mask=n < N, other=0.0).to(tl.float32)
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
        z = tl.load(z_ptr + flat3(b, h, p, H, P), mask=p < P, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(y_ptr + flat3(b, h, p, H, P), y, mask=p < P)
