"""Triton kernel for one S4D decoding step, the state updated in place.

A step reads the state ``(B, H, N)`` once and writes it once; the parameters ``Ā, B̄, C``
``(H, N)`` are shared by the batch (they stay in L2). The kernel is therefore bound by memory
bandwidth, and is measured against a device-to-device copy of the state. Each program owns
``BLOCK_H`` channels × all ``N`` states of one batch row, reduces ``2 Re(C · x)`` over ``N`` in
registers and fuses the skip term. Complex tensors are read as interleaved float32, as rows of
``2N`` contiguous numbers (coalesced, vectorized), then split into real and imaginary parts.
Dimension letters: B batch, H channels, N state size.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common import contiguous


@triton.jit
def _complex(z, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr):
    """Interleaved ``(BLOCK_H, 2·BLOCK_N)`` → real and imaginary parts ``(BLOCK_H, BLOCK_N)``."""
    return tl.split(tl.reshape(z, (BLOCK_H, BLOCK_N, 2)))


@triton.jit
def _step_kernel(
    state_ptr,  # (B, H, N, 2) float32, read and written
    u_ptr,  # (B, H) float32
    Ab_ptr,  # (H, N, 2) float32
    Bb_ptr,  # (H, N, 2) float32
    C_ptr,  # (H, N, 2) float32
    D_ptr,  # (H,) float32, when HAS_D
    y_ptr,  # (B, H) float32
    H,
    N,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    j = tl.arange(0, 2 * BLOCK_N)  # interleaved (real, imaginary) pairs: contiguous in memory
    h_mask = h < H
    mask = h_mask[:, None] & (j < 2 * N)[None, :]  # (BLOCK_H 2·BLOCK_N)
    p = h[:, None] * (2 * N) + j[None, :]  # parameters
    s = (b * H + h)[:, None] * (2 * N) + j[None, :]  # state
    xr, xi = _complex(tl.load(state_ptr + s, mask=mask, other=0.0), BLOCK_H, BLOCK_N)
    ar, ai = _complex(tl.load(Ab_ptr + p, mask=mask, other=0.0), BLOCK_H, BLOCK_N)
    br, bi = _complex(tl.load(Bb_ptr + p, mask=mask, other=0.0), BLOCK_H, BLOCK_N)
    cr, ci = _complex(tl.load(C_ptr + p, mask=mask, other=0.0), BLOCK_H, BLOCK_N)
    u = tl.load(u_ptr + b * H + h, mask=h_mask, other=0.0)  # (BLOCK_H)
    nr = ar * xr - ai * xi + br * u[:, None]  # x_k = Ā x_{k-1} + B̄ u_k
    ni = ar * xi + ai * xr + bi * u[:, None]
    tl.store(state_ptr + s, tl.reshape(tl.join(nr, ni), (BLOCK_H, 2 * BLOCK_N)), mask=mask)
    y = 2.0 * tl.sum(cr * nr - ci * ni, axis=1)  # 2 Re(C x_k): (BLOCK_H)
    if HAS_D:
        y += tl.load(D_ptr + h, mask=h_mask, other=0.0) * u
    tl.store(y_ptr + b * H + h, y, mask=h_mask)


def _interleaved(z: torch.Tensor) -> torch.Tensor:
    """Complex ``(...)`` → dense float32 ``(..., 2)`` (strided, expanded and ``conj()`` views
    resolved first), as the kernel reads it through raw pointers."""
    return torch.view_as_real(contiguous(z.to(torch.complex64))[0])


def s4d_step_triton(
    state: torch.Tensor,
    u: torch.Tensor,
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Same signature as :func:`ssm.ops.s4d_step.reference.s4d_step_ref`: ``state`` complex
    ``(B, H, N)`` is updated in place (directly when it is a dense complex64 tensor without the
    conjugate bit, else through a dense copy written back). Returns float32 ``(B, H)``."""
    B, H, N = state.shape
    if D is not None and not isinstance(D, torch.Tensor):
        D = torch.full((H,), float(D), device=state.device)
    direct = state.dtype == torch.complex64 and state.is_contiguous()
    direct = direct and not (state.is_conj() or state.is_neg())
    work = state if direct else contiguous(state.to(torch.complex64))[0]  # (B H N) dense
    BLOCK_N = max(1, triton.next_power_of_2(N))
    BLOCK_H = max(1, min(triton.next_power_of_2(H), 1024 // BLOCK_N))
    y = torch.empty(B, H, device=state.device, dtype=torch.float32)
    Ab_ = _interleaved(Ab)
    u_, D_ = contiguous(u.float(), None if D is None else D.float())
    _step_kernel[(B, triton.cdiv(H, BLOCK_H))](
        torch.view_as_real(work),
        u_,
        Ab_,
        _interleaved(Bb),
        _interleaved(C),
        Ab_ if D_ is None else D_,  # unused pointer when there is no D
        y,
        H,
        N,
        BLOCK_H=BLOCK_H,
        BLOCK_N=BLOCK_N,
        HAS_D=D is not None,
    )
    if not direct:
        state.copy_(work)
    return y
