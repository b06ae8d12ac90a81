"""Triton kernels for the Vandermonde product ``K[h, l] = 2 Re(Σ_n v[h,n] exp(x[h,n] l))``.

Never forms the ``(H, N, L)`` Vandermonde matrix. Each program owns a tile of the kernel laid out
as ``l = l₁ T + l₂`` (``BLOCK_L1`` rows of ``T`` consecutive positions) and loops over the state
in blocks of ``BLOCK_N``. With ``Ā^l = Ā^{l₁ T} Ā^{l₂}``, the tile is a product of two small
matrices built in registers,

    K[l₁, l₂] = 2 Re Σ_n W[l₁, n] E[n, l₂],   W = v exp(x l₁ T),  E = exp(x l₂),

computed as two float32 ``tl.dot`` (``2 (Re W · Re E - Im W · Im E)``): ``2N`` multiply-adds per
output and only ``(BLOCK_L1 + T) · BLOCK_N`` complex exponentials per tile. The backward pass is
the transposed product ``S[n] = Σ_l g[l] exp(x[n] l)`` (and ``Σ_l g[l] l exp(x[n] l)``), split
the same way: the loop over ``L`` only accumulates ``Q[l₂, n] = Σ_{l₁} g[l₁T + l₂] Ā^{l₁T}`` with
``(T × BLOCK_L1) · (BLOCK_L1 × BLOCK_N)`` dots, and ``S[n] = Σ_{l₂} Ā^{l₂} Q[l₂, n]`` at the
end. Partial sums over chunks of ``L`` are written to a buffer and added in a fixed order, so
the result is deterministic.

Measured on an H100 (``README.md``): 0.26 ms forward, 0.42 ms backward at H 1024, N 64,
L 16384 (13 ms and 30 ms for the materialized product).

Phases ``q·l`` reach ``10⁵`` at real lengths, where float32 rounding alone would cost
``10⁻³`` radians; :func:`_cis` reduces them modulo ``2π`` with a fused multiply-add
(Cody–Waite) so that the angle passed to ``cos``/``sin`` is accurate to ``~3·10⁻⁷``.

Complex tensors enter the kernels as interleaved float32 (``torch.view_as_real``).
Dimension letters: H channels, N state size, L length, R rows (batch × H) of a transposed product.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ..common import contiguous

TWO_PI_HI = tl.constexpr(6.2831854820251465)  # float32(2π)
TWO_PI_LO = tl.constexpr(2 * math.pi - 6.2831854820251465)  # the rest of 2π
INV_TWO_PI = tl.constexpr(1 / (2 * math.pi))


@triton.jit
def _cis(p, q, l):
    """``exp((p + iq) l) = e^{p l} (cos(q l) + i sin(q l))`` with the phase reduced mod ``2π``."""
    t = q * l
    t_err = tl.fma(q, l, -t)  # exact rounding error of q·l (zero in the CPU interpreter)
    k = tl.floor(t * INV_TWO_PI + 0.5)
    r = tl.fma(-k, TWO_PI_HI, t)  # t - k·fl(2π), one rounding
    r = tl.fma(-k, TWO_PI_LO, r) + t_err  # - k·(2π - fl(2π)) + rounding error of q·l
    mag = tl.exp(p * l)
    return mag * tl.cos(r), mag * tl.sin(r)


@triton.jit
def _forward_kernel(
    v_ptr,  # (H, N, 2) float32: C ∘ B̄
    x_ptr,  # (H, N, 2) float32: log Ā
    K_ptr,  # (H, L) float32
    N,
    L,
    T: tl.constexpr,
    BLOCK_L1: tl.constexpr,
    BLOCK_N: tl.constexpr,
    N_BLOCKS: tl.constexpr,  # ⌈N / BLOCK_N⌉
    PRECISION: tl.constexpr,  # of tl.dot
):
    h = tl.program_id(0).to(tl.int64)
    l1 = tl.program_id(1) * BLOCK_L1 + tl.arange(0, BLOCK_L1)  # outer index: (BLOCK_L1)
    l2 = tl.arange(0, T)  # inner index: (T)
    outer = (l1 * T).to(tl.float32)
    inner = l2.to(tl.float32)
    acc = tl.zeros((BLOCK_L1, T), dtype=tl.float32)
    for j in range(N_BLOCKS):
        n = j * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = n < N
        offs = (h * N + n) * 2
        vr = tl.load(v_ptr + offs, mask=mask, other=0.0)[None, :]
        vi = tl.load(v_ptr + offs + 1, mask=mask, other=0.0)[None, :]
        p = tl.load(x_ptr + offs, mask=mask, other=0.0)
        q = tl.load(x_ptr + offs + 1, mask=mask, other=0.0)
        er, ei = _cis(p[None, :], q[None, :], outer[:, None])  # Ā^{l₁T}: (BLOCK_L1 BLOCK_N)
        wr = vr * er - vi * ei  # W = v Ā^{l₁T}: (BLOCK_L1 BLOCK_N)
        wi = vr * ei + vi * er
        Er, Ei = _cis(p[:, None], q[:, None], inner[None, :])  # E = Ā^{l₂}: (BLOCK_N T)
        acc = tl.dot(wr, Er, acc, input_precision=PRECISION)
        acc = tl.dot(-wi, Ei, acc, input_precision=PRECISION)  # Re(W E): (BLOCK_L1 T)
    l = l1[:, None] * T + l2[None, :]  # (BLOCK_L1 T)
    tl.store(K_ptr + h * L + l, 2 * acc, mask=l < L)


@triton.jit
def _transpose_kernel(
    g_ptr,  # (R, L) float32
    x_ptr,  # (H, N, 2) float32
    S_ptr,  # (R, CHUNKS, N, 2) float32: partial Σ_l g exp(x l)
    S1_ptr,  # (R, CHUNKS, N, 2) float32: partial Σ_l g l exp(x l), when WEIGHTED
    H,
    N,
    L,
    T: tl.constexpr,
    BLOCK_L1: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK_BLOCKS: tl.constexpr,  # BLOCK_L1 × T tiles per program
    WEIGHTED: tl.constexpr,
    PRECISION: tl.constexpr,  # of tl.dot
):
    r = tl.program_id(0).to(tl.int64)
    h = r % H
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    chunk = tl.program_id(2)
    mask = n < N
    p = tl.load(x_ptr + (h * N + n) * 2, mask=mask, other=0.0)[None, :]
    q = tl.load(x_ptr + (h * N + n) * 2 + 1, mask=mask, other=0.0)[None, :]
    l2 = tl.arange(0, T)
    # S[n] = Σ_{l₂} Ā^{l₂} Q[l₂, n] with Q[l₂, n] = Σ_{l₁} g[l₁T + l₂] Ā^{l₁T}: accumulate Q
    qr = tl.zeros((T, BLOCK_N), dtype=tl.float32)
    qi = tl.zeros((T, BLOCK_N), dtype=tl.float32)
    q1r = tl.zeros((T, BLOCK_N), dtype=tl.float32)  # the same with g l, when WEIGHTED
    q1i = tl.zeros((T, BLOCK_N), dtype=tl.float32)
    for b in range(CHUNK_BLOCKS):  # tiles past L are masked out
        l1 = (chunk * CHUNK_BLOCKS + b) * BLOCK_L1 + tl.arange(0, BLOCK_L1)
        l = l1[None, :] * T + l2[:, None]  # (T BLOCK_L1)
        Gt = tl.load(g_ptr + r * L + l, mask=l < L, other=0.0)  # gᵀ: (T BLOCK_L1)
        pr, pi = _cis(p, q, (l1 * T).to(tl.float32)[:, None])  # Ā^{l₁T}: (BLOCK_L1 BLOCK_N)
        qr = tl.dot(Gt, pr, qr, input_precision=PRECISION)
        qi = tl.dot(Gt, pi, qi, input_precision=PRECISION)
        if WEIGHTED:
            Glt = Gt * l.to(tl.float32)
            q1r = tl.dot(Glt, pr, q1r, input_precision=PRECISION)
            q1i = tl.dot(Glt, pi, q1i, input_precision=PRECISION)
    er, ei = _cis(p, q, l2.to(tl.float32)[:, None])  # Ā^{l₂}: (T BLOCK_N)
    offs = ((r * tl.num_programs(2) + chunk) * N + n) * 2
    tl.store(S_ptr + offs, tl.sum(er * qr - ei * qi, axis=0), mask=mask)
    tl.store(S_ptr + offs + 1, tl.sum(er * qi + ei * qr, axis=0), mask=mask)
    if WEIGHTED:
        tl.store(S1_ptr + offs, tl.sum(er * q1r - ei * q1i, axis=0), mask=mask)
        tl.store(S1_ptr + offs + 1, tl.sum(er * q1i + ei * q1r, axis=0), mask=mask)


# Tiles (largest T, BLOCK_L1, BLOCK_N; warps): no register spills in ptxas -v for the H100, and
# the fastest of those measured there (README).
FORWARD_TILES = (64, 64, 32, 8)
TRANSPOSE_TILES = (64, 32, 32, 8)
CHUNK_BLOCKS = 4  # tiles summed by one program of the transposed product: a few shapes only
# "ieee": float32 FMA products ("tf32x3", tensor cores at about float32 accuracy, measured 4×
# slower on the H100).
DOT_PRECISION = "ieee"


def _tiles(L: int, N: int, tiles: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Shrink ``tiles`` for short or narrow inputs: powers of two, at least 16 (``tl.dot``)."""
    T, BLOCK_L1, BLOCK_N, num_warps = tiles
    T = min(T, max(16, triton.next_power_of_2(L)))
    BLOCK_L1 = min(BLOCK_L1, max(16, triton.next_power_of_2(triton.cdiv(L, T))))
    BLOCK_N = min(BLOCK_N, max(16, triton.next_power_of_2(N)))
    return T, BLOCK_L1, BLOCK_N, num_warps


