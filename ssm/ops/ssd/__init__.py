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
from ..dispatch import choose
from .reference import (
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

    Raises:
        ValueError: a wrong shape, dtype or device, a meta tensor, an empty dimension
            (B, L, H, P, G or N = 0), or float64 inputs with ``backend="triton"``.

    Explained in the book's chapter *Making SSMs fast*.
    """
    _check_ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    args = (x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    flags = {"dt_softplus": bool(dt_softplus), "return_final_states": bool(return_final_states)}
    if choose("ssd", args, backend, _probe_ssd) == "triton":
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
    Returns y ``(B, H, P)`` in the dtype of x. Raises ``ValueError`` as :func:`ssd`. Explained
    in the book's chapter *Making SSMs fast*.
    """
    _check_update(state, x, dt, A, B, C, D, z, dt_bias)
    args = (state, x, dt, A, B, C, D, z, dt_bias)
    if choose("ssd_state_update", args, backend, _probe_update) == "triton":
        from .triton import ssd_state_update_triton

        return ssd_state_update_triton(*args, dt_softplus=bool(dt_softplus))
    return ssd_state_update_ref(*args, dt_softplus=bool(dt_softplus))


def _check_groups(B: torch.Tensor, heads: int) -> None:
    groups = B.shape[-2]
    if groups == 0 or heads % groups != 0:
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
    _checks.nonempty("x", x, "B, L, H, P")
    _checks.nonempty("B", B, "B, L, G, N")


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
    _checks.nonempty("state", state, "B, H, P, N")
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
