"""The S5 layer: one multi-input, multi-output diagonal SSM, run by a parallel scan.

Smith, Warrington & Linderman, "Simplified State Space Layers for Sequence Modeling" (S5),
arXiv:2208.04933v3. Where S4 runs ``H`` single-input SSMs of ``N`` states each, S5 runs one SSM
of ``P`` states that reads and writes all ``H`` channels (Section 3):

    x_k = Λ̄ x_{k-1} + B̄ u_k,    y_k = Re(C̃ x_k) + D ⊙ u_k,    u_k, y_k ∈ ℝ^H, x_k ∈ ℂ^P,

``Λ`` diagonal, ``B̃`` ``(P, H)``, ``C̃`` ``(H, P)``, a step ``Δ`` per state, discretized by ZOH or
bilinear and computed by :func:`ssm.scan.s5_scan` (:func:`ssm.scan.associative_scan`). The layer
around it is the book's (``GELU → dropout → Linear-GLU``, as S4, DSS and S4D), not the S5
authors' GLU variants. Bidirectional, a second ``C̃`` reads the same SSM scanned backwards,
current step included (the authors' code; the book's convolutional layers read strictly later
steps). Initialization (Sections 3–4 and the authors' code):

- ``Λ``: the eigenvalues of HiPPO-N, the normal part ``A + PᵀP`` of HiPPO-LegS
  (:func:`ssm.hippo.nplr`), of size ``P/J`` in each of ``J`` blocks, ``V`` its eigenvectors
  (block diagonal);
- ``B̃ = V⁻¹ B = Vᴴ B`` with ``B`` ``(P, H)`` real Lecun normal (truncated at ±2σ, variance
  ``1/P``, the authors' fan-in); ``C̃ = C V`` with ``C`` ``(H, P)`` complex, real and imaginary
  parts truncated Lecun normal (variance ``1/P``); ``D ~ N(0, 1)``;
- ``log Δ ~ U[log dt_min, log dt_max]``, one per state.

With ``conj_sym`` the ``P/2`` eigenvalues of positive imaginary part are stored (the authors'
code keeps the other half, their conjugates) and the output is ``2 Re(C̃ x_k)``. Chapter *S5*.

Dimension letters: B batch, L length, H channels, P states, Ps stored states, c output maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .. import _checks
from ..hippo import nplr
from ..scan import s5_scan
from ._params import register

__all__ = ["S5", "S5Config", "S5State", "hippo_n_init"]

CLIP = -1e-4  # with clip_eigs, Re Λ ≤ CLIP (the authors' bound)


@dataclass
class S5Config:
    """Settings of an S5 layer; ``build(d_model)`` makes one. Every field is plain JSON."""

    d_state: int = 64  # P, states shared by all channels (P/2 stored with conj_sym)
    blocks: int = 1  # J: the init is J HiPPO-N blocks of size P/J on the diagonal
    discretization: str = "zoh"  # "zoh" or "bilinear"
    dt_min: float = 1e-3  # log Δ at init uniform in [log dt_min, log dt_max], per state
    dt_max: float = 1e-1
    conj_sym: bool = True  # store one eigenvalue of each conjugate pair, output 2 Re(C̃ x)
    clip_eigs: bool = False  # Re Λ clipped to <= -1e-4 (stable for any length)
    bidirectional: bool = False  # a second C̃ reads a backward scan, step k included (no step)
    step_rescale: float = 1.0  # Δ multiplied by this (a change of sampling rate)
    dropout: float = 0.0  # after the GELU, before the GLU output projection

    def __post_init__(self) -> None:
        _checks.positive_int("d_state", self.d_state)
        _checks.positive_int("blocks", self.blocks)
        if self.d_state % self.blocks:
            raise ValueError(
                f"blocks must divide d_state, got d_state={self.d_state}, blocks={self.blocks}"
            )
        if self.conj_sym and (self.d_state // self.blocks) % 2:
            raise ValueError(
                f"d_state / blocks must be even with conj_sym (conjugate pairs per block), got "
                f"{self.d_state} / {self.blocks}"
            )
        _checks.choice("discretization", self.discretization, ("zoh", "bilinear"))
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"dt_min and dt_max must satisfy 0 < dt_min <= dt_max, got {self.dt_min} and "
                f"{self.dt_max}"
            )
        for name in ("conj_sym", "clip_eigs", "bidirectional"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not self.step_rescale > 0:
            raise ValueError(f"step_rescale must be > 0, got {self.step_rescale}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def build(self, d_model: int) -> S5:
        """The S5 layer of width ``d_model`` with these settings."""
        return S5(self, d_model)


def hippo_n_init(P: int, blocks: int, conj_sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``Λ`` ``(Ps,)`` and ``V`` ``(P, Ps)`` complex128: ``blocks`` copies of HiPPO-N of size
    ``P/blocks`` on the diagonal, ``HiPPO-N = V diag(Λ) Vᴴ`` per block (``Ps = P/2`` with
    ``conj_sym``: the eigenvalues of positive imaginary part and their eigenvectors)."""
    size = P // blocks
    w, _, _, V = nplr("legs", size)  # (size) (size size)
    if conj_sym:
        keep = torch.argsort(w.imag)[size // 2 :]  # (size/2) one of each conjugate pair
        if not bool((w.imag[keep] > 0).all()):
            raise RuntimeError(f"HiPPO-N of size {size} has a real eigenvalue; change the size")
        w, V = w[keep], V[:, keep]
    return w.repeat(blocks), torch.block_diag(*[V] * blocks)  # (Ps) (P Ps)


def _lecun_normal(*shape: int, fan_in: int) -> torch.Tensor:
    """Truncated normal on ``±2σ`` with variance ``1/fan_in`` (JAX's ``lecun_normal``), float64."""
    std = fan_in**-0.5 / 0.87962566103423978  # the truncation's std is 0.8796 σ
    out = torch.empty(*shape, dtype=torch.float64)
    return nn.init.trunc_normal_(out, std=std, a=-2 * std, b=2 * std)


class S5State(NamedTuple):
    """Recurrent state of :meth:`S5.step`: ``x`` ``(B, Ps)`` complex."""

    x: torch.Tensor


class S5(nn.Module):
    """The S5 layer: ``forward`` ``(batch, length, d_model)`` → same shape by the parallel scan;
    ``step`` one recurrence step ``(batch, d_model)``. Parameters: ``Lambda_re``, ``Lambda_im``
    ``(Ps,)``, ``B`` ``(Ps, H, 2)``, ``log_dt`` ``(Ps,)`` (SSM parameters), ``C``
    ``(c, H, Ps, 2)`` (complex tensors as real views) and ``D`` ``(H,)``. Chapter *S5*."""

    def __init__(self, cfg: S5Config, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        self.cfg, self.d_model = cfg, d_model
        dtype, P, H = torch.get_default_dtype(), cfg.d_state, d_model
        Lambda, V = hippo_n_init(P, cfg.blocks, cfg.conj_sym)  # (Ps) (P Ps)
        B = V.conj().T @ _lecun_normal(P, H, fan_in=P).to(V.dtype)  # (Ps H): B̃ = V⁻¹ B
        C = torch.complex(*_lecun_normal(2, 2 if cfg.bidirectional else 1, H, P, fan_in=P))
        C = C @ V  # (c H Ps): C̃ = C V
        span = math.log(cfg.dt_max) - math.log(cfg.dt_min)
        log_dt = torch.rand(len(Lambda), dtype=torch.float64) * span + math.log(cfg.dt_min)  # (Ps)
        register(self, "Lambda_re", Lambda.real.to(dtype).contiguous())
        register(self, "Lambda_im", Lambda.imag.to(dtype).contiguous())
        register(self, "B", torch.view_as_real(B).to(dtype).contiguous())
        register(self, "log_dt", log_dt.to(dtype))
        register(self, "C", torch.view_as_real(C).to(dtype).contiguous(), ssm=False)
        self.D = nn.Parameter(torch.randn(H))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Sequential(nn.Linear(H, 2 * H), nn.GLU(dim=-1))

    def _work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.D.dtype, torch.float32)

    def system(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Λ`` ``(Ps,)``, ``B̃`` ``(Ps, H)``, ``C̃`` ``(c, H, Ps)`` complex and ``Δ`` ``(Ps,)``
        (``step_rescale`` applied), in the work dtype."""
        real = self.Lambda_re.clamp(max=CLIP) if self.cfg.clip_eigs else self.Lambda_re
        Lambda = torch.complex(real, self.Lambda_im)  # (Ps)
        B, C = torch.view_as_complex(self.B), torch.view_as_complex(self.C)
        dt = self.cfg.step_rescale * torch.exp(self.log_dt)  # (Ps)
        cplx = self._work_dtype().to_complex()
        return Lambda.to(cplx), B.to(cplx), C.to(cplx), dt.to(cplx.to_real())

    def _steps(self, dt: torch.Tensor, dt_scale: torch.Tensor | None, shape: tuple) -> torch.Tensor:
        """``Δ`` ``(Ps,)``, or ``Δ_k = dt_scale_k Δ`` ``(*shape, Ps)`` per step."""
        if dt_scale is None:
            return dt
        _checks.real("dt_scale", dt_scale, shape, "one factor per step of x")
        _checks.positive_step("dt_scale", dt_scale.detach(), dt)
        return dt_scale.to(dt.dtype)[..., None] * dt  # (*shape Ps)

    def _ssm(self, u: torch.Tensor, dt_scale: torch.Tensor | None, **state) -> tuple:
        """``u`` ``(B, L, H)`` → ``y`` ``(B, L, H)`` and the last state ``(B, Ps)``."""
        Lambda, B, C, dt = self.system()
        dt = self._steps(dt, dt_scale, tuple(u.shape[:2]))  # (Ps) or (B L Ps)
        how = {"method": self.cfg.discretization, "conj_sym": self.cfg.conj_sym}
        y, x = s5_scan(
            Lambda, B, C[0], u, dt, self.D.to(u.dtype), return_state=True, **how, **state
        )
        if self.cfg.bidirectional:
            back = dt.flip(1) if dt.ndim == 3 else dt  # (Ps) or (B L Ps)
            y = y + s5_scan(Lambda, B, C[1], u.flip(1), back, **how).flip(1)  # (B L H)
        return y, x

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)

    def forward(self, x: torch.Tensor, dt_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``y`` of the same shape. ``dt_scale``
        ``(batch, length)`` > 0 multiplies ``Δ`` at each step (irregular sampling: the gap
        before each sample)."""
        self._check_input(x, 3, "(batch, length, d_model)")
        with torch.autocast(device_type=x.device.type, enabled=False):
            y, _ = self._ssm(x.to(self._work_dtype()), dt_scale)  # (B L H)
            y = self.dropout(self.activation(y))  # (B L H)
        return self.output(y)  # (B L H)

    def init_state(self, batch: int) -> S5State:
        """The zero state for ``batch`` sequences."""
        _checks.positive_int("batch", batch)
        if self.cfg.bidirectional:
            raise ValueError(
                "a bidirectional S5 layer has no recurrent step (its second scan reads the "
                "future); build it with bidirectional=False to step"
            )
        Ps, dtype = self.Lambda_re.shape[0], self._work_dtype().to_complex()
        return S5State(torch.zeros(batch, Ps, dtype=dtype, device=self.D.device))

    @torch.no_grad()
    def step(
        self, x_t: torch.Tensor, state: S5State, dt_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, S5State]:
        """One recurrence step: ``x_t`` ``(batch, d_model)`` (and ``dt_scale`` ``(batch,)``) and
        the state → ``y_t`` ``(batch, d_model)`` and the next state."""
        self._check_input(x_t, 2, "(batch, d_model)")
        if not isinstance(state, S5State) or state.x.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"state must be the S5State of init_state({x_t.shape[0]}) (one row per "
                "sequence of x_t)"
            )
        scale = None if dt_scale is None else dt_scale[:, None]  # (B 1)
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            u = x_t.to(self._work_dtype())[:, None]  # (B 1 H)
            y, x = self._ssm(u, scale, x0=state.x)  # (B 1 H) (B Ps)
            y = self.dropout(self.activation(y[:, 0]))  # (B H)
        return self.output(y), S5State(x)
