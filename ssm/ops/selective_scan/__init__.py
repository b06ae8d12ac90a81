"""The selective scan of Mamba (arXiv:2312.00752v2, Algorithm 2): reference and Triton kernel.

:func:`selective_scan` runs the whole sequence (training, prefill); :func:`selective_state_update`
advances the state by one token (decoding). Both check their arguments, then run the PyTorch
reference or the Triton kernel as :func:`ssm.ops.dispatch.choose` decides. Layouts are those of
``mamba_ssm``'s ``selective_scan_fn`` and ``selective_state_update``. Dimension letters:
B batch, D channels, L length, N state size, G groups.

Explained in the book's chapter *Making SSMs fast* (``book/making_ssms_fast.ipynb``); the
derivation is in this folder's README.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import _checks
from ..common import step_size
from ..dispatch import choose
from .reference import (
    _per_channel,
    _per_channel_bias,
    _work_dtype,
    selective_scan_ref,
    selective_state_update_ref,
)

__all__ = [
    "selective_scan",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
]


def _grouped_bc(
    name: str, M: torch.Tensor, batch: int, dim: int, dstate: int, tail: tuple[int, ...]
) -> None:
    """``M`` is ``(B, N, *tail)`` or ``(B, G, N, *tail)`` with ``G`` dividing ``D``."""
    _checks.real(name, M)
    lead = len(tail)
    shape = tuple(M.shape)
    ok = M.ndim in (2 + lead, 3 + lead) and shape[0] == batch and shape[-1 - lead] == dstate
    ok = ok and shape[M.ndim - lead :] == tail
    if ok and M.ndim == 3 + lead:  # G divides D; G = 0 only for D = 0 (0 divides 0)
        ok = dim % shape[1] == 0 if shape[1] else dim == 0
    if not ok:
        letters = "".join(f", {n}" for n in tail)
        raise ValueError(
            f"{name} must have shape (batch, N{letters}) = {(batch, dstate, *tail)} or "
            f"(batch, groups, N{letters}) with groups dividing dim={dim}, got {shape}"
        )


def _check_scan(u, delta, A, B, C, D, z, delta_bias) -> None:
    _checks.real("u", u)
    if u.ndim != 3:
        raise ValueError(f"u must have shape (batch, dim, L), got {tuple(u.shape)}")
    batch, dim, length = u.shape
    _checks.real("delta", delta, (batch, dim, length), "like u")
    _checks.real("A", A)  # complex A (S4D-style) is not supported
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"A must have shape (dim, N) with dim={dim}, got {tuple(A.shape)}")
    dstate = A.shape[1]
    _grouped_bc("B", B, batch, dim, dstate, (length,))
    _grouped_bc("C", C, batch, dim, dstate, (length,))
    if C.shape != B.shape:
        raise ValueError(f"C must have the shape of B {tuple(B.shape)}, got {tuple(C.shape)}")
    _checks.real("D", D, (dim,), "one skip weight per channel")
    _checks.real("z", z, (batch, dim, length), "like u")
    _checks.real("delta_bias", delta_bias, (dim,), "one bias per channel")
    _checks.one_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


def _empty_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """:func:`selective_scan` when one of B, D, N, L is 0, in PyTorch: ``(out, last_state)``.

    The terms of the state, ``Δ_s B_s u_s`` for every (batch, channel, state, step), are then an
    empty tensor (scaled here by ``exp(Δ_s A)`` only to keep ``A`` in the autograd graph). The
    state's part of ``y``, ``Σ_n C_t h_t``, is a sum of them over no state (N = 0: zeros) or
    empty, and the last state their sum over no step (L = 0: zeros) or empty; what is left is
    ``out = D u · silu(z)``. Written with these sums, every input has a gradient, zero or empty.
    Dtypes as the reference's: ``out`` in ``u``'s, the state in float32 (float64 for float64).
    """
    work = _work_dtype(u, delta, A, B, C, D, z, delta_bias)
    dim = u.shape[1]
    x = u.to(work)  # (B D L)
    dt = step_size(delta.to(work), _per_channel_bias(delta_bias, 3, work), delta_softplus)
    Bd, Cd = (_per_channel(M.to(work), dim, B.ndim == 4) for M in (B, C))  # (B D|1 N L)
    terms = torch.exp(dt[:, :, None] * A.to(work)[..., None]) * Bd * (dt * x)[:, :, None]
    y = (Cd * terms).sum(2)  # (B D L)
    if D is not None:
        y = y + D.to(work)[:, None] * x
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(u.dtype), terms.sum(-1)  # (B D L), (B D N)


def _probe_scan(device: torch.device) -> None:
    """Run the kernel forward and backward at a tiny size on ``device``; raise if it disagrees
    with the reference."""
    from .triton import selective_scan_triton

    gen = torch.Generator().manual_seed(0)
    batch, dim, dstate, length = 1, 4, 4, 37

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=gen)).to(device)

    A = -torch.rand(dim, dstate, generator=gen).to(device) - 0.5
    inputs = [
        rand(batch, dim, length), rand(batch, dim, length, scale=0.5), A,
        rand(batch, 2, dstate, length), rand(batch, 2, dstate, length),
        rand(dim), rand(batch, dim, length), rand(dim, scale=0.5),
    ]  # fmt: skip
    dout = rand(batch, dim, length)
    results = []
    for fn in (selective_scan_ref, selective_scan_triton):
        xs = [x.clone().requires_grad_() for x in inputs]
        out, last = fn(*xs, delta_softplus=True, return_last_state=True)
        out.backward(dout)
        results.append([out, last, *(x.grad for x in xs)])
    names = ["out", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"]
    for name, ref, got in zip(names, *results, strict=True):
        if not torch.allclose(got, ref, rtol=1e-3, atol=1e-3):
            err = (got - ref).abs().max().item()
            raise RuntimeError(
                f"selective_scan probe: {name} differs from the reference by {err:.3g}"
            )


def selective_scan(
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
    *,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t``, ``y_t = C_t h_t + D u_t``,
    ``out = y · silu(z)``, with ``Δ = softplus(delta + delta_bias)``.

    Args:
        u: ``(B, D, L)``; delta: ``(B, D, L)``; A: ``(D, N)`` real;
        B, C: ``(B, N, L)`` or ``(B, G, N, L)`` (same shape; ``G`` divides ``D``);
        D: ``(D,)``; z: ``(B, D, L)``; delta_bias: ``(D,)``.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the state after the last step, ``(B, D, N)`` float32.
        backend: ``"reference"``, ``"triton"`` or ``"auto"`` (default: ``$SSM_BACKEND`` or
            ``"auto"``), see :mod:`ssm.ops.dispatch`.

    Returns:
        ``out`` ``(B, D, L)`` in ``u``'s dtype, and the last state if asked for. Same semantics
        as ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``.

    Empty dimensions: the same results on both backends, computed in PyTorch (the kernels
    are not launched). B, D or L = 0 gives an empty ``out``; N = 0 (no state) gives
    ``out = D u · silu(z)`` (zeros without ``D``); the last state is ``(B, D, N)``, zeros for
    L = 0. Gradients reach every input (zero or empty). ``B`` and ``C`` may have ``G = 0``
    groups only for D = 0.

    Raises:
        ValueError: a wrong shape, dtype or device, a meta tensor, or float64 inputs with
            ``backend="triton"``.

    Explained in the book's chapter *Making SSMs fast*.
    """
    _check_scan(u, delta, A, B, C, D, z, delta_bias)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    path = choose("selective_scan", tensors, backend, _probe_scan)
    if u.numel() == 0 or A.shape[1] == 0:
        out, last = _empty_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return (out, last) if return_last_state else out
    if path == "reference":
        fn = selective_scan_ref
    else:
        from .triton import selective_scan_triton as fn
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _check_step(state, x, dt, A, B, C, D, z, dt_bias) -> None:
    _checks.real("state", state)
    if state.ndim != 3:
        raise ValueError(f"state must have shape (batch, dim, N), got {tuple(state.shape)}")
    batch, dim, dstate = state.shape
    _checks.real("x", x, (batch, dim), "(batch, dim) of state")
    _checks.real("dt", dt, (batch, dim), "like x")
    _checks.real("A", A, (dim, dstate), "(dim, N) of state")
    _grouped_bc("B", B, batch, dim, dstate, ())
    _grouped_bc("C", C, batch, dim, dstate, ())
    if C.shape != B.shape:
        raise ValueError(f"C must have the shape of B {tuple(B.shape)}, got {tuple(C.shape)}")
    _checks.real("D", D, (dim,), "one skip weight per channel")
    _checks.real("z", z, (batch, dim), "like x")
    _checks.real("dt_bias", dt_bias, (dim,), "one bias per channel")
    _checks.one_device(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    _checks.in_place("state", state)


def _empty_step(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    """:func:`selective_state_update` when one of B, D, N is 0, in PyTorch: the reference's
    step, ``h = exp(Δ A) h + Δ B x``, ``y = C h + D x``, gated, with ``h`` empty, so that
    ``y = D x · silu(z)`` for N = 0 (zeros without ``D``) and empty otherwise; ``state``, empty,
    is left as it is."""
    work = _work_dtype(state, x, dt, A, B, C, D, z, dt_bias)
    dim = x.shape[1]
    u = x.to(work)  # (B D)
    step = step_size(dt.to(work), _per_channel_bias(dt_bias, 2, work), dt_softplus)  # (B D)
    Bd, Cd = (_per_channel(M.to(work), dim, B.ndim == 3) for M in (B, C))  # (B D|1 N)
    h = torch.exp(step[..., None] * A.to(work)) * state.to(work) + Bd * (step * u)[..., None]
    y = (Cd * h).sum(-1)  # (B D)
    if D is not None:
        y = y + D.to(work) * u
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(x.dtype)


def _probe_step(device: torch.device) -> None:
    """Run the decode kernel once at a tiny size on ``device``; raise if it disagrees with the
    reference."""
    from .triton import selective_state_update_triton

    gen = torch.Generator().manual_seed(0)
    batch, dim, dstate = 2, 4, 4
    state = torch.randn(batch, dim, dstate, generator=gen).to(device)
    inputs = [
        torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen),
        -torch.rand(dim, dstate, generator=gen) - 0.5,
        torch.randn(batch, 2, dstate, generator=gen), torch.randn(batch, 2, dstate, generator=gen),
        torch.randn(dim, generator=gen), torch.randn(batch, dim, generator=gen),
        torch.randn(dim, generator=gen),
    ]  # fmt: skip
    inputs = [x.to(device) for x in inputs]
    ref_state, got_state = state.clone(), state.clone()
    ref = selective_state_update_ref(ref_state, *inputs, dt_softplus=True)
    got = selective_state_update_triton(got_state, *inputs, dt_softplus=True)
    for name, r, g in (("y", ref, got), ("state", ref_state, got_state)):
        if not torch.allclose(g, r, rtol=1e-3, atol=1e-3):
            err = (g - r).abs().max().item()
            raise RuntimeError(
                f"selective_state_update probe: {name} differs from the reference by {err:.3g}"
            )


def selective_state_update(
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
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """One decoding step of the selective SSM; ``state`` ``(B, D, N)`` is updated in place.

    Args:
        state: ``(B, D, N)``; x, dt: ``(B, D)``; A: ``(D, N)`` real;
        B, C: ``(B, N)`` or ``(B, G, N)`` (same shape); D: ``(D,)``; z: ``(B, D)``;
        dt_bias: ``(D,)``; dt_softplus: apply softplus to ``dt + dt_bias``.
        backend: as for :func:`selective_scan`.

    Returns:
        ``y`` ``(B, D)`` in ``x``'s dtype. Same semantics as ``mamba_ssm``'s
        ``selective_state_update``; a prefix through :func:`selective_scan` with
        ``return_last_state=True`` followed by steps equals the scan of the whole sequence.

    Empty dimensions: as :func:`selective_scan`, on both backends: B or D = 0 gives an empty
    ``y``, N = 0 gives ``y = D x · silu(z)`` (zeros without ``D``); the state, empty, is left as
    it is.

    Raises:
        ValueError: as :func:`selective_scan`, and for an expanded (stride-0) ``state``, which
            cannot be updated in place.

    Explained in the book's chapter *Making SSMs fast*.
    """
    _check_step(state, x, dt, A, B, C, D, z, dt_bias)
    tensors = (state, x, dt, A, B, C, D, z, dt_bias)
    path = choose("selective_state_update", tensors, backend, _probe_step)
    if state.numel() == 0:
        return _empty_step(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    if path == "reference":
        fn = selective_state_update_ref
    else:
        from .triton import selective_state_update_triton as fn
    return fn(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
