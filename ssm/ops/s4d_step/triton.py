"""Triton kernel for one S4D decoding step, the state updated in place.

A step reads the state ``(B, H, N)`` once and writes it once; the parameters ``Ā, B̄, C``
``(H, N)`` are shared by the batch (they stay in L2). The kernel is therefore bound by memory
bandwidth, and is measured against a device-to-device copy of the state. Each program owns
``BLOCK_H`` channels × all ``N`` states of one batch row, reduces ``2 Re(C · x)`` over ``N`` in
registers and fuses the skip term. Complex tensors are read as interleaved float32.
Dimension letters: B batch, H channels, N state size.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


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
    n = tl.arange(0, BLOCK_N)
    h_mask = h < H
    mask = h_mask[:, None] & (n < N)[None, :]  # (BLOCK_H BLOCK_N)
    p = (h[:, None] * N + n[None, :]) * 2  # parameters
    s = ((b * H + h)[:, None] * N + n[None, :]) * 2  # state
    xr = tl.load(state_ptr + s, mask=mask, other=0.0)
    xi = tl.load(state_ptr + s + 1, mask=mask, other=0.0)
    ar = tl.load(Ab_ptr + p, mask=mask, other=0.0)
    ai = tl.load(Ab_ptr + p + 1, mask=mask, other=0.0)
    br = tl.load(Bb_ptr + p, mask=mask, other=0.0)
    bi = tl.load(Bb_ptr + p + 1, mask=mask, other=0.0)
    cr = tl.load(C_ptr + p, mask=mask, other=0.0)
    ci = tl.load(C_ptr + p + 1, mask=mask, other=0.0)
    u = tl.load(u_ptr + b * H + h, mask=h_mask, other=0.0)  # (BLOCK_H)
    nr = ar * xr - ai * xi + br * u[:, None]  # x_k = Ā x_{k-1} + B̄ u_k
    ni = ar * xi + ai * xr + bi * u[:, None]
    tl.store(state_ptr + s, nr, mask=mask)
    tl.store(state_ptr + s + 1, ni, mask=mask)
    y = 2.0 * tl.sum(cr * nr - ci * ni, axis=1)  # 2 Re(C x_k): (BLOCK_H)
    if HAS_D:
        y += tl.load(D_ptr + h, mask=h_mask, other=0.0) * u
    tl.store(y_ptr + b * H + h, y, mask=h_mask)


def _interleaved(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(z.to(torch.complex64).resolve_conj().contiguous())


def s4d_step_triton(
    state: torch.Tensor,
    u: torch.Tensor,
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Same signature as :func:`ssm.ops.s4d_step.reference.s4d_step_ref`; ``state`` must be a
    contiguous complex64 ``(B, H, N)`` tensor (updated in place). Returns float32 ``(B, H)``."""
    B, H, N = state.shape
    if D is not None and not isinstance(D, torch.Tensor):
        D = torch.full((H,), float(D), device=state.device)
    BLOCK_N = triton.next_power_of_2(N)
    BLOCK_H = max(1, min(triton.next_power_of_2(H), 1024 // BLOCK_N))
    y = torch.empty(B, H, device=state.device, dtype=torch.float32)
    Ab_ = _interleaved(Ab)
    _step_kernel[(B, triton.cdiv(H, BLOCK_H))](
        torch.view_as_real(state),
        u.float().contiguous(),
        Ab_,
        _interleaved(Bb),
        _interleaved(C),
        Ab_ if D is None else D.float().contiguous(),  # unused pointer when there is no D
        y,
        H,
        N,
        BLOCK_H=BLOCK_H,
        BLOCK_N=BLOCK_N,
        HAS_D=D is not None,
    )
    return y
