"""The Triton path of SSD: the chunked algorithm of ``reference.ssd_chunked`` as GPU kernels
(``triton_fwd.py``, ``triton_bwd.py``), with a backward pass, and the decoding step.

Same signatures and semantics as :func:`ssm.ops.ssd.reference.ssd_chunked` and
:func:`ssm.ops.ssd.reference.ssd_state_update_ref`. Arguments are assumed valid (the public
functions in ``ssm.ops.ssd`` check them). Letters as in ``reference.py``.

The backward pass materializes nothing of size ``(B, L, H, P, N)``: it keeps the states entering
each chunk ``(B, K, H, P, N)`` from the forward pass (and, with z, the output before the gate).
The gradient of each log-decay ``dA_k = dt_k A`` is a sum of four sums, each over the terms whose
decay ``exp(Σ dA)`` spans step k (no large terms cancel, which keeps it accurate in bf16):

    ∂dA_k = exp(a_end) <H_{c-1}, dS_c>      carried state (every k of chunk c)
          + Σ_{s<k} dweight_s              inputs' weights in the chunk state
          + Σ_{t≥k} dy_t·y_off,t           state-to-output term
          + Σ_{s<k≤t} M_ts                 intra-chunk term

(names as in ``triton_bwd.py``).
"""

from __future__ import annotations

import torch
import triton
from triton.runtime.errors import OutOfResources

from ..common import contiguous, softplus_grad
from .triton_bwd import (
    chunk_bwd_dbc_kernel,
    chunk_bwd_dx_kernel,
    gate_bwd_kernel,
    state_passing_bwd_kernel,
)
from .triton_fwd import (
    chunk_outer_kernel,
    chunk_scan_fwd_kernel,
    dt_cumsum_kernel,
    state_passing_fwd_kernel,
    state_update_kernel,
)

# Tuning knobs (read at each call, so that a benchmark may sweep them).
BLOCK_M_MAX = 64  # steps per block of rows (and of columns) in the per-chunk kernels
NUM_WARPS = 4  # warps per program of the per-chunk kernels
HEADS_PER_PROGRAM = 8  # heads summed by one program of the dB/dC kernel (a divisor of H/G)
STATE_BLOCK = 1024  # elements of the (P·N) state per program of the scans over chunks
GATE_BLOCK = (32, 128)  # (rows, columns) per program of the gate's backward
STAGES = (3, 2, 1)  # software-pipelining depths to try, deepest first
_stages_that_fit: dict[tuple, int] = {}


def _launch(kernel, grid, *args, **meta) -> None:
    """Launch ``kernel`` with the deepest pipelining whose tiles fit in shared memory (float32
    tiles take twice the room of bf16 ones); remembers the depth per kernel and dtype."""
    key = (kernel.fn.__name__, args[0].dtype, NUM_WARPS, tuple(sorted(meta.items())))
    depths = (_stages_that_fit[key],) if key in _stages_that_fit else STAGES
    for stages in depths:
        try:
            kernel[grid](*args, num_warps=NUM_WARPS, num_stages=stages, **meta)
        except OutOfResources:
            if stages == depths[-1]:
                raise
            continue
        _stages_that_fit[key] = stages
        return


def _pow2(n: int, least: int = 16) -> int:
    """Block size covering ``n``: a power of two, at least 16 (the smallest ``tl.dot`` tile)."""
    return max(least, triton.next_power_of_2(n))


