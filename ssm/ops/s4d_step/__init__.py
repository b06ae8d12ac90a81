"""S4D inference: a convolutional prefill that also returns the state, then recurrent steps.

- :func:`s4d_prefill` runs a prompt ``u`` ``(B, H, L)`` in parallel: the kernel by
  :func:`ssm.ops.vandermonde.vandermonde`, the output by :func:`ssm.ops.fftconv.fftconv`, and the
  final state ``x_{L-1} = B̄ Σ_j Ā^{L-1-j} u_j`` by the transposed Vandermonde product.
- :func:`s4d_step` advances the state by one token, in place (Triton kernel on CUDA tensors,
  :mod:`ssm.ops.dispatch`).

Prefill then steps equals the convolution over the whole sequence. Explained in the S4D chapter.
Dimension letters: B batch, H channels, N state size (complex), L length.
"""

from __future__ import annotations

import torch

from ... import _checks
from ..dispatch import choose
from ..fftconv import SHORT_KERNEL, fftconv
from ..vandermonde import log_eigenvalues, vandermonde, vandermonde_transpose
from .reference import s4d_step_ref

__all__ = ["s4d_prefill", "s4d_step", "s4d_step_ref"]


def s4d_step(
    state: torch.Tensor,
    u: torch.Tensor,
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | float | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """``x_k = Ā x_{k-1} + B̄ u_k`` (``state`` updated in place), ``y_k = 2 Re(C x_k) + D u_k``.

    Inference only: no gradient flows through the in-place update. Any layout of ``state`` that
    owns its elements works, a ``conj()`` view included (an expanded view is refused); the
    Triton kernel updates a dense complex64 ``state`` in place directly and any other one
    through a dense copy written back.

    Args:
        state: ``(B, H, N)`` complex ``x_{k-1}``, overwritten with ``x_k``.
        u: ``(B, H)`` real input of this step.
        Ab, Bb, C: ``(H, N)`` complex: ``Ā``, ``B̄`` and ``C``.
        D: skip term, a float or ``(H,)``.
        backend: ``"auto"``, ``"reference"`` or ``"triton"`` (see :mod:`ssm.ops.dispatch`).

    Returns:
        ``y_k`` ``(B, H)`` real.

    Explained in the chapter *Making SSMs fast*, section "Long convolutions and decoding".
    """
    state, u = _checks.tensor("state", state), _checks.tensor("u", u, complex_ok=False)
    if not state.is_complex() or state.ndim != 3:
        raise ValueError(
            f"state must be a complex tensor of shape (B, H, N), "
            f"got {state.dtype} of shape {tuple(state.shape)}"
        )
    _checks.in_place("state", state)
    B, H, N = state.shape
    Ab, Bb, C, D = _parameters(H, N, Ab, Bb, C, D)
    if u.shape != (B, H):
        raise ValueError(f"u must have shape (B, H) = {(B, H)}, got {tuple(u.shape)}")
    tensors = (state, u, Ab, Bb, C, D if isinstance(D, torch.Tensor) else None)
    _checks.one_device(state=state, u=u, Ab=Ab, Bb=Bb, C=C, D=D)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise ValueError(
            "s4d_step is an inference op (the state is updated in place): call it under "
            "torch.no_grad(), or differentiate through s4d_prefill / ssm.s4d_kernel instead"
        )
    if choose("s4d_step", tensors, backend, _probe) == "triton":
        from .triton import s4d_step_triton

        return s4d_step_triton(state, u, Ab, Bb, C, D)
    return s4d_step_ref(state, u, Ab, Bb, C, D)


def s4d_prefill(
    u: torch.Tensor,
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | float | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the prompt ``u`` ``(B, H, L)`` as a convolution; return ``(y, state)``.

    ``y`` ``(B, H, L)`` is ``K * u + D u`` with ``K[l] = 2 Re(Σ_n C_n B̄_n Ā_n^l)``, computed as
    :func:`vandermonde` ``(C B̄, log Ā, L)`` (``Ā^l = exp(l log Ā)``, exact also where ``Ā``
    underflowed to 0: :func:`~ssm.ops.vandermonde.log_eigenvalues`); ``state`` ``(B, H, N)`` is
    ``x_{L-1} = Σ_j Ā^{L-1-j} B̄ u_j``, the transposed product of the reversed input. Feeding
    ``state`` to :func:`s4d_step` continues the sequence. Arguments as in :func:`s4d_step`,
    with ``u`` ``(B, H, L)``. Explained in the chapter *Making SSMs fast*, section "Long
    convolutions and decoding".
    """
    u = _checks.tensor("u", u, complex_ok=False)
    if u.ndim != 3 or u.shape[-1] < 1:
        raise ValueError(f"u must have shape (B, H, L) with L >= 1, got {tuple(u.shape)}")
    _, H, L = u.shape
    _checks.tensor("Ab", Ab)
    if Ab.ndim != 2:
        raise ValueError(f"Ab must have shape (H, N), got {tuple(Ab.shape)}")
    Ab, Bb, C, D = _parameters(H, Ab.shape[1], Ab, Bb, C, D)
    _checks.one_device(u=u, Ab=Ab, Bb=Bb, C=C, D=D)
    x = log_eigenvalues(Ab)  # Ā^l = exp(l log Ā): (H N) complex
    K = vandermonde(C * Bb, x, L, backend=backend)  # (H L)
    # a kernel as long as the prompt takes the FFT path (the Triton conv serves short ones)
    y = fftconv(u, K.to(u.dtype), D, backend=backend if L <= SHORT_KERNEL else "reference")
    state = Bb * vandermonde_transpose(u.flip(-1), x, backend=backend)  # (B H N)
    return y, state


def _parameters(H: int, N: int, Ab, Bb, C, D):
    """Check ``Ā, B̄, C`` ``(H, N)`` complex and ``D`` (None, a float or ``(H,)``)."""
    for name, t in (("Ab", Ab), ("Bb", Bb), ("C", C)):
        _checks.tensor(name, t)
        if not t.is_complex() or t.shape != (H, N):
            raise ValueError(
                f"{name} must be a complex tensor of shape (H, N) = {(H, N)}, "
                f"got {t.dtype} of shape {tuple(t.shape)}"
            )
    _checks.channel_skip(D, H)
    return Ab, Bb, C, D


def _probe(device: torch.device) -> None:
    from .triton import s4d_step_triton

    gen = torch.Generator().manual_seed(0)
    Ab = torch.exp(-torch.rand(3, 8, generator=gen) + 1j * torch.randn(3, 8, generator=gen))
    Bb, C = (torch.randn(3, 8, dtype=torch.complex64, generator=gen) for _ in range(2))
    state = torch.randn(2, 3, 8, dtype=torch.complex64, generator=gen)
    u = torch.randn(2, 3, generator=gen)
    Ab, Bb, C, state, u = (t.to(device) for t in (Ab.to(torch.complex64), Bb, C, state, u))
    expected = state.clone()
    y_ref = s4d_step_ref(expected, u, Ab, Bb, C, 0.5)
    y = s4d_step_triton(state, u, Ab, Bb, C, 0.5)
    if not (
        torch.allclose(y, y_ref, rtol=1e-5, atol=1e-5)
        and torch.allclose(state, expected, rtol=1e-5, atol=1e-5)
    ):
        raise RuntimeError("s4d_step: the Triton kernel disagrees with the reference")
