"""The GSS layer: a DSS convolution at a reduced width, gated multiplicatively.

Mehta, Gupta, Cutkosky & Neyshabur, "Long Range Language Modeling via Gated State Spaces" (GSS),
arXiv:2206.13947v3, Figure 1 (pseudo-code). With ``E = d_model``, ``F = expansion · E`` and
``H = d_ssm`` (``F ≫ H``; the paper's ``E = 1024``, ``F = 4096``, ``H = 256``, ``N = 512``):

    x̂ = LayerNorm(x)                     (B, L, E)
    v = GELU(W_v x̂ + b_v)                (B, L, F)   the gate
    u = GELU(W_u x̂ + b_u)                (B, L, H)   the SSM's input, at the reduced width
    y = DSS(u) = K̄ * u + D u             (B, L, H)   DSS-exp by default (ssm.dss_kernel)
    o = W_o ((W_uc y + b_uc) ⊙ v) + b_o  (B, L, E)

The paper's pseudo-code returns ``o + x``; here the residual is the backbone's
(:class:`ssm.layers.Backbone`), so ``forward`` returns ``o`` and keeps the layer's own
LayerNorm. The DSS part is :class:`ssm.layers.dss.DSSKernel` convolved by :func:`ssm.fftconv`
in float32 (autocast off); decoding runs DSS's recurrent view (:func:`ssm.s4d_step` on
:meth:`DSSKernel.step_system`). Chapter *GSS*.

Dimension letters: B batch, L length, E model width, F gate width, H SSM width, N2 eigenvalues.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import _checks
from ..kernels import DSS_VARIANTS
from ..ops.fftconv import fftconv
from ..ops.s4d_step import s4d_step
from ._diagonal import DIAGONAL_INITS, DiagonalState
from .dss import DSSConfig, DSSKernel

__all__ = ["GSS", "GSSConfig"]


@dataclass
class GSSConfig:
    """Settings of a GSS layer; ``build(d_model)`` makes one. Every field is plain JSON. The
    defaults are the paper's sizes but for ``F``, which is ``4 · d_model`` for any width."""

    d_ssm: int = 256  # H: the width the DSS convolution runs at
    expansion: int = 4  # F = expansion · d_model: the width of the gate
    d_state: int = 512  # N (even): N/2 complex eigenvalues per DSS channel
    l_max: int | None = None  # kernel length; None until Backbone.for_data sets it
    variant: str = "exp"  # DSS kernel: "exp" (DSS-exp) or "softmax"
    init: str = "legs"  # Λ at init: one of DIAGONAL_INITS
    dt_min: float = 1e-3  # log Δ at init uniform in [log dt_min, log dt_max]
    dt_max: float = 1e-1

    def __post_init__(self) -> None:
        _checks.positive_int("d_ssm", self.d_ssm)
        _checks.positive_int("expansion", self.expansion)
        _checks.choice("variant", self.variant, DSS_VARIANTS)
        _checks.choice("init", self.init, DIAGONAL_INITS)
        self.dss_config()  # the DSS checks: d_state even, l_max, dt range

    def dss_config(self) -> DSSConfig:
        """The settings of the DSS kernel inside the layer."""
        return DSSConfig(
            d_state=self.d_state, l_max=self.l_max, variant=self.variant, init=self.init,
            dt_min=self.dt_min, dt_max=self.dt_max,
        )  # fmt: skip

    def build(self, d_model: int) -> GSS:
        """The GSS layer of width ``d_model`` with these settings."""
        return GSS(self, d_model)


class GSS(nn.Module):
    """The GSS layer: ``forward`` ``(batch, length, d_model)`` → same shape (no residual);
    ``step`` decodes one token ``(batch, d_model)``. Chapter *GSS*."""

    def __init__(self, cfg: GSSConfig, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        if cfg.l_max is None:
            raise ValueError(
                "GSSConfig.l_max must be set (the kernel length, at least the input length); "
                "Backbone.for_data sets it from the data set"
            )
        self.cfg, self.d_model = cfg, d_model
        E, F, H = d_model, cfg.expansion * d_model, cfg.d_ssm
        self.norm = nn.LayerNorm(E)
        self.to_v = nn.Linear(E, F)
        self.to_u = nn.Linear(E, H)
        self.kernel = DSSKernel(cfg.dss_config(), H, 1)
        self.D = nn.Parameter(torch.randn(H))
        self.to_uc = nn.Linear(H, F)
        self.output = nn.Linear(F, E)
        self.activation = nn.GELU()

    def _work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.D.dtype, torch.float32)

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)

    def _branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gate ``v`` ``(..., F)`` and the SSM input ``u`` ``(..., H)`` of ``x``
        ``(..., E)``."""
        x = self.norm(x)
        return self.activation(self.to_v(x)), self.activation(self.to_u(x))

    def _gate(self, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``W_o((W_uc y + b_uc) ⊙ v) + b_o``: ``y`` ``(..., H)`` and ``v`` ``(..., F)`` →
        ``(..., E)``."""
        return self.output(self.to_uc(y.to(v.dtype)) * v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``o`` of the same shape."""
        self._check_input(x, 3, "(batch, length, d_model)")
        L = x.shape[1]
        if L > self.cfg.l_max:
            raise ValueError(
                f"x has length {L}, longer than the kernel length l_max={self.cfg.l_max}; "
                "build the layer with a larger GSSConfig.l_max"
            )
        v, u = self._branches(x)  # (B L F) (B L H)
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = u.transpose(1, 2).to(self._work_dtype())  # (B H L)
            K = self.kernel()[0, :, :L].to(u.dtype)  # (H L)
            y = fftconv(u, K, self.D.to(u.dtype)).transpose(1, 2)  # (B L H)
        return self._gate(y, v)  # (B L E)

    def init_state(self, batch: int) -> DiagonalState:
        """The zero DSS state for ``batch`` sequences: ``x`` ``(batch, H, N2)`` complex."""
        _checks.positive_int("batch", batch)
        dtype = self._work_dtype().to_complex()
        N2 = self.cfg.d_state // 2
        x = torch.zeros(batch, self.cfg.d_ssm, N2, dtype=dtype, device=self.D.device)
        return DiagonalState(x, 0)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: DiagonalState) -> tuple[torch.Tensor, DiagonalState]:
        """One step: ``x_t`` ``(batch, d_model)`` and the state → ``o_t`` ``(batch, d_model)``
        and the next state (DSS: ``x_k = Ā x_{k-1} + B̄_k u_k``, ``y_k = 2 Re(C_k x_k) + D u_k``)."""
        self._check_input(x_t, 2, "(batch, d_model)")
        if not isinstance(state, DiagonalState) or state.x.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"state must be the DiagonalState of init_state({x_t.shape[0]}) (one row per "
                "sequence of x_t)"
            )
        v, u = self._branches(x_t)  # (B F) (B H)
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            u = u.to(self._work_dtype())  # (B H)
            Ab, Bb, C = (t.to(state.x.dtype) for t in self.kernel.step_system(state.k))  # (H N2)
            x = state.x.clone()  # (B H N2), advanced in place below
            y = s4d_step(x, u, Ab, Bb, C, self.D.to(u.dtype))  # (B H)
        return self._gate(y, v), DiagonalState(x, state.k + 1)