class _Sizes:
    """Sizes and block shapes of one call."""

    def __init__(self, x: torch.Tensor, B: torch.Tensor, chunk_size: int) -> None:
        self.batch, self.L, self.H, self.P = x.shape
        self.G, self.N = B.shape[2:]
        self.Q = min(chunk_size, self.L)  # a chunk longer than the sequence would only pad
        self.K = triton.cdiv(self.L, self.Q)
        self.block_m = min(BLOCK_M_MAX, _pow2(self.Q))
        per_group = self.H // self.G
        self.heads_per_program = max(
            d for d in range(1, min(HEADS_PER_PROGRAM, per_group) + 1) if per_group % d == 0
        )
        self.block_p = _pow2(self.P)
        self.block_n = _pow2(self.N)
        self.tile_p = min(64, self.block_p)
        self.tile_n = min(64, self.block_n)

    def sizes(self) -> tuple[int, ...]:  # the (L, H, G, P, N, Q, K) arguments of the kernels
        return (self.L, self.H, self.G, self.P, self.N, self.Q, self.K)

    def chunk_grid(self, heads_or_groups: int, per_chunk: int | None = None) -> tuple[int]:
        """The grid of :func:`~.triton_fwd.chunk_program`: ``per_chunk`` programs (default:
        one per block of ``block_m`` steps) for each chunk and head (or group)."""
        per_chunk = per_chunk or triton.cdiv(self.Q, self.block_m)
        return (self.batch * self.K * heads_or_groups * per_chunk,)

    def state_grid(self) -> tuple[int, int, int]:
        return (self.batch, self.H, triton.cdiv(self.P * self.N, STATE_BLOCK))


def _chunk_outer(s: _Sizes, u, v, dt, a, to_end: bool) -> torch.Tensor:
    """``(B, K, H, P, N)`` float32: chunk states (``to_end``) or gradients of entering states."""
    out = torch.empty(s.batch, s.K, s.H, s.P, s.N, device=u.device, dtype=torch.float32)
    tiles = triton.cdiv(s.P, s.tile_p) * triton.cdiv(s.N, s.tile_n)
    _launch(
        chunk_outer_kernel, s.chunk_grid(s.H, tiles),
        u, v, dt, a, out, s.L, s.H, s.G, s.P, s.N, s.Q, s.K,
        TO_END=to_end,
        BLOCK_P=s.tile_p, BLOCK_N=s.tile_n, BLOCK_K=s.block_m,
    )  # fmt: skip
    return out


def _forward(x, dt_in, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus, keep):
    s = _Sizes(x, B, chunk_size)
    dev = x.device
    dt = torch.empty(s.batch, s.H, s.K, s.Q, device=dev, dtype=torch.float32)  # (B, H, K, Q)
    a = torch.empty_like(dt)
    dt_cumsum_kernel[(s.batch, s.K, s.H)](
        dt_in, A, dt_bias if dt_bias is not None else A, dt, a, s.L, s.H, s.Q, s.K,
        HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus, BLOCK_Q=_pow2(s.Q),
    )  # fmt: skip
    chunk_states = _chunk_outer(s, x, B, dt, a, to_end=True)
    prev = torch.empty(chunk_states.shape, device=dev, dtype=x.dtype)  # entering states
    final = torch.empty(s.batch, s.H, s.P, s.N, device=dev, dtype=torch.float32)
    state_passing_fwd_kernel[s.state_grid()](
        chunk_states, prev, a, initial_states if initial_states is not None else final, final,
        s.H, s.P * s.N, s.Q, s.K,
        HAS_INIT=initial_states is not None, BLOCK=STATE_BLOCK,
    )  # fmt: skip
    del chunk_states
    out = torch.empty_like(x)
    ungated = torch.empty_like(x) if keep and z is not None else None  # y + D x
    _launch(
        chunk_scan_fwd_kernel, s.chunk_grid(s.H),
        x, z if z is not None else x, B, C, D if D is not None else A, dt, a, prev, out,
        ungated if ungated is not None else out,
        *s.sizes(),
        HAS_D=D is not None, D_PER_DIM=D is not None and D.ndim == 2, HAS_Z=z is not None,
        STORE_Y=ungated is not None,
        BLOCK_M=s.block_m, BLOCK_P=s.block_p, BLOCK_N=s.block_n,
    )  # fmt: skip
    return out, final, dt, a, prev, ungated


