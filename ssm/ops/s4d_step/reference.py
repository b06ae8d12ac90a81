"""One decoding step of S4D: the recurrent view, one token at a time.

Gu, Gupta, Goel & Ré (S4D), arXiv:2206.11893v2, Section 2: a diagonal SSM discretized to
``Ā = exp(ΔA)``, ``B̄``, holding one eigenvalue of each conjugate pair, runs as

    x_k = Ā ∘ x_{k-1} + B̄ u_k,            y_k = 2 Re(Σ_n C_n x_{k,n}) + D u_k,

which is the convolution with ``K[l] = 2 Re(Σ_n C_n B̄_n Ā_n^l)`` (:func:`ssm.s4d_kernel`)
unrolled. The state after a prompt ``u_0 .. u_{L-1}`` is ``x_{L-1} = Σ_j Ā^{L-1-j} B̄ u_j``.

Dimension letters: B batch, H channels, N state size (complex). Explained in the book's chapter
*Making SSMs fast*, section "Long convolutions and decoding".
"""

from __future__ import annotations

import torch


def s4d_step_ref(
    state: torch.Tensor,
    u: torch.Tensor,
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Advance ``state`` by one step, in place, and return the output ``y_k``.

    Args:
        state: ``(B, H, N)`` complex, ``x_{k-1}``; overwritten with ``x_k``.
        u: ``(B, H)`` real, ``u_k``.
        Ab, Bb, C: ``(H, N)`` complex.
        D: skip term, a float or ``(H,)``.

    Returns:
        ``y_k`` ``(B, H)`` real.
    """
    state.mul_(Ab).add_(Bb * u[..., None])  # x_k = Ā x_{k-1} + B̄ u_k: (B H N)
    y = 2 * (C * state).sum(-1).real  # (B H)
    if D is None:
        return y
    return y + D * u
