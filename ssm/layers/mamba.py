"""The Mamba block: a gated MLP whose inner width runs a selective SSM (S6).

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
arXiv:2312.00752v2, Section 3.4 and Figure 3 (the block), Algorithm 2 (the selective SSM),
eqs. (2a)-(2b) and (4) (the recurrence and its discretization). With ``E = expand · d_model``,
``N = d_state`` and ``R = dt_rank``:

    x, z = split(W_in u)                          (B, L, E) each   (no z without the gate)
    x = SiLU(Conv1d_k(x))                         (B, L, E)        k = d_conv causal taps
    Δ, B, C = split(W_x x)                        (B, L, R), (B, L, N), (B, L, N)
    Δ = softplus(W_Δ Δ + b_Δ)                     (B, L, E)
    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t        (B, E, N)        A = -exp(A_log) (E, N)
    y_t = C_t h_t + D x_t                         (B, L, E)
    o = W_out (y · SiLU(z))                       (B, L, d_model)

as ``mamba_ssm``'s ``Mamba`` module (its ``simple`` path): ``A_log`` the S4D-Real init
``log(1..N)`` per channel, ``D = 1``, ``b_Δ`` such that ``softplus(b_Δ)`` is log-uniform in
``[dt_min, dt_max]`` (floored at ``dt_init_floor``), ``W_Δ`` uniform in ``±R^{-1/2}``. The
scan is :func:`ssm.selective_scan`, decoding :func:`ssm.selective_state_update` with the short
convolution's window (:class:`ssm.layers._short_conv.ShortConv`).

The ``selective`` ablations are those of the paper's Table 7: a parameter that is not selective
is a learned constant as in the paper's Algorithm 1 (the LTI SSM: ``B``, ``C`` ``(E, N)``,
``B = 1`` and ``C`` standard normal at init as S4D's; ``Δ = softplus(b_Δ)`` ``(E,)``), so
``"none"`` is an S4D-Real-like diagonal LTI SSM inside the same block. ``gate=False`` drops
``z`` (the "no gate" architecture of Table 1). Chapter *2023*.

Dimension letters: B batch, L length, M d_model, E inner width, N state size, R rank of Δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks
from ..ops.selective_scan import selective_scan, selective_state_update
from ._params import register
from ._short_conv import ShortConv

__all__ = ["SELECTIVE", "Mamba", "MambaConfig", "MambaState"]

#: Which of Δ, B, C depend on the input: all (S6), only Δ, only B and C, none (LTI).
SELECTIVE = ("all", "delta", "bc", "none")


@dataclass
class MambaConfig:
    """Settings of a Mamba block; ``build(d_model)`` makes one. Every field is plain JSON. The
    defaults are ``mamba_ssm``'s."""

    d_state: int = 16  # N: state size per channel
    d_conv: int = 4  # taps of the short causal convolution
    expand: int = 2  # E = expand · d_model
    dt_rank: int | str = "auto"  # R, the rank of Δ's projection; "auto" is ceil(d_model / 16)
    dt_min: float = 1e-3  # softplus(b_Δ) at init log-uniform in [dt_min, dt_max]
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4  # ... and at least this
    selective: str = "all"  # one of SELECTIVE: which of Δ, B, C depend on the input
    gate: bool = True  # the z branch, y · SiLU(z); False is Table 1's "no gate"
    bias: bool = False  # biases of the input and output projections
    conv_bias: bool = True  # bias of the short convolution

    def __post_init__(self) -> None:
        _checks.positive_int("d_state", self.d_state)
        _checks.positive_int("d_conv", self.d_conv)
        _checks.positive_int("expand", self.expand)
        if self.dt_rank != "auto":
            _checks.positive_int("dt_rank", self.dt_rank)
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"dt_min and dt_max must satisfy 0 < dt_min <= dt_max, got {self.dt_min} and "
                f"{self.dt_max}"
            )
        if not self.dt_init_floor >= 0:
            raise ValueError(f"dt_init_floor must be >= 0, got {self.dt_init_floor}")
        _checks.choice("selective", self.selective, SELECTIVE)
        for name in ("gate", "bias", "conv_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def rank(self, d_model: int) -> int:
        """R: ``dt_rank``, or ``ceil(d_model / 16)`` for ``"auto"``."""
        return math.ceil(d_model / 16) if self.dt_rank == "auto" else self.dt_rank

    def build(self, d_model: int) -> Mamba:
        """The Mamba block of width ``d_model`` with these settings."""
        return Mamba(self, d_model)


@dataclass
class MambaState:
    """Decoding state of a Mamba block: the short convolution's window of past inputs ``conv``
    ``(B, E, d_conv - 1)`` and the SSM state ``ssm`` ``(B, E, N)`` (at least float32)."""

    conv: torch.Tensor
    ssm: torch.Tensor


def _dt_bias(E: int, cfg: MambaConfig) -> torch.Tensor:
    """``b_Δ`` ``(E,)``: the inverse softplus of ``Δ`` log-uniform in ``[dt_min, dt_max]``,
    floored at ``dt_init_floor`` (``mamba_ssm``'s init)."""
    log_dt = torch.rand(E) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min)
    dt = torch.exp(log_dt).clamp(min=cfg.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^{-1}(dt)


class Mamba(nn.Module):
    """The Mamba block: ``forward`` ``(batch, length, d_model)`` → same shape (no residual);
    ``prefill`` also returns the decoding state; ``step`` decodes one token ``(batch,
    d_model)``. Chapter *2023*."""

    def __init__(self, cfg: MambaConfig, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        self.cfg, self.d_model = cfg, d_model
        E, N, R = cfg.expand * d_model, cfg.d_state, cfg.rank(d_model)
        self.d_inner, self.dt_rank = E, R
        self.select_delta = cfg.selective in ("all", "delta")
        self.select_bc = cfg.selective in ("all", "bc")
        self.in_proj = nn.Linear(d_model, (2 if cfg.gate else 1) * E, bias=cfg.bias)
        self.conv = ShortConv(E, cfg.d_conv, bias=cfg.conv_bias)
        width = (R if self.select_delta else 0) + (2 * N if self.select_bc else 0)
        self.x_proj = nn.Linear(E, width, bias=False) if width else None
        self.dt_proj = nn.Linear(R, E, bias=False) if self.select_delta else None
        if self.dt_proj is not None:
            nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
        dtype = torch.get_default_dtype()
        register(self, "dt_bias", _dt_bias(E, cfg).to(dtype))
        A_log = torch.log(torch.arange(1, N + 1, dtype=dtype)).repeat(E, 1)  # (E N) S4D-Real
        register(self, "A_log", A_log)
        register(self, "D", torch.ones(E, dtype=dtype))
        if not self.select_bc:  # Algorithm 1's constant B and C, one row per channel
            register(self, "B", torch.ones(E, N, dtype=dtype))
            register(self, "C", torch.randn(E, N, dtype=dtype), ssm=False)
        self.out_proj = nn.Linear(E, d_model, bias=cfg.bias)

    def _state_dtype(self) -> torch.dtype:
        return torch.promote_types(self.A_log.dtype, torch.float32)

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)

    def _split_in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``(..., M)`` → the SSM branch ``(..., E)`` and the gate ``z`` (or ``None``)."""
        xz = self.in_proj(x)  # (... E) or (... 2E)
        return (xz, None) if not self.cfg.gate else tuple(xz.chunk(2, dim=-1))

    def _selection(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``δ`` (before ``b_Δ`` and softplus) ``(..., E)`` and ``B``, ``C``: ``(..., N)`` when
        selective, else the constants ``(E, N)``; ``x`` ``(..., E)``."""
        parts = None if self.x_proj is None else self.x_proj(x)  # (... R+2N), (... R), (... 2N)
        R, N = self.dt_rank, self.cfg.d_state
        if self.select_delta:
            delta = self.dt_proj(parts[..., :R])  # (... E)
        else:
            delta = torch.zeros_like(x)  # (... E): Δ = softplus(b_Δ), the same at every step
        if not self.select_bc:
            return delta, self.B, self.C  # (E N) each
        r = R if self.select_delta else 0
        return delta, parts[..., r : r + N], parts[..., r + N :]  # (... N) each

    def _as_scan(self, M: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """``B`` or ``C`` in the scan's layout: ``(B, L, N)`` → ``(B, N, L)``, a constant
        ``(E, N)`` → one group per channel ``(B, E, N, L)``."""
        if self.select_bc:
            return M.transpose(1, 2)  # (B N L)
        return M[None, :, :, None].expand(batch, *M.shape, length)  # (B E N L)

    def _mix(self, x: torch.Tensor, return_state: bool):
        """The block on ``x`` ``(B, L, M)``: ``o`` ``(B, L, M)``, and the final state if asked."""
        self._check_input(x, 3, "(batch, length, d_model)")
        batch, length, _ = x.shape
        xs, z = self._split_in(x)  # (B L E) each
        u = F.silu(self.conv(xs))  # (B L E)
        delta, B, C = self._selection(u)
        out = selective_scan(
            u.transpose(1, 2), delta.transpose(1, 2), -torch.exp(self.A_log),
            self._as_scan(B, batch, length), self._as_scan(C, batch, length), self.D,
            None if z is None else z.transpose(1, 2), self.dt_bias,
            delta_softplus=True, return_last_state=return_state,
        )  # fmt: skip
        y, last = out if return_state else (out, None)  # (B E L), (B E N)
        o = self.out_proj(y.transpose(1, 2))  # (B L M)
        if not return_state:
            return o
        k = self.cfg.d_conv - 1
        window = F.pad(xs.transpose(1, 2), (k, 0))[..., length:]  # (B E k): last k inputs
        return o, MambaState(window.to(self.conv.conv.weight.dtype), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``o`` of the same shape."""
        return self._mix(x, return_state=False)

    def step_sizes(self, x: torch.Tensor) -> torch.Tensor:
        """The steps ``Δ_t = softplus(W_Δ (W_x u)_t + b_Δ)`` ``(B, L, E)`` the block's scan uses
        on ``x`` ``(B, L, M)`` (``softplus(b_Δ)`` at every step when ``Δ`` is not selective):
        what the book plots to show the selection at work."""
        self._check_input(x, 3, "(batch, length, d_model)")
        xs, _ = self._split_in(x)  # (B L E)
        delta, _, _ = self._selection(F.silu(self.conv(xs)))  # (B L E)
        return F.softplus(delta + self.dt_bias)  # (B L E)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, MambaState]:
        """``forward(x)`` and the state after its last step, from which ``step`` continues:
        prefill of a prefix then steps equal ``forward`` of the whole."""
        return self._mix(x, return_state=True)

    def init_state(self, batch: int) -> MambaState:
        """The zero state for ``batch`` sequences: the empty window and ``h = 0``."""
        _checks.positive_int("batch", batch)
        shape = (batch, self.d_inner, self.cfg.d_state)
        h = torch.zeros(shape, dtype=self._state_dtype(), device=self.A_log.device)
        return MambaState(self.conv.init_state(batch), h)

    def _check_state(self, state: object, batch: int) -> None:
        if not isinstance(state, MambaState) or state.ssm.shape[0] != batch:
            raise ValueError(
                f"state must be the MambaState of init_state({batch}) or prefill (one row per "
                "sequence of x_t)"
            )

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """One step: ``x_t`` ``(batch, d_model)`` and the state → ``o_t`` ``(batch, d_model)``
        and the next state (the state passed in is left unchanged)."""
        self._check_input(x_t, 2, "(batch, d_model)")
        self._check_state(state, x_t.shape[0])
        batch = x_t.shape[0]
        xs, z = self._split_in(x_t)  # (B E) each
        c, window = self.conv.step(xs, state.conv)  # (B E), (B E k)
        u = F.silu(c)  # (B E)
        delta, B, C = self._selection(u)  # (B E), (B N) or (E N)
        if not self.select_bc:
            B, C = (M.expand(batch, *M.shape) for M in (B, C))  # (B E N): a group per channel
        h = state.ssm.clone()  # (B E N), advanced in place below
        y = selective_state_update(
            h, u, delta, -torch.exp(self.A_log), B, C, self.D, z,
            self.dt_bias, dt_softplus=True,
        )  # fmt: skip
        return self.out_proj(y), MambaState(window, h)  # (B M)