def _backward(ctx, dout, dfinal):
    x, dt_in, A, B, C, D, z, dt_bias, initial_states, dt, a, prev, ungated = ctx.saved_tensors
    s = _Sizes(x, B, ctx.chunk_size)
    f32 = torch.float32
    dev = x.device
    # Gate and skip (elementwise): out = (y + D x) · silu(z).
    (dout,) = contiguous(dout.to(x.dtype))
    dy, dz, dD = dout, None, None
    if z is not None or D is not None:
        rows, cols = s.batch * s.L, s.H * s.P
        grid = (triton.cdiv(rows, GATE_BLOCK[0]), triton.cdiv(cols, GATE_BLOCK[1]))
        if z is not None:
            dy, dz = torch.empty_like(x), torch.empty_like(z)
        dD_rows = torch.empty(grid[0], cols, device=dev, dtype=f32) if D is not None else None
        gate_bwd_kernel[grid](
            dout, z if z is not None else x, ungated if ungated is not None else x, x,
            dy, dz if dz is not None else x, dD_rows if dD_rows is not None else dout,
            rows, cols,
            HAS_Z=z is not None, HAS_D=D is not None,
            BLOCK_R=GATE_BLOCK[0], BLOCK_C=GATE_BLOCK[1],
        )  # fmt: skip
        if D is not None:
            dD = dD_rows.sum(0).view(s.H, s.P)
            dD = (dD.sum(-1) if D.ndim == 1 else dD).to(D.dtype)

    # Gradient of the states entering each chunk (through the outputs), then the reverse scan.
    dstates = _chunk_outer(s, dy, C, dt, a, to_end=False)
    state_grid = s.state_grid()
    dcarry = torch.empty(s.batch, s.H, s.K, state_grid[2], device=dev, dtype=f32)
    dinit = torch.empty_like(prev[:, 0], dtype=f32) if initial_states is not None else None
    state_passing_bwd_kernel[state_grid](
        dstates, prev, a, dfinal if dfinal is not None else prev,
        dinit if dinit is not None else prev, dcarry,
        s.H, s.P * s.N, s.Q, s.K,
        HAS_DFINAL=dfinal is not None, HAS_INIT=initial_states is not None, BLOCK=STATE_BLOCK,
    )  # fmt: skip

    dx = torch.empty_like(x)
    ddt = torch.empty_like(dt)  # x·g: the gradient of dt through dt·x
    dweight = torch.empty_like(dt)
    blocks = triton.cdiv(s.Q, s.block_m)
    dintra = torch.zeros(s.batch, s.H, s.K, blocks, s.Q, device=dev, dtype=f32)
    _launch(
        chunk_bwd_dx_kernel, s.chunk_grid(s.H),
        x, dy, B, C, D if D is not None else A, dt, a, dstates, dx, ddt, dweight, dintra,
        *s.sizes(),
        HAS_D=D is not None, D_PER_DIM=D is not None and D.ndim == 2,
        BLOCK_M=s.block_m, BLOCK_K=s.block_m, BLOCK_P=s.block_p, BLOCK_N=s.block_n,
    )  # fmt: skip
    splits = s.H // s.G // s.heads_per_program  # programs per group, each its own slot
    dB = torch.empty(splits, *B.shape, device=dev, dtype=f32)
    dC = torch.empty(splits, *C.shape, device=dev, dtype=f32)
    dout_decay = torch.empty_like(dt)
    for for_b, other, st, grad in ((True, C, dstates, dB), (False, B, prev, dC)):
        _launch(
            chunk_bwd_dbc_kernel, s.chunk_grid(s.G * splits),
            x, dy, other, dt, a, st, grad, C, dout_decay, s.batch, *s.sizes(),
            FOR_B=for_b, HEADS=s.heads_per_program,
            BLOCK_M=s.block_m, BLOCK_K=s.block_m, BLOCK_P=s.block_p, BLOCK_N=s.block_n,
        )  # fmt: skip
    dB, dC = dB.sum(0), dC.sum(0)

    # Gradient of each dA_k = dt_k A: four sums over the terms whose decay spans step k.
    ddA = (
        dcarry.sum(-1, keepdim=True)
        + (dweight.cumsum(-1) - dweight)
        + dout_decay.flip(-1).cumsum(-1).flip(-1)
        + dintra.sum(3)
    )  # (B, H, K, Q)
    dA = (ddA * dt).sum(dim=(0, 2, 3)).to(A.dtype)
    ddt = ddt + ddA * A.float()[:, None, None]  # of dt after bias and softplus
    ddt = ddt.permute(0, 2, 3, 1).reshape(s.batch, s.K * s.Q, s.H)[:, : s.L]  # (B, L, H)
    if ctx.dt_softplus:
        raw = dt_in.float() + (dt_bias.float() if dt_bias is not None else 0.0)
        ddt = ddt * softplus_grad(raw)
    dbias = ddt.sum(dim=(0, 1)).to(dt_bias.dtype) if dt_bias is not None else None
    dinit = dinit.to(initial_states.dtype) if dinit is not None else None
    return (
        dx, ddt.to(dt_in.dtype), dA, dB.to(B.dtype), dC.to(C.dtype),
        dD, dz, dbias, dinit,
    )  # fmt: skip


