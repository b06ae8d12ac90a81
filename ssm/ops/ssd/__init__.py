"""SSD, the state-space layer of Mamba-2 (Dao & Gu, arXiv:2405.21060): the public functions.

:func:`ssd` has the semantics and tensor layouts of ``mamba_ssm``'s ``mamba_chunk_scan_combined``
and :func:`ssd_state_update` those of its one-step decoding update. Each checks its arguments and
runs either the PyTorch reference (``reference.py``) or the Triton kernels (``triton.py``), as
:func:`ssm.ops.dispatch.choose` decides. Explained in the book's chapter *Making SSMs fast*
(``book/making_ssms_fast.ipynb``); the derivation is in this folder's README.

Letters: B batch, L length, H heads, P head dim, N state size, G groups (H divisible by G).
"""

from __future__ import annotations

import torch

from ... import _checks
from ..common import step_size
from ..dispatch import choose
from .reference import (
    skip_and_gate,
    ssd_chunked,
    ssd_quadratic,
    ssd_recurrent,
    ssd_state_update_ref,
)


def ssd(
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
    *,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Structured state-space duality (SSD) layer, chunked (Mamba-2, arXiv:2405.21060 §6):

    ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ``, ``y_t = h_t C_t + D x_t``, ``out = y · silu(z)``
    per batch and head, with ``dt ← softplus(dt + dt_bias)`` when asked.

    Args:
        x: ``(B, L, H, P)`` inputs.
        dt: ``(B, L, H)`` step sizes (before ``dt_bias`` and the softplus).
        A: ``(H,)`` one negative real number per head.
        B, C: ``(B, L, G, N)`` input and output projections, shared by the ``H/G`` heads of a
            group.
        chunk_size: steps per chunk Q of the chunked algorithm (any L works; a chunk longer
            than the sequence is clamped to L).
        D: ``(H,)`` or ``(H, P)`` skip connection.
        z: ``(B, L, H, P)`` gate.
        dt_bias: ``(H,)`` added to ``dt``.
        initial_states: ``(B, H, P, N)`` state before the first step.
        dt_softplus: apply ``softplus`` to ``dt + dt_bias``.
        return_final_states: also return the state after the last step.
        backend: ``"auto"``, ``"reference"`` or ``"triton"`` (see :mod:`ssm.ops.dispatch`);
            ``None`` reads ``SSM_BACKEND``.

    Returns:
        ``out`` ``(B, L, H, P)`` in the dtype of x, and with ``return_final_states`` the final
        state ``(B, H, P, N)`` (float32 for half-precision inputs). Causal also under NaN and
        inf inputs: a non-finite value at step s reaches no output before s.

    Empty dimensions: the same results on both backends, computed in PyTorch (the kernels
    are not launched). B, L, H or P = 0 gives an empty ``out``; N = 0 (no state) gives
    ``out = D x · silu(z)`` (zeros without ``D``); the final state is ``(B, H, P, N)``, for
    L = 0 ``initial_states`` (zeros when ``None``) in the final state's dtype. Gradients reach
    every input (zero or empty). ``G = 0`` groups only for H = 0.

    Raises:
        ValueError: a wrong shape, dtype or device, a meta tensor, a number of groups that
            does not divide H, or float64 inputs with ``backend="triton"``.

    Explained in the book's chapter *Making SSMs fast*.
    """
    _check_ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    args = (x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    flags = {"dt_softplus": bool(dt_softplus), "return_final_states": bool(return_final_states)}
    path = choose("ssd", args, backend, _probe_ssd)
    if x.numel() == 0 or B.shape[3] == 0:
        out, final = _empty_ssd(x, dt, A, B, C, D, z, dt_bias, initial_states, dt_softplus)
        return (out, final) if return_final_states else out
    if path == "triton":
        from .triton import ssd_triton

        return ssd_triton(*args, **flags)
    return ssd_chunked(*args, **flags)


def ssd_state_update(
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
    """One decoding step of SSD, after a prefill by :func:`ssd` with ``return_final_states``:
    ``h ← exp(dt A) h + dt x Bᵀ`` (``state`` updated in place), ``y = (h C + D x) · silu(z)``.

    Shapes: state ``(B, H, P, N)`` (any strides, not expanded), x ``(B, H, P)``, dt ``(B, H)``,
    A ``(H,)``, B, C ``(B, G, N)``, D ``(H,)`` or ``(H, P)``, z ``(B, H, P)``, dt_bias ``(H,)``.
    Returns y ``(B, H, P)`` in the dtype of x. Raises ``ValueError`` as :func:`ssd`. Empty
    dimensions as :func:`ssd`, on both backends: B, H or P = 0 gives an empty ``y``, N = 0
    gives ``y = D x · silu(z)``; the state, empty, is left as it is. Explained in the book's
    chapter *Making SSMs fast*.
    """
    _check_update(state, x, dt, A, B, C, D, z, dt_bias)
    args = (state, x, dt, A, B, C, D, z, dt_bias)
    path = choose("ssd_state_update", args, backend, _probe_update)
    if state.numel() == 0:
        return _empty_update(*args, dt_softplus=bool(dt_softplus))
    if path == "triton":
        from .triton import ssd_state_update_triton

        return ssd_state_update_triton(*args, dt_softplus=bool(dt_softplus))
    return ssd_state_update_ref(*args, dt_softplus=bool(dt_softplus))


def _per_head(M: torch.Tensor, heads: int, axis: int) -> torch.Tensor:
    """``B`` or ``C`` with its group axis ``axis`` repeated to one entry per head."""
    groups = M.shape[axis]
    return M.repeat_interleave(heads // groups, dim=axis) if groups else M  # G = 0 for H = 0


def _empty_ssd(x, dt, A, B, C, D, z, dt_bias, initial_states, dt_softplus):
    """:func:`ssd` when one of B, L, H, P, N is 0 (G = 0 only with H = 0), in PyTorch:
    ``(out, final_states)``.

    The terms of the state, ``dt_t x_t B_tᵀ`` and ``h_0`` for every (batch, step, head, P, N),
    are then an empty tensor (scaled here by ``exp(dt_t A)`` only to keep ``A`` in the autograd
    graph). The state's part of ``y``, ``h_t C_t``, is a sum of them over no state (N = 0:
    zeros) or empty, and the final state is ``h_0`` plus their sum over no step (L = 0) or
    empty; what is left is ``out = D x · silu(z)``. Written with these sums, every input has a
    gradient, zero or empty. Dtypes as the reference's: ``out`` in ``x``'s, the state in
    float32 at least (float64 for float64).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    batch, _, heads, headdim = x.shape
    xs = x.to(dtype)  # (B, L, H, P)
    step = step_size(dt.to(dtype), dt_bias, dt_softplus)  # (B, L, H)
    Bh, Ch = (_per_head(M.to(dtype), heads, 2) for M in (B, C))  # (B, L, H, N)
    if initial_states is None:
        h0 = xs.new_zeros(batch, heads, headdim, B.shape[3])
    else:
        h0 = initial_states.to(dtype)  # (B, H, P, N)
    inject = (step[..., None] * xs)[..., None] * Bh[:, :, :, None]  # (B, L, H, P, N)
    terms = torch.exp(step * A.to(dtype))[..., None, None] * (inject + h0[:, None])
    y = torch.einsum("blhpn,blhn->blhp", terms, Ch)
    return skip_and_gate(y, xs, D, z).to(x.dtype), h0 + terms.sum(1)


