"""Triton kernels for the symmetric Cauchy product ``Σ_n v/(z - w) + conj(v)/(z - conj(w))``.

Never forms the ``(H, N, L)`` terms: a program owns ``BLOCK_L`` points of one row and loops over
the poles in blocks of ``BLOCK_N``, adding the terms of a ``(BLOCK_N, BLOCK_L)`` tile in
registers. The two terms of a conjugate pair share one complex division,

    v/(z - w) + v̄/(z - w̄) = (v (z - w̄) + v̄ (z - w)) / ((z - w)(z - w̄))
                          = (2 (Re v · a - Im v · Im w) + 2i Re v · Im z) / (a² - s t + 2i a Im z),

with ``a = Re z - Re w``, ``s = Im z - Im w``, ``t = Im z + Im w`` (each factor of the
denominator is formed before multiplying, so it keeps float32 relative accuracy; its squared
modulus must stay below the float32 range, ``|z|, |w| ≲ 10⁹``).

The backward pass (``dv``, ``dw``) loops over the points instead and writes partial sums over
chunks of ``L`` that are added in a fixed order: deterministic. ``dz`` reuses the forward kernel
for ``Σ_n v/(z - w)² + v̄/(z - w̄)²``. Complex tensors enter as interleaved float32.
Dimension letters: H rows, N poles, L points.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ..common import contiguous

# Tiles measured on an H100 at H 1024, N 64, L 16384 (README): forward, then backward (128
# registers a thread, no spills in ptxas -v).
BLOCK_N, BLOCK_L = 16, 256
BWD_BLOCK_N, BWD_BLOCK_L, BWD_NUM_WARPS = 32, 32, 4
CHUNK_BLOCKS = 8  # BWD_BLOCK_L tiles summed by one program of the backward pass


@triton.jit
def _forward_kernel(
    v_ptr,  # (H, N, 2) float32
    z_ptr,  # (L, 2) float32
    w_ptr,  # (H, N, 2) float32
    out_ptr,  # (H, L, 2) float32
    N,
    L,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
    N_BLOCKS: tl.constexpr,  # ⌈N / BLOCK_N⌉
    SQUARED: tl.constexpr,  # Σ v/(z - w)² + v̄/(z - w̄)² instead (for dz)
):
    h = tl.program_id(0).to(tl.int64)
    l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_mask = l < L
    zr = tl.load(z_ptr + 2 * l, mask=l_mask, other=0.0)[None, :]  # (1 BLOCK_L)
    zi = tl.load(z_ptr + 2 * l + 1, mask=l_mask, other=0.0)[None, :]
    acc_r = tl.zeros((BLOCK_L,), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_L,), dtype=tl.float32)
    for j in range(N_BLOCKS):
        n = j * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = n < N
        offs = (h * N + n) * 2
        vr = tl.load(v_ptr + offs, mask=n_mask, other=0.0)[:, None]  # (BLOCK_N 1)
        vi = tl.load(v_ptr + offs + 1, mask=n_mask, other=0.0)[:, None]
        wr = tl.load(w_ptr + offs, mask=n_mask, other=0.0)[:, None]
        wi = tl.load(w_ptr + offs + 1, mask=n_mask, other=0.0)[:, None]
        a = zr - wr  # (BLOCK_N BLOCK_L)
        s = zi - wi  # z - w = a + i s
        t = zi + wi  # z - w̄ = a + i t
        if SQUARED:  # v c² + v̄ c'² with c = 1/(a + i s), c' = 1/(a + i t)
            ic = 1.0 / tl.where(n_mask[:, None], a * a + s * s, 1.0)  # padding: v = 0
            ic2 = 1.0 / tl.where(n_mask[:, None], a * a + t * t, 1.0)
            c_r = (a * a - s * s) * ic * ic  # c² = (a - i s)² / (a² + s²)²
            c_i = -2.0 * a * s * ic * ic
            d_r = (a * a - t * t) * ic2 * ic2  # c'²
            d_i = -2.0 * a * t * ic2 * ic2
            term_r = vr * c_r - vi * c_i + vr * d_r + vi * d_i
            term_i = vr * c_i + vi * c_r + vr * d_i - vi * d_r
        else:  # (v (z - w̄) + v̄ (z - w)) / ((z - w)(z - w̄))
            den_r = a * a - s * t
            den_i = 2.0 * a * zi
            num_r = 2.0 * (vr * a - vi * wi)
            num_i = 2.0 * vr * zi
            inv = 1.0 / tl.where(n_mask[:, None], den_r * den_r + den_i * den_i, 1.0)
            term_r = (num_r * den_r + num_i * den_i) * inv
            term_i = (num_i * den_r - num_r * den_i) * inv
        acc_r += tl.sum(term_r, axis=0)  # padded poles have v = 0: their terms vanish
        acc_i += tl.sum(term_i, axis=0)
    offs = (h * L + l) * 2
    tl.store(out_ptr + offs, acc_r, mask=l_mask)
    tl.store(out_ptr + offs + 1, acc_i, mask=l_mask)


@triton.jit
def _backward_kernel(
    g_ptr,  # (H, L, 2) float32: gradient of the output
    z_ptr,  # (L, 2) float32
    w_ptr,  # (H, N, 2) float32
    dv_ptr,  # (H, CHUNKS, N, 2) float32: partial Σ_l g c̄ + ḡ c'
    dw_ptr,  # (H, CHUNKS, N, 2) float32: partial Σ_l g c̄² + ḡ c'²
    N,
    L,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
    CHUNK_BLOCKS: tl.constexpr,
):
    h = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    chunk = tl.program_id(2)
    n_mask = n < N
    wr = tl.load(w_ptr + (h * N + n) * 2, mask=n_mask, other=0.0)[:, None]  # (BLOCK_N 1)
    wi = tl.load(w_ptr + (h * N + n) * 2 + 1, mask=n_mask, other=0.0)[:, None]
    dv_r = tl.zeros((BLOCK_N,), dtype=tl.float32)
    dv_i = tl.zeros((BLOCK_N,), dtype=tl.float32)
    dw_r = tl.zeros((BLOCK_N,), dtype=tl.float32)
    dw_i = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for b in range(CHUNK_BLOCKS):  # tiles past L are masked out
        l = (chunk * CHUNK_BLOCKS + b) * BLOCK_L + tl.arange(0, BLOCK_L)
        l_mask = l < L
        zr = tl.load(z_ptr + 2 * l, mask=l_mask, other=0.0)[None, :]  # (1 BLOCK_L)
        zi = tl.load(z_ptr + 2 * l + 1, mask=l_mask, other=0.0)[None, :]
        gr = tl.load(g_ptr + (h * L + l) * 2, mask=l_mask, other=0.0)[None, :]
        gi = tl.load(g_ptr + (h * L + l) * 2 + 1, mask=l_mask, other=0.0)[None, :]
        a = zr - wr  # (BLOCK_N BLOCK_L)
        s = zi - wi
        t = zi + wi
        valid = n_mask[:, None] & l_mask[None, :]  # padding: g = 0 (and unstored n)
        ic = 1.0 / tl.where(valid, a * a + s * s, 1.0)  # |z - w|⁻²
        ic2 = 1.0 / tl.where(valid, a * a + t * t, 1.0)  # |z - w̄|⁻²
        # g c̄ = g (a + i s) ic,  ḡ c' = ḡ (a - i t) ic2
        dv_r += tl.sum((gr * a - gi * s) * ic + (gr * a - gi * t) * ic2, axis=1)
        dv_i += tl.sum((gr * s + gi * a) * ic - (gr * t + gi * a) * ic2, axis=1)
        # g c̄² = g ((a² - s²) + 2i a s) ic²,  ḡ c'² = ḡ ((a² - t²) - 2i a t) ic2²
        p_r = (a * a - s * s) * ic * ic
        p_i = 2.0 * a * s * ic * ic
        q_r = (a * a - t * t) * ic2 * ic2
        q_i = -2.0 * a * t * ic2 * ic2
        dw_r += tl.sum(gr * p_r - gi * p_i + gr * q_r + gi * q_i, axis=1)
        dw_i += tl.sum(gr * p_i + gi * p_r + gr * q_i - gi * q_r, axis=1)
    offs = ((h * tl.num_programs(2) + chunk) * N + n) * 2
    tl.store(dv_ptr + offs, dv_r, mask=n_mask)
    tl.store(dv_ptr + offs + 1, dv_i, mask=n_mask)
    tl.store(dw_ptr + offs, dw_r, mask=n_mask)
    tl.store(dw_ptr + offs + 1, dw_i, mask=n_mask)


def _interleaved(z: torch.Tensor) -> torch.Tensor:
    """Complex ``(...)`` → dense float32 ``(..., 2)``, as the kernels read it through raw
    pointers (strided, expanded and ``conj()`` views resolved first)."""
    return torch.view_as_real(contiguous(z.to(torch.complex64))[0])


def _sum(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, squared: bool) -> torch.Tensor:
    H, N = w.shape
    L = z.shape[0]
    out = torch.empty(H, L, 2, device=w.device, dtype=torch.float32)
    _forward_kernel[(H, triton.cdiv(L, BLOCK_L))](
        _interleaved(v),
        _interleaved(z),
        _interleaved(w),
        out,
        N,
        L,
        BLOCK_N=BLOCK_N,
        BLOCK_L=BLOCK_L,
        N_BLOCKS=triton.cdiv(N, BLOCK_N),
        SQUARED=squared,
    )
    return torch.view_as_complex(out)


class _Cauchy(torch.autograd.Function):
    """Gradients (PyTorch's convention ``∂/∂Re + i ∂/∂Im``; ``c = 1/(z-w)``, ``c' = 1/(z-w̄)``):
    ``dv = Σ_l g c̄ + ḡ c'``, ``dw = v̄ Σ_l g c̄² + ḡ c'²``, ``dz = -Σ_h g conj(Σ_n v c² + v̄ c'²)``.
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v, z, w)
        return _sum(v, z, w, squared=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        v, z, w = ctx.saved_tensors
        need_v, need_z, need_w = ctx.needs_input_grad
        dv = dz = dw = None
        if need_v or need_w:
            H, N = w.shape
            L = z.shape[0]
            blocks = triton.cdiv(L, BWD_BLOCK_L)
            chunk_blocks = min(blocks, CHUNK_BLOCKS)
            chunks = triton.cdiv(blocks, chunk_blocks)
            dv_part = torch.empty(H, chunks, N, 2, device=w.device, dtype=torch.float32)
            dw_part = torch.empty_like(dv_part)
            _backward_kernel[(H, triton.cdiv(N, BWD_BLOCK_N), chunks)](
                _interleaved(g),
                _interleaved(z),
                _interleaved(w),
                dv_part,
                dw_part,
                N,
                L,
                BLOCK_N=BWD_BLOCK_N,
                BLOCK_L=BWD_BLOCK_L,
                CHUNK_BLOCKS=chunk_blocks,
                num_warps=BWD_NUM_WARPS,
            )
            if need_v:  # chunks added in a fixed order
                dv = torch.view_as_complex(dv_part.sum(1)).to(v.dtype)
            if need_w:
                dw = v.to(torch.complex64).conj() * torch.view_as_complex(dw_part.sum(1))
                dw = dw.to(w.dtype)
        if need_z:
            squares = _sum(v, z, w, squared=True)  # Σ_n v c² + v̄ c'²: (H L)
            dz = -(g.to(torch.complex64) * squares.conj()).sum(0).to(z.dtype)
        return dv, dz, dw


def cauchy_triton(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Same signature as :func:`ssm.ops.cauchy.reference.cauchy_ref`: ``v, w`` ``(H, N)``,
    ``z`` ``(L,)`` complex64; returns complex64 ``(H, L)``, differentiable in ``v, z, w``."""
    return _Cauchy.apply(v, z, w)