class _SSD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus):
        keep = any(ctx.needs_input_grad)
        out, final, dt_p, a, prev, ungated = _forward(
            x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus, keep
        )
        ctx.chunk_size = chunk_size
        ctx.dt_softplus = dt_softplus
        if keep:
            ctx.save_for_backward(
                x, dt, A, B, C, D, z, dt_bias, initial_states, dt_p, a, prev, ungated
            )
        ctx.set_materialize_grads(False)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        if dout is None:  # only the final states were used
            dout = torch.zeros(ctx.saved_tensors[0].shape, device=dfinal.device)
        (dfinal,) = contiguous(dfinal)
        grads = _backward(ctx, dout, dfinal)
        dx, ddt, dA, dB, dC, dD, dz, dbias, dinit = grads
        return dx, ddt, dA, dB, dC, None, dD, dz, dbias, dinit, None


def ssd_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    dt_softplus: bool = False,
    return_final_states: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD with the Triton kernels; arguments, shapes and results as
    :func:`ssm.ops.ssd.reference.ssd_chunked` (final states in float32)."""
    B, C = B.to(x.dtype), C.to(x.dtype)  # the matrix products' operands share x's dtype
    x, dt, A, B, C, D, z, dt_bias, initial_states = contiguous(
        x, dt, A, B, C, D, z, dt_bias, initial_states
    )
    out, final = _SSD.apply(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus
    )  # fmt: skip
    return (out, final) if return_final_states else out


def ssd_state_update_triton(
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
    """The decoding step with one Triton kernel, updating ``state`` in place (read and written
    through its strides; a lazily negated view through a resolved copy written back after);
    as :func:`ssm.ops.ssd.reference.ssd_state_update_ref`. Not differentiable."""
    batch, heads, headdim = x.shape
    groups, nstate = B.shape[1:]
    x, dt, A, B, C, D, z, dt_bias = contiguous(x, dt, A, B, C, D, z, dt_bias)
    work = state.resolve_neg() if state.is_neg() else state
    y = torch.empty_like(x)
    block_p = min(64, _pow2(headdim, least=2))
    state_update_kernel[(batch, heads, triton.cdiv(headdim, block_p))](
        work, x, dt, A, B, C, D if D is not None else A, z if z is not None else x,
        dt_bias if dt_bias is not None else A, y,
        heads, groups, headdim, nstate, *work.stride(),
        HAS_D=D is not None, D_PER_DIM=D is not None and D.ndim == 2, HAS_Z=z is not None,
        HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
        BLOCK_P=block_p, BLOCK_N=_pow2(nstate, least=2),
    )  # fmt: skip
    if work is not state:
        state.copy_(work)
    return y


__all__ = ["ssd_state_update_triton", "ssd_triton"]
