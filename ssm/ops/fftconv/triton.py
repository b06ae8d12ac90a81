"""A Triton direct causal convolution for short kernels (``L_k ≤ 64``), the skip term fused.

For a short kernel the definition ``y[l] = Σ_{i < L_k} k[i] u[l - i] + D u[l]`` costs ``L_k``
multiply-adds per output and reads ``u`` once from memory (the shifted reads hit the cache),
whereas the FFT path pads to ``2L`` and makes several passes over memory. Each program owns
``BLOCK_L`` outputs of one row ``(b, h)``.

Backward: ``du[l] = Σ_i k[i] g[l + i] + D g[l]`` is the same kernel run anti-causally;
``dk[i] = Σ_{b, l} g[b, l] u[b, l - i]`` is reduced per ``(h, b, chunk of L)`` into a buffer
whose partial sums are added in a fixed order (deterministic); ``dD = Σ_{b, l} g u``.
Dimension letters: B batch, H channels, L length, K kernel length.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ..common import contiguous

# Outputs per program and its warps (measured on an H100 at B 8, H 1024, L 16384, 64 taps).
BLOCK_L, NUM_WARPS = 128, 4
DK_BLOCK_L = 256  # positions per tile of the dk reduction
CHUNK_BLOCKS = 16  # DK_BLOCK_L tiles reduced by one program of dk


@triton.jit
def _conv_kernel(
    u_ptr,  # (B, H, L)
    k_ptr,  # (H, K) float32
    D_ptr,  # (H,) float32, when HAS_D
    y_ptr,  # (B, H, L)
    H,
    L,
    K: tl.constexpr,
    BLOCK_L: tl.constexpr,
    HAS_D: tl.constexpr,
    ANTICAUSAL: tl.constexpr,  # y[l] = Σ_i k[i] u[l + i] (the transpose, for du)
):
    row = tl.program_id(0).to(tl.int64)  # b·H + h
    h = row % H
    l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_mask = l < L
    acc = tl.zeros((BLOCK_L,), dtype=tl.float32)
    for i in range(K):
        if ANTICAUSAL:
            src = l + i
            src_mask = src < L
        else:
            src = l - i
            src_mask = (src >= 0) & l_mask
        u = tl.load(u_ptr + row * L + src, mask=src_mask, other=0.0).to(tl.float32)
        acc += tl.load(k_ptr + h * K + i) * u
    if HAS_D:
        u = tl.load(u_ptr + row * L + l, mask=l_mask, other=0.0).to(tl.float32)
        acc += tl.load(D_ptr + h) * u
    tl.store(y_ptr + row * L + l, acc, mask=l_mask)


@triton.jit
def _kernel_grad_kernel(
    g_ptr,  # (B, H, L): gradient of y
    u_ptr,  # (B, H, L)
    dk_ptr,  # (H, B · CHUNKS, K) float32: partial Σ_l g[l] u[l - i]
    H,
    L,
    K: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_L: tl.constexpr,
    CHUNK_BLOCKS: tl.constexpr,
):
    h = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1)
    chunk = tl.program_id(2)
    row = b * H + h
    i = tl.arange(0, BLOCK_K)[:, None]  # tap: (BLOCK_K 1)
    acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for t in range(CHUNK_BLOCKS):  # tiles past L are masked out
        l = ((chunk * CHUNK_BLOCKS + t) * BLOCK_L + tl.arange(0, BLOCK_L))[None, :]
        g = tl.load(g_ptr + row * L + l, mask=l < L, other=0.0).to(tl.float32)  # (1 BLOCK_L)
        src = l - i  # (BLOCK_K BLOCK_L)
        u = tl.load(u_ptr + row * L + src, mask=(src >= 0) & (l < L) & (i < K), other=0.0)
        acc += tl.sum(u.to(tl.float32) * g, axis=1)
    taps = tl.arange(0, BLOCK_K)
    offs = (h * tl.num_programs(1) * tl.num_programs(2) + b * tl.num_programs(2) + chunk) * K
    tl.store(dk_ptr + offs + taps, acc, mask=taps < K)


def _conv(
    u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None, anticausal: bool, dtype: torch.dtype
):
    """Launch the convolution on dense ``u`` ``(B, H, L)``, ``k`` ``(H, K)`` float32 and ``D``
    ``(H,)`` float32 or ``None``; returns ``y`` ``(B, H, L)`` in ``dtype``."""
    B, H, L = u.shape
    y = torch.empty(B, H, L, device=u.device, dtype=dtype)
    _conv_kernel[(B * H, triton.cdiv(L, BLOCK_L))](
        u,
        k,
        k if D is None else D,  # unused pointer when there is no skip term
        y,
        H,
        L,
        K=k.shape[1],
        BLOCK_L=BLOCK_L,
        HAS_D=D is not None,
        ANTICAUSAL=anticausal,
        num_warps=NUM_WARPS,
    )
    return y


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, k, D, dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(u, k, D)
        return _conv(u, k, D, anticausal=False, dtype=dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        u, k, D = ctx.saved_tensors
        need_u, need_k, need_D = ctx.needs_input_grad[:3]
        (g,) = contiguous(g)
        du = _conv(g, k, D, anticausal=True, dtype=u.dtype) if need_u else None
        dk = dD = None
        if need_k:
            B, H, L = u.shape
            K = k.shape[1]
            blocks = triton.cdiv(L, DK_BLOCK_L)
            chunk_blocks = min(blocks, CHUNK_BLOCKS)
            chunks = triton.cdiv(blocks, chunk_blocks)
            partial = torch.empty(H, B * chunks, K, device=u.device, dtype=torch.float32)
            _kernel_grad_kernel[(H, B, chunks)](
                g,
                u,
                partial,
                H,
                L,
                K=K,
                BLOCK_K=max(16, triton.next_power_of_2(K)),
                BLOCK_L=DK_BLOCK_L,
                CHUNK_BLOCKS=chunk_blocks,
            )
            dk = partial.sum(1).to(k.dtype)  # partial sums added in a fixed order
        if need_D:
            dD = (g.float() * u.float()).sum((0, 2)).to(D.dtype)
        return du, dk, dD, None


def causal_conv_triton(
    u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | float | None = None
) -> torch.Tensor:
    """``y[b, h, l] = Σ_{i < L_k} k[h, i] u[b, h, l - i] + D[h] u[b, h, l]``, direct.

    ``u`` ``(B, H, L)`` (float32, float16 or bfloat16; accumulated in float32), ``k``
    ``(H, L_k)`` with ``L_k ≤ 64`` (truncated to ``L``), ``D`` a float or ``(H,)``. Returns
    ``(B, H, L)`` in the promoted dtype of ``u``, ``k`` and ``D``; differentiable in ``u``, ``k``
    and ``D``. Every input is made dense before the kernels read it through raw pointers.
    """
    H, L = k.shape[0], u.shape[-1]
    dtype = torch.promote_types(u.dtype, k.dtype)
    if isinstance(D, torch.Tensor):
        dtype = torch.promote_types(dtype, D.dtype)
    elif D is not None:
        D = torch.full((H,), float(D), device=u.device)
    u, k, D = contiguous(u, k[:, :L].float(), None if D is None else D.float())
    return _CausalConv.apply(u, k, D, dtype)
