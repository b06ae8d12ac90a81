"""The Liquid-S4 layer: S4D's diagonal kernel plus the kernels of the input correlations.

Hasani, Lechner, Wang, Chahine, Amini & Rus, "Liquid Structural State-Space Models"
(Liquid-S4), arXiv:2209.12951v1, Section 3. A liquid time-constant SSM, linearized and
discretized, lets the input modulate the transition (diagonal here, per channel and state):

    x_k = (Ā + B̄ u_k) ⊙ x_{k-1} + B̄ u_k,    y_k = 2 Re(C x_k) + D u_k.      (LTC recurrence)

Unrolled, ``x_k = Σ_{j ≤ k} Π_{i=j+1..k} (Ā + B̄ u_i) B̄ u_j``; expanding the product picks
``B̄ u_i`` at a subset of the steps after ``j`` and ``Ā`` at the others. Liquid-S4 keeps the
subsets that are a run of ``p - 1`` steps right after ``j`` (``p ≤`` ``order``, the paper's
liquid degree), the terms ``Ā^m B̄^p u_{t-p+1} ⋯ u_t`` with ``t = j + p - 1`` and ``m = k - t``:

    y = K^{(1)} * u + Σ_{p=2..P} K^{(p)} * u^{(p)} + D u,
    u^{(p)}_t = u_t u_{t-1} ⋯ u_{t-p+1}    (0 for t < p - 1),
    K^{(p)}_m = 2 Re Σ_n C_n B̄_n^p Ā_n^m      ("kb": the terms above; K^{(1)} is S4D's kernel)
    K^{(p)}_m = 2 Re Σ_n C_n B̄_n^p            ("pb": Ā-powers of the liquid terms set to I),

the paper's liquid kernel (Section 3) and its simplified "PB" form, the default here as in
its experiments. Both come from one recurrence (:func:`liquid_recurrence`, the layer's
``step``): chains ``z^{(1)}_k = B̄ u_k`` and ``z^{(p)}_k = B̄ u_k ⊙ z^{(p-1)}_{k-1}``
(so ``z^{(p)}_k = B̄^p u^{(p)}_k``) feed the states

    s^{(p)}_k = M_p ⊙ s^{(p)}_{k-1} + z^{(p)}_k,    y_k = 2 Re Σ_p C s^{(p)}_k + D u_k,

with ``M_1 = Ā`` and ``M_p = Ā`` ("kb") or ``1`` ("pb"). The kernel is S4D's
(:class:`ssm.layers.s4d.S4DKernel`: diagonal ``A``, ZOH or bilinear), the paper's S4D-based
variant; the rest of the layer is S4's (GELU, GLU output). Chapter *Liquid-S4*.

Dimension letters: B batch, L length, H channels, N2 stored eigenvalues, P liquid order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .. import _checks
from ..discretize import discretize
from ..ops.fftconv import fftconv
from ..ops.vandermonde import vandermonde
from ._conv import ConvolutionalLayer, check_config
from ._diagonal import DIAGONAL_INITS
from .s4d import S4DConfig, S4DKernel

__all__ = [
    "LIQUID_KERNELS",
    "LiquidS4",
    "LiquidS4Config",
    "LiquidState",
    "correlations",
    "liquid_kernel",
    "liquid_recurrence",
]

LIQUID_KERNELS = ("pb", "kb")


def liquid_kernel(
    log_Ab: torch.Tensor, Bb: torch.Tensor, C: torch.Tensor, L: int, order: int, variant: str
) -> torch.Tensor:
    """``K^{(p)}_m`` ``(P, H, L)`` for ``p = 1..P`` (module docstring): ``2 Re Σ_n C_n B̄_n^p
    Ā_n^m``, without ``Ā^m`` for ``p ≥ 2`` under ``"pb"``.

    Args:
        log_Ab: ``log Ā`` ``(H, N2)`` complex (``ΔA`` for ZOH).
        Bb, C: ``B̄`` and ``C`` ``(H, N2)`` complex.
        L: kernel length; order: ``P ≥ 1``; variant: ``"pb"`` or ``"kb"``.
    """
    _checks.positive_int("L", L)
    _checks.positive_int("order", order)
    _checks.choice("variant", variant, LIQUID_KERNELS)
    kernels = []
    for p in range(1, order + 1):
        x = log_Ab if p == 1 or variant == "kb" else torch.zeros_like(log_Ab)  # (H N2)
        kernels.append(vandermonde(C * Bb**p, x, L))  # (H L)
    return torch.stack(kernels)  # (P H L)


def correlations(u: torch.Tensor, order: int) -> torch.Tensor:
    """``u^{(p)}_t = u_t u_{t-1} ⋯ u_{t-p+1}`` ``(P, B, H, L)`` for ``p = 1..P``, of ``u``
    ``(B, H, L)``; zero for ``t < p - 1``."""
    prods = [u]
    for p in range(2, order + 1):
        shifted = nn.functional.pad(u[..., : -(p - 1)], (p - 1, 0))  # (B H L): u_{t-p+1}
        prods.append(prods[-1] * shifted[..., : u.shape[-1]])
    return torch.stack(prods)  # (P B H L)


def transitions(Ab: torch.Tensor, order: int, variant: str) -> torch.Tensor:
    """``M_p`` ``(P, H, N2)``: ``Ā`` for ``p = 1`` and for ``"kb"``, ``1`` for ``"pb"``."""
    rest = Ab if variant == "kb" else torch.ones_like(Ab)
    return torch.stack([Ab] + [rest] * (order - 1))  # (P H N2)


def liquid_step(s, z, u, Ab, Bb, C, order, variant):
    """One step of :func:`liquid_recurrence`: ``s`` ``(B, H, P, N2)``, ``z`` ``(B, H, P-1, N2)``
    (the chains of the previous step), ``u`` ``(B, H)`` → ``y`` ``(B, H)``, next ``s`` and ``z``."""
    bu = Bb * u[..., None]  # (B H N2)
    z = torch.cat([bu[:, :, None], bu[:, :, None] * z], 2)  # (B H P N2): z^{(p)}_k
    s = transitions(Ab, order, variant).transpose(0, 1) * s + z  # (B H P N2)
    y = 2 * (C[:, None] * s).sum((-1, -2)).real  # (B H)
    return y, s, z[:, :, : order - 1]


def liquid_recurrence(
    u: torch.Tensor,
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    order: int,
    variant: str,
) -> torch.Tensor:
    """The recurrence the liquid kernels come from (module docstring), step by step from zero:
    ``u`` ``(B, H, L)``, ``Ā, B̄, C`` ``(H, N2)`` complex → ``y`` ``(B, H, L)`` without ``D``."""
    B_, H, L = u.shape
    s = torch.zeros(B_, H, order, Ab.shape[-1], dtype=Ab.dtype, device=u.device)  # (B H P N2)
    z = s[:, :, : order - 1]  # (B H P-1 N2)
    ys = []
    for k in range(L):
        y, s, z = liquid_step(s, z, u[..., k].to(Ab.dtype), Ab, Bb, C, order, variant)
        ys.append(y)
    return torch.stack(ys, -1)  # (B H L)


@dataclass
class LiquidS4Config:
    """Settings of a Liquid-S4 layer; ``build(d_model)`` makes one. Every field is plain JSON."""

    d_state: int = 64  # N (even): N/2 complex eigenvalues per channel
    l_max: int | None = None  # kernel length; None until Backbone.for_data sets it
    order: int = 2  # P, the liquid degree: correlations of up to P consecutive inputs
    liquid_kernel: str = "pb"  # "pb" (Ā-powers dropped in the liquid terms) or "kb"
    init: str = "legs"  # A at init: one of DIAGONAL_INITS
    discretization: str = "zoh"  # "zoh" or "bilinear"
    dt_min: float = 1e-3  # log Δ at init uniform in [log dt_min, log dt_max]
    dt_max: float = 1e-1
    dropout: float = 0.0  # after the GELU, before the GLU output projection

    def __post_init__(self) -> None:
        check_config(self)
        _checks.positive_int("order", self.order)
        _checks.choice("liquid_kernel", self.liquid_kernel, LIQUID_KERNELS)
        _checks.choice("init", self.init, DIAGONAL_INITS)
        _checks.choice("discretization", self.discretization, ("zoh", "bilinear"))

    def s4d_config(self) -> S4DConfig:
        """The settings of the S4D kernel inside the layer."""
        return S4DConfig(
            d_state=self.d_state, l_max=self.l_max, init=self.init,
            discretization=self.discretization, dt_min=self.dt_min, dt_max=self.dt_max,
        )  # fmt: skip

    def build(self, d_model: int) -> LiquidS4:
        """The Liquid-S4 layer of width ``d_model`` with these settings."""
        return LiquidS4(self, d_model)


class LiquidState(NamedTuple):
    """Recurrent state of :meth:`LiquidS4.step`: ``x`` ``(B, H, P, N2)`` the states ``s^{(p)}``,
    ``z`` ``(B, H, P-1, N2)`` the chains ``z^{(p)}`` of the last step, complex."""

    x: torch.Tensor
    z: torch.Tensor


class LiquidS4(ConvolutionalLayer):
    """The Liquid-S4 layer: ``forward`` ``(batch, length, d_model)`` → same shape; ``step``
    decodes one token ``(batch, d_model)``. Chapter *Liquid-S4*."""

    def __init__(self, cfg: LiquidS4Config, d_model: int) -> None:
        if cfg.l_max is None:
            raise ValueError(
                "LiquidS4Config.l_max must be set (the kernel length, at least the input "
                "length); Backbone.for_data sets it from the data set"
            )
        super().__init__(cfg, d_model, S4DKernel(cfg.s4d_config(), d_model, 1))

    def system(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``log Ā``, ``Ā``, ``B̄`` and ``C`` ``(H, N2)`` complex."""
        A, B, C, dt = self.kernel.system()
        Ab, Bb = discretize(A, B, dt, self.cfg.discretization, diagonal=True)  # (H N2) each
        log_Ab = dt[:, None] * A if self.cfg.discretization == "zoh" else torch.log(Ab)
        return log_Ab, Ab, Bb, C[0]

    def liquid_kernels(self) -> torch.Tensor:
        """``K^{(p)}`` ``(P, H, l_max)`` (:func:`liquid_kernel`)."""
        log_Ab, _, Bb, C = self.system()
        cfg = self.cfg
        return liquid_kernel(log_Ab, Bb, C, cfg.l_max, cfg.order, cfg.liquid_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``y`` of the same shape."""
        self._check_input(x, 3, "(batch, length, d_model)")
        B_, L, H = x.shape
        if L > self.cfg.l_max:
            raise ValueError(
                f"x has length {L}, longer than the kernel length l_max={self.cfg.l_max}; "
                "build the layer with a larger LiquidS4Config.l_max"
            )
        P = self.cfg.order
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = x.transpose(1, 2).to(self._work_dtype())  # (B H L)
            K = self.liquid_kernels()[..., :L].to(u.dtype)  # (P H L)
            U = correlations(u, P).transpose(0, 1).reshape(B_, P * H, L)  # (B PH L)
            y = fftconv(U, K.reshape(P * H, L)).reshape(B_, P, H, L).sum(1)  # (B H L)
            y = y + self.D.to(u.dtype)[:, None] * u  # (B H L)
            y = self.dropout(self.activation(y)).transpose(1, 2)  # (B L H)
        return self.output(y)  # (B L H)

    def init_state(self, batch: int) -> LiquidState:
        """The zero state for ``batch`` sequences."""
        _checks.positive_int("batch", batch)
        P, N2 = self.cfg.order, self.cfg.d_state // 2
        dtype = self._work_dtype().to_complex()
        x = torch.zeros(batch, self.d_model, P, N2, dtype=dtype, device=self.D.device)
        return LiquidState(x, x[:, :, : P - 1].clone())

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: LiquidState) -> tuple[torch.Tensor, LiquidState]:
        """One step of :func:`liquid_recurrence`: ``x_t`` ``(batch, d_model)`` and the state →
        ``y_t`` ``(batch, d_model)`` and the next state."""
        self._check_step(x_t, state, LiquidState)
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            u = x_t.to(self._work_dtype())  # (B H)
            _, Ab, Bb, C = (t.to(state.x.dtype) for t in self.system())  # (H N2)
            cfg = self.cfg
            y, s, z = liquid_step(
                state.x, state.z, u.to(Ab.dtype), Ab, Bb, C, cfg.order, cfg.liquid_kernel
            )
            y = y + self.D.to(u.dtype) * u  # (B H)
        return self._output(y), LiquidState(s, z)
