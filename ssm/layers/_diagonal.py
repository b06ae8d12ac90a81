"""What DSS and S4D share: diagonal state matrices, their initializations, and decoding.

A diagonal SSM of state size ``N`` with a real kernel stores ``N2 = N/2`` complex eigenvalues,
one of each conjugate pair (S4D paper, arXiv:2206.11893v2, Section 3); every kernel is
``2 Re(...)`` over the stored half. Initializations (S4D paper, Section 4; DSS paper, §3.4):

- ``legs``: the eigenvalues of the normal part of HiPPO-LegS, ``-1/2 + i ω_n``
  (:func:`ssm.hippo.nplr`; DSS's initialization and S4D-LegS, whose ``B`` is LegS's ``B`` in
  that eigenbasis);
- ``inv`` (S4D-Inv): ``A_n = -1/2 + i (N/π) (N/(2n+1) - 1)``;
- ``lin`` (S4D-Lin): ``A_n = -1/2 + i π n``;

each with the S4D paper's ablations: the imaginary part scaled, or drawn at random
(``Im A ~ U[0, N/2)``), the real part drawn at random (``Re A ~ -U(0, 1)``), or both.
Chapters *DSS* and *S4D*.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import _checks
from ..ops.s4d_step import s4d_step
from ._conv import ConvolutionalLayer
from .s4 import _legs_half

__all__ = ["DIAGONAL_INITS", "DiagonalLayer", "DiagonalState", "diagonal_init"]

DIAGONAL_INITS = ("legs", "inv", "lin")


def diagonal_init(
    init: str,
    N: int,
    H: int,
    *,
    imag_scale: float = 1.0,
    random_real: bool = False,
    random_imag: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` and ``B`` ``(H, N/2)`` complex128 of a diagonal SSM of state size ``N`` (even).

    ``B`` is ``1`` except for ``legs``, where it is HiPPO-LegS's ``B`` in the eigenbasis of the
    normal part. Random parts are drawn from torch's global generator, per channel.
    """
    _checks.choice("init", init, DIAGONAL_INITS)
    _checks.positive_int("N", N)
    _checks.positive_int("H", H)
    if N % 2:
        raise ValueError(f"N must be even (one eigenvalue of each conjugate pair), got {N}")
    if not (math.isfinite(imag_scale) and imag_scale > 0):
        raise ValueError(f"imag_scale must be a finite number > 0, got {imag_scale!r}")
    N2 = N // 2
    n = torch.arange(N2, dtype=torch.float64)
    B = torch.ones(N2, dtype=torch.complex128)
    if init == "legs":
        A, _, B = _legs_half(N)
    elif init == "inv":
        A = torch.complex(
            torch.full((N2,), -0.5, dtype=torch.float64), N / math.pi * (N / (2 * n + 1) - 1)
        )
    else:
        A = torch.complex(torch.full((N2,), -0.5, dtype=torch.float64), math.pi * n)
    real = A.real.expand(H, N2)
    imag = imag_scale * A.imag.expand(H, N2)
    if random_real:
        real = -torch.rand(H, N2, dtype=torch.float64).clamp_min(1e-4)  # (H N2) in -(0, 1)
    if random_imag:
        imag = N2 * torch.rand(H, N2, dtype=torch.float64)  # (H N2) in [0, N/2)
    return torch.complex(real, imag), B.expand(H, N2).clone()


class DiagonalState(NamedTuple):
    """Recurrent state of a diagonal layer's :meth:`DiagonalLayer.step`: ``x`` ``(B, H, N2)``
    complex, and ``k`` the number of steps taken (DSS-softmax's recurrence depends on it)."""

    x: torch.Tensor
    k: int


class DiagonalLayer(ConvolutionalLayer):
    """A convolutional layer whose kernel module has ``step_system(k) -> (Ā, B̄_k, C_k)``
    ``(H, N2)`` complex: decoding by :func:`ssm.s4d_step`, ``x_k = Ā x_{k-1} + B̄_k u_k``,
    ``y_k = 2 Re(C_k x_k) + D u_k``. Steps are inference only (no gradient)."""

    def init_state(self, batch: int) -> DiagonalState:
        """The zero state for ``batch`` sequences."""
        _checks.positive_int("batch", batch)
        self._check_unidirectional()
        N2 = self.cfg.d_state // 2
        dtype = self._work_dtype().to_complex()
        return DiagonalState(
            torch.zeros(batch, self.d_model, N2, dtype=dtype, device=self.D.device), 0
        )

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: DiagonalState) -> tuple[torch.Tensor, DiagonalState]:
        """One step: ``x_t`` ``(batch, d_model)`` and the state → ``y_t`` ``(batch, d_model)``
        and the next state."""
        self._check_step(x_t, state, DiagonalState)
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            u = x_t.to(self._work_dtype())  # (B H)
            Ab, Bb, C = (t.to(state.x.dtype) for t in self.kernel.step_system(state.k))  # (H N2)
            x = state.x.clone()  # (B H N2), advanced in place below
            y = s4d_step(x, u, Ab, Bb, C, self.D.to(u.dtype))  # (B H)
        return self._output(y), DiagonalState(x, state.k + 1)