def _empty_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    """:func:`ssd_state_update` when one of B, H, P, N is 0, in PyTorch: the reference's step,
    ``h = exp(dt A) h + dt x Bᵀ``, ``y = h C + D x``, gated, with ``h`` empty, so that
    ``y = D x · silu(z)`` for N = 0 and empty otherwise; ``state``, empty, is left as it is."""
    dtype = torch.promote_types(state.dtype, torch.float32)
    heads = x.shape[1]
    xs = x.to(dtype)  # (B, H, P)
    step = step_size(dt.to(dtype), dt_bias, dt_softplus)  # (B, H)
    Bh, Ch = (_per_head(M.to(dtype), heads, 1) for M in (B, C))  # (B, H, N)
    h = (
        torch.exp(step * A.to(dtype))[..., None, None] * state.to(dtype)
        + (step[..., None] * xs)[..., None] * Bh[:, :, None]
    )  # (B, H, P, N)
    y = torch.einsum("bhpn,bhn->bhp", h, Ch)
    return skip_and_gate(y, xs, D, z).to(x.dtype)


def _check_groups(B: torch.Tensor, heads: int) -> None:
    groups = B.shape[-2]
    divides = heads % groups == 0 if groups else heads == 0  # G = 0 only for H = 0: 0 | 0
    if not divides:
        raise ValueError(
            f"the number of heads H = {heads} must be divisible by the number of groups "
            f"G = {groups} (B has shape {tuple(B.shape)})"
        )


def _check_D(D: torch.Tensor | None, heads: int, headdim: int) -> None:
    if D is not None and tuple(_checks.real("D", D).shape) not in ((heads,), (heads, headdim)):
        raise ValueError(
            f"D must have shape (H,) = ({heads},) or (H, P) = {(heads, headdim)}, "
            f"got {tuple(D.shape)}"
        )


