"""The S4D layer: a diagonal S4 whose kernel is a Vandermonde product.

Gu, Gupta, Goel & Ré, "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D), arXiv:2206.11893v2. Per channel, ``N2 = N/2`` complex eigenvalues
``A = -f(A_re) + i A_im`` (``f = exp`` by default; ``relu``, or ``none`` for an unconstrained
real part), ``B`` (``1`` at init, trained or frozen), ``C`` (standard complex normal) and a
step ``Δ``; the kernel (:func:`ssm.s4d_kernel`) is

    K_l = 2 Re( Σ_n C_n B̄_n Ā_n^l ) = 2 Re( (B̄ ∘ C) · V_L(Ā) ),

``(Ā, B̄)`` by ZOH or bilinear discretization. The ``softmax`` kernel of the paper's ablation is
DSS's (:func:`ssm.dss_kernel` with ``W = C ∘ B``, ZOH only). Initializations S4D-LegS, S4D-Inv,
S4D-Lin and the paper's variants (:func:`ssm.layers._diagonal.diagonal_init`). Decoding by
:func:`ssm.s4d_step`. Chapter *S4D*.

Dimension letters: B batch, L length, H channels, N2 stored eigenvalues, c kernels per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import _checks
from ..discretize import discretize
from ..kernels import dss_kernel, s4d_kernel
from ..scan import dss_step_system
from ._conv import check_config
from ._diagonal import DIAGONAL_INITS, DiagonalLayer, diagonal_init
from ._params import register
from .s4 import _log_dt

__all__ = ["REAL_TRANSFORMS", "S4D", "S4DConfig", "S4DKernel"]

#: How the real part of ``A`` is kept: ``Re A = -exp(p)``, ``-relu(p)`` or ``p`` (none).
REAL_TRANSFORMS = ("exp", "relu", "none")
KERNELS = ("vandermonde", "softmax")


@dataclass
class S4DConfig:
    """Settings of an S4D layer; ``build(d_model)`` makes one. Every field is plain JSON.

    The defaults are S4D-Inv with ZOH and trained ``B``; the other fields are the arms of the
    S4D paper's ablations (Section 5, Tables 2 and 3).
    """

    d_state: int = 64  # N (even): N/2 complex eigenvalues per channel
    l_max: int | None = None  # kernel length; None until Backbone.for_data sets it
    init: str = "inv"  # "legs" (S4D-LegS), "inv" (S4D-Inv) or "lin" (S4D-Lin)
    imag_scale: float = 1.0  # the imaginary parts of the init multiplied by this
    random_real: bool = False  # Re A ~ -U(0, 1) instead of -1/2
    random_imag: bool = False  # Im A ~ U[0, N/2) instead of the init's
    real_transform: str = "exp"  # one of REAL_TRANSFORMS
    train_A: bool = True  # False keeps A as buffers
    train_B: bool = True  # False keeps B at its init (1, or LegS's B)
    discretization: str = "zoh"  # "zoh" or "bilinear"
    kernel: str = "vandermonde"  # "vandermonde" (S4D) or "softmax" (DSS's, ZOH only)
    dt_min: float = 1e-3  # log Δ at init uniform in [log dt_min, log dt_max]
    dt_max: float = 1e-1
    bidirectional: bool = False  # a second kernel run backwards over the sequence (no step)
    dropout: float = 0.0  # after the GELU, before the GLU output projection

    def __post_init__(self) -> None:
        check_config(self)
        _checks.choice("init", self.init, DIAGONAL_INITS)
        _checks.choice("real_transform", self.real_transform, REAL_TRANSFORMS)
        _checks.choice("discretization", self.discretization, ("zoh", "bilinear"))
        _checks.choice("kernel", self.kernel, KERNELS)
        if self.kernel == "softmax" and self.discretization != "zoh":
            raise ValueError(
                "kernel 'softmax' (DSS's) is defined for discretization 'zoh' only, got "
                f"{self.discretization!r}"
            )
        if not self.imag_scale > 0:
            raise ValueError(f"imag_scale must be > 0, got {self.imag_scale}")

    def build(self, d_model: int) -> S4D:
        """The S4D layer of width ``d_model`` with these settings."""
        return S4D(self, d_model)


class S4DKernel(nn.Module):
    """``H`` S4D kernels ``(c, H, L)``. Parameters: ``A_re`` (``log(-Re A)`` for ``exp``,
    ``-Re A`` for ``relu``, ``Re A`` for ``none``) and ``A_im`` ``(H, N2)``, ``B`` ``(H, N2, 2)``
    and ``log_dt`` ``(H,)`` (SSM parameters; ``A`` and ``B`` buffers when frozen), ``C``
    ``(c, H, N2, 2)`` (complex tensors as real views)."""

    def __init__(self, cfg: S4DConfig, H: int, channels: int) -> None:
        super().__init__()
        self.cfg, self.L = cfg, cfg.l_max
        dtype = torch.get_default_dtype()
        A, B = diagonal_init(
            cfg.init, cfg.d_state, H, imag_scale=cfg.imag_scale,
            random_real=cfg.random_real, random_imag=cfg.random_imag,
        )  # fmt: skip
        real = {"exp": torch.log(-A.real), "relu": -A.real, "none": A.real}[cfg.real_transform]
        register(self, "A_re", real.to(dtype).contiguous(), trainable=cfg.train_A)
        register(self, "A_im", A.imag.to(dtype).contiguous(), trainable=cfg.train_A)
        B = torch.view_as_real(B.to(dtype.to_complex())).clone()
        register(self, "B", B, trainable=cfg.train_B)
        register(self, "log_dt", _log_dt(H, cfg.dt_min, cfg.dt_max))
        C = torch.randn(channels, H, cfg.d_state // 2, dtype=dtype.to_complex())
        register(self, "C", torch.view_as_real(C), ssm=False)

    def system(self) -> tuple[torch.Tensor, ...]:
        """``A``, ``B`` ``(H, N2)``, ``C`` ``(c, H, N2)`` complex and ``Δ`` ``(H,)``."""
        p = self.A_re
        real = {"exp": lambda: -torch.exp(p), "relu": lambda: -torch.relu(p), "none": lambda: p}
        A = torch.complex(real[self.cfg.real_transform](), self.A_im)
        B, C = torch.view_as_complex(self.B), torch.view_as_complex(self.C)
        return A, B, C, torch.exp(self.log_dt)

    def forward(self) -> torch.Tensor:
        """The kernels ``(c, H, L)``: :func:`ssm.s4d_kernel`, or :func:`ssm.dss_kernel`
        (softmax)."""
        A, B, C, dt = self.system()
        c, H, N2 = C.shape
        if self.cfg.kernel == "softmax":
            W = (C * B).reshape(c * H, N2)  # (cH N2)
            K = dss_kernel(A.repeat(c, 1), W, dt.repeat(c), self.L, "softmax")  # (cH L)
            return K.reshape(c, H, self.L)
        A, B = A.expand(c, H, N2), B.expand(c, H, N2)  # (c H N2)
        return s4d_kernel(A, B, C, dt.expand(c, H), self.L, self.cfg.discretization)

    def step_system(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Ā, B̄_k, C_k)`` ``(H, N2)`` of step ``k`` (constant but for the softmax kernel)."""
        A, B, C, dt = self.system()
        if self.cfg.kernel == "softmax":
            return dss_step_system(A, C[0] * B, dt, self.L, k, "softmax")
        Ab, Bb = discretize(A, B, dt, self.cfg.discretization, diagonal=True)  # (H N2) each
        return Ab, Bb, C[0]


class S4D(DiagonalLayer):
    """The S4D layer: ``forward`` ``(batch, length, d_model)`` → same shape; ``step`` decodes
    one token ``(batch, d_model)`` through :func:`ssm.s4d_step`. Chapter *S4D*."""

    def __init__(self, cfg: S4DConfig, d_model: int) -> None:
        super().__init__(cfg, d_model, S4DKernel(cfg, d_model, 2 if cfg.bidirectional else 1))
