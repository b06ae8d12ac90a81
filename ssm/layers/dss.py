"""The DSS layer: S4's layer with a diagonal state matrix and DSS's two kernels.

Gupta, Gu & Berant, "Diagonal State Spaces are as Effective as Structured State Spaces" (DSS),
arXiv:2203.14343v3. Each of the ``H`` channels has ``N2 = N/2`` complex eigenvalues ``Λ``, weights
``W`` and a step ``Δ``; its kernel is :func:`ssm.dss_kernel`:

- ``exp`` (DSS-exp): ``Λ = -exp(Λ_re) + i Λ_im`` (left half-plane),
  ``K = W̃ · Λ⁻¹ (e^{ΛΔ} - I) · elementwise-exp(P)``;
- ``softmax`` (DSS-softmax): ``Λ = Λ_re + i Λ_im`` unconstrained,
  ``K = W · Λ⁻¹ · row-softmax(P)``, ``P_{i,k} = λ_i k Δ``.

Initialization (DSS §3.4): ``Λ`` from the eigenvalues of the normal part of HiPPO-LegS, ``W``
with standard normal real and imaginary parts, ``log Δ`` uniform in ``[log 1e-3, log 1e-1]``.
The rest of the layer is S4's (:class:`ssm.layers._conv.ConvolutionalLayer`); decoding runs
the recurrent view of :func:`ssm.scan.dss_step_system`. Chapter *DSS*.

Dimension letters: B batch, L length, H channels, N2 stored eigenvalues, c kernels per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import _checks
from ..kernels import DSS_VARIANTS, dss_kernel
from ..scan import dss_step_system
from ._conv import check_config
from ._diagonal import DIAGONAL_INITS, DiagonalLayer, diagonal_init
from ._params import register
from .s4 import _log_dt

__all__ = ["DSS", "DSSConfig", "DSSKernel"]


@dataclass
class DSSConfig:
    """Settings of a DSS layer; ``build(d_model)`` makes one. Every field is plain JSON."""

    d_state: int = 64  # N (even): N/2 complex eigenvalues per channel
    l_max: int | None = None  # kernel length; None until Backbone.for_data sets it
    variant: str = "exp"  # "exp" (DSS-exp) or "softmax" (DSS-softmax)
    init: str = "legs"  # Λ at init: one of DIAGONAL_INITS (DSS uses "legs")
    dt_min: float = 1e-3  # log Δ at init uniform in [log dt_min, log dt_max]
    dt_max: float = 1e-1
    bidirectional: bool = False  # a second kernel run backwards over the sequence (no step)
    dropout: float = 0.0  # after the GELU, before the GLU output projection

    def __post_init__(self) -> None:
        check_config(self)
        _checks.choice("variant", self.variant, DSS_VARIANTS)
        _checks.choice("init", self.init, DIAGONAL_INITS)

    def build(self, d_model: int) -> DSS:
        """The DSS layer of width ``d_model`` with these settings."""
        return DSS(self, d_model)


class DSSKernel(nn.Module):
    """``H`` DSS kernels ``(c, H, L)``. Parameters: ``Lambda_re`` (``log(-Re Λ)`` for ``exp``,
    ``Re Λ`` for ``softmax``) and ``Lambda_im`` ``(H, N2)``, ``log_dt`` ``(H,)`` (SSM parameters);
    ``W`` ``(c, H, N2, 2)`` (complex as a real view)."""

    def __init__(self, cfg: DSSConfig, H: int, channels: int) -> None:
        super().__init__()
        self.L, self.variant = cfg.l_max, cfg.variant
        dtype = torch.get_default_dtype()
        Lambda, _ = diagonal_init(cfg.init, cfg.d_state, H)  # (H N2)
        real = torch.log(-Lambda.real) if cfg.variant == "exp" else Lambda.real
        register(self, "Lambda_re", real.to(dtype).contiguous())
        register(self, "Lambda_im", Lambda.imag.to(dtype).contiguous())
        register(self, "log_dt", _log_dt(H, cfg.dt_min, cfg.dt_max))
        W = torch.randn(channels, H, cfg.d_state // 2, 2)  # real and imaginary parts N(0, 1)
        register(self, "W", W, ssm=False)

    def system(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Λ`` ``(H, N2)``, ``W`` ``(c, H, N2)`` complex and ``Δ`` ``(H,)``."""
        real = -torch.exp(self.Lambda_re) if self.variant == "exp" else self.Lambda_re
        return (
            torch.complex(real, self.Lambda_im),
            torch.view_as_complex(self.W),
            torch.exp(self.log_dt),
        )

    def forward(self) -> torch.Tensor:
        """The kernels ``(c, H, L)`` (:func:`ssm.dss_kernel`, one call for all ``c``)."""
        Lambda, W, dt = self.system()
        c, H, N2 = W.shape
        K = dss_kernel(
            Lambda.repeat(c, 1), W.reshape(c * H, N2), dt.repeat(c), self.L, self.variant
        )
        return K.reshape(c, H, self.L)

    def step_system(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Ā, B̄_k, C_k)`` ``(H, N2)`` of step ``k`` (:func:`ssm.scan.dss_step_system`)."""
        Lambda, W, dt = self.system()
        return dss_step_system(Lambda, W[0], dt, self.L, k, self.variant)


class DSS(DiagonalLayer):
    """The DSS layer: ``forward`` ``(batch, length, d_model)`` → same shape; ``step`` decodes
    one token ``(batch, d_model)`` (softmax: up to ``l_max`` steps, the length its kernel is
    normalized over). Chapter *DSS*."""

    def __init__(self, cfg: DSSConfig, d_model: int) -> None:
        super().__init__(cfg, d_model, DSSKernel(cfg, d_model, 2 if cfg.bidirectional else 1))