def _check_ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states) -> None:
    _checks.real("x", x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, L, H, P), got {tuple(x.shape)}")
    batch, length, heads, headdim = x.shape
    _checks.real("dt", dt, (batch, length, heads), "(B, L, H)")
    _checks.real("A", A, (heads,), "(H,)")
    _checks.real("B", B)
    if B.ndim != 4 or B.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"B must have shape (B, L, G, N) = ({batch}, {length}, G, N), got {tuple(B.shape)}"
        )
    _check_groups(B, heads)
    _checks.real("C", C, tuple(B.shape), "(B, L, G, N), like B")
    _checks.positive_int("chunk_size", chunk_size)
    _check_D(D, heads, headdim)
    _checks.real("z", z, tuple(x.shape), "(B, L, H, P), like x")
    _checks.real("dt_bias", dt_bias, (heads,), "(H,)")
    state_shape = (batch, heads, headdim, B.shape[3])
    _checks.real("initial_states", initial_states, state_shape, "(B, H, P, N)")
    _checks.one_device(
        x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states
    )


def _check_update(state, x, dt, A, B, C, D, z, dt_bias) -> None:
    _checks.real("state", state)
    if state.ndim != 4:
        raise ValueError(f"state must have shape (B, H, P, N), got {tuple(state.shape)}")
    batch, heads, headdim, nstate = state.shape
    _checks.real("x", x, (batch, heads, headdim), "(B, H, P)")
    _checks.real("dt", dt, (batch, heads), "(B, H)")
    _checks.real("A", A, (heads,), "(H,)")
    _checks.real("B", B)
    if B.ndim != 3 or B.shape[0] != batch or B.shape[2] != nstate:
        raise ValueError(
            f"B must have shape (B, G, N) = ({batch}, G, {nstate}), got {tuple(B.shape)}"
        )
    _check_groups(B, heads)
    _checks.real("C", C, tuple(B.shape), "(B, G, N), like B")
    _check_D(D, heads, headdim)
    _checks.real("z", z, tuple(x.shape), "(B, H, P), like x")
    _checks.real("dt_bias", dt_bias, (heads,), "(H,)")
    _checks.one_device(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    _checks.in_place("state", state)


def _probe_inputs(device: torch.device, length: int) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=g)).to(device)

    return {
        "x": rand(1, length, 2, 16),
        "dt": rand(1, length, 2),
        "A": -torch.rand(2, generator=g).to(device) - 0.5,
        "B": rand(1, length, 1, 16),
        "C": rand(1, length, 1, 16),
        "D": rand(2),
        "z": rand(1, length, 2, 16),
        "dt_bias": rand(2, scale=0.3),
        "initial_states": rand(1, 2, 16, 16),
    }


def _compare(op: str, got: torch.Tensor, want: torch.Tensor) -> None:
    got, want = got.detach().double(), want.detach().double()
    err = float((got - want).abs().max())
    scale = float(want.abs().max()) + 1.0
    if not err <= 1e-3 * scale:  # also catches NaN
        raise RuntimeError(f"{op}: the Triton kernel differs from the reference by {err:.3g}")


def _probe_ssd(device: torch.device) -> None:
    """Run the kernels forward and backward at a tiny size; compare with the reference."""
    from .triton import ssd_triton

    results = []
    for fn in (ssd_triton, ssd_chunked):
        inputs = {k: v.clone().requires_grad_() for k, v in _probe_inputs(device, 20).items()}
        out, final = fn(chunk_size=16, dt_softplus=True, return_final_states=True, **inputs)
        (out.square().sum() + final.sum()).backward()
        results.append([out, final] + [v.grad for v in inputs.values()])
    for got, want in zip(*results, strict=True):
        _compare("ssd", got, want)


def _probe_update(device: torch.device) -> None:
    from .triton import ssd_state_update_triton

    v = _probe_inputs(device, 1)
    state = v.pop("initial_states")
    v = {k: t[:, 0] if t.ndim > 2 else t for k, t in v.items()}  # drop the length axis
    args = (v["x"], v["dt"], v["A"], v["B"], v["C"], v["D"], v["z"], v["dt_bias"])
    states = [state.clone(), state.clone()]
    y = ssd_state_update_triton(states[0], *args, dt_softplus=True)
    y_ref = ssd_state_update_ref(states[1], *args, dt_softplus=True)
    _compare("ssd_state_update", y, y_ref)
    _compare("ssd_state_update", states[0], states[1])


__all__ = [
    "ssd",
    "ssd_chunked",
    "ssd_quadratic",
    "ssd_recurrent",
    "ssd_state_update",
    "ssd_state_update_ref",
]