def _interleaved(z: torch.Tensor) -> torch.Tensor:
    """Complex ``(..., N)`` → dense float32 ``(..., N, 2)``, as the kernels read it through raw
    pointers (strided, expanded and ``conj()`` views resolved first)."""
    return torch.view_as_real(contiguous(z.to(torch.complex64))[0])


def _vandermonde_forward(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    H, N = x.shape
    T, BLOCK_L1, BLOCK_N, num_warps = _tiles(L, N, FORWARD_TILES)
    K = torch.empty(H, L, device=x.device, dtype=torch.float32)
    grid = (H, triton.cdiv(triton.cdiv(L, T), BLOCK_L1))
    _forward_kernel[grid](
        _interleaved(v),
        _interleaved(x),
        K,
        N,
        L,
        T=T,
        BLOCK_L1=BLOCK_L1,
        BLOCK_N=BLOCK_N,
        N_BLOCKS=triton.cdiv(N, BLOCK_N),
        PRECISION=DOT_PRECISION,
        num_warps=num_warps,
    )
    return K


def vandermonde_transpose_triton(
    g: torch.Tensor, x: torch.Tensor, weighted: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``S[..., h, n] = Σ_l g[..., h, l] exp(x[h, n] l)`` (and ``Σ_l g l exp(x l)`` if weighted).

    Same signature as :func:`ssm.ops.vandermonde.reference.vandermonde_transpose_ref`:
    ``g`` ``(..., H, L)`` real, ``x`` ``(H, N)`` complex; returns complex64 ``(..., H, N)``.
    """
    H, N = x.shape
    batch, L = g.shape[:-1], g.shape[-1]
    (g,) = contiguous(g.to(torch.float32).reshape(-1, L))  # (R L)
    R = g.shape[0]
    T, BLOCK_L1, BLOCK_N, num_warps = _tiles(L, N, TRANSPOSE_TILES)
    blocks = triton.cdiv(triton.cdiv(L, T), BLOCK_L1)
    n_blocks = triton.cdiv(N, BLOCK_N)
    chunk_blocks = min(blocks, CHUNK_BLOCKS)
    chunks = triton.cdiv(blocks, chunk_blocks)
    S = torch.empty(R, chunks, N, 2, device=g.device, dtype=torch.float32)
    S1 = torch.empty_like(S) if weighted else S
    _transpose_kernel[(R, n_blocks, chunks)](
        g,
        _interleaved(x),
        S,
        S1,
        H,
        N,
        L,
        T=T,
        BLOCK_L1=BLOCK_L1,
        BLOCK_N=BLOCK_N,
        CHUNK_BLOCKS=chunk_blocks,
        WEIGHTED=weighted,
        PRECISION=DOT_PRECISION,
        num_warps=num_warps,
    )

    def total(partial: torch.Tensor) -> torch.Tensor:  # chunks added in a fixed order
        return torch.view_as_complex(partial.sum(1)).reshape(*batch, N)

    return (total(S), total(S1)) if weighted else total(S)


class _Vandermonde(torch.autograd.Function):
    """``K = 2 Re(v · exp(x l))`` with ``dv = 2 conj(S)``, ``dx = 2 conj(v S¹)`` (see README)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
        ctx.save_for_backward(v, x)
        return _vandermonde_forward(v, x, L)

    @staticmethod
    @once_differentiable
    def backward(ctx, dK: torch.Tensor):
        v, x = ctx.saved_tensors
        need_v, need_x = ctx.needs_input_grad[:2]
        if need_x:
            S, S1 = vandermonde_transpose_triton(dK, x, weighted=True)
        else:
            S, S1 = vandermonde_transpose_triton(dK, x), None
        dv = (2 * S.conj()).to(v.dtype) if need_v else None
        dx = (2 * (v.to(S1.dtype) * S1).conj()).to(x.dtype) if need_x else None
        return dv, dx, None


def vandermonde_triton(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """Same signature as :func:`ssm.ops.vandermonde.reference.vandermonde_ref`: ``v, x``
    ``(H, N)`` complex64, returns float32 ``(H, L)``; differentiable in ``v`` and ``x``."""
    return _Vandermonde.apply(v, x, L)
