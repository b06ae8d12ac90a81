"""The H3 layer: a shift SSM and a diagonal SSM around a multiplicative key-value interaction.

Fu, Dao, Saab, Thomas, Rudra & Ré, "Hungry Hungry Hippos: Towards Language Modeling with State
Space Models" (H3), arXiv:2212.14052v3, Section 3.1 and Algorithm 1. With ``D = d_model``
split into ``heads = D / head_dim`` heads of ``d = head_dim`` channels:

    Q, K, V = x W_Q, x W_K, x W_V                       (B, L, D) each
    K̃ = SSM_shift(K)                                    (B, L, D)
    KV_h = K̃_h V_hᵀ  per position                       (B, L, heads, d, d)
    Y_h = SSM_diag(KV_h) = K̄_h * KV_h + D_h KV_h        (B, L, heads, d, d)
    O_h = Q_hᵀ Y_h                                      (B, L, heads, d)
    o = concat_h(O_h) W_O                               (B, L, D)

With ``head_dim = 1`` it is the paper's ``Q ⊙ SSM_diag(SSM_shift(K) ⊙ V)``.

The shift SSM is the discrete system ``x_t = A x_{t-1} + B u_t``, ``y_t = C x_t + D u_t`` of
state size ``N`` with ``A`` the shift matrix (ones below the diagonal) and ``B = e_1``: the state
is the window ``x_t = (u_t, u_{t-1}, …, u_{t-N+1})``, so ``y_t = Σ_{j<N} C_j u_{t-j} + D u_t``,
an FIR filter of ``N`` taps (``D`` only adds to the first). It is therefore exactly
:class:`ssm.layers._short_conv.ShortConv` with ``d_shift = N`` taps and no bias, whose
decoding window of the last ``N - 1`` inputs is that state less its newest entry.

The diagonal SSM is S4D (:class:`ssm.layers.s4d.S4DKernel`, ZOH), convolved by
:func:`ssm.fftconv` in float32 (float64 for a float64 layer) with autocast off, and decoded
through :func:`ssm.s4d_step`. As in the paper's code, each head has one diagonal SSM (kernel
and skip ``D_h``) shared by its ``d²`` channels of ``K̃_h V_hᵀ``: ``heads`` kernels in all, not
``heads · d²``. Chapter *2023*.

Dimension letters: B batch, L length, D model width, h heads, d head_dim, N2 eigenvalues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .. import _checks
from ..ops.fftconv import fftconv
from ..ops.s4d_step import s4d_step
from ._conv import check_config
from ._short_conv import ShortConv
from .s4d import S4DConfig, S4DKernel

__all__ = ["H3", "H3Config", "H3State"]


@dataclass
class H3Config:
    """Settings of an H3 layer; ``build(d_model)`` makes one. Every field is plain JSON. The
    defaults are the paper's but for ``d_shift`` (its code gives the shift SSM ``d_state``
    taps; a few suffice for the shifts the layer learns)."""

    d_state: int = 64  # N (even) of the diagonal SSM: N/2 complex eigenvalues per head
    head_dim: int = 1  # d: channels per head; d_model must be a multiple of it
    d_shift: int = 4  # taps of the shift SSM (its state size)
    l_max: int | None = None  # kernel length; None until Backbone.for_data sets it
    init: str = "inv"  # the diagonal SSM's S4D init: "inv" (S4D-Inv) or "lin" (S4D-Lin)
    dt_min: float = 1e-3  # log Δ at init uniform in [log dt_min, log dt_max]
    dt_max: float = 1e-1
    dropout: float = 0.0  # on the heads' output, before W_O

    def __post_init__(self) -> None:
        check_config(self)
        _checks.positive_int("head_dim", self.head_dim)
        _checks.positive_int("d_shift", self.d_shift)
        _checks.choice("init", self.init, ("inv", "lin"))

    def s4d_config(self) -> S4DConfig:
        """The settings of the diagonal SSM's kernel."""
        return S4DConfig(
            d_state=self.d_state, l_max=self.l_max, init=self.init,
            dt_min=self.dt_min, dt_max=self.dt_max,
        )  # fmt: skip

    def build(self, d_model: int) -> H3:
        """The H3 layer of width ``d_model`` with these settings."""
        return H3(self, d_model)


class H3State(NamedTuple):
    """Recurrent state of :meth:`H3.step`: ``window`` ``(B, D, d_shift - 1)``, the shift SSM's
    last inputs, and ``x`` ``(B·d·d, heads, N2)`` complex, the diagonal SSMs' states."""

    window: torch.Tensor
    x: torch.Tensor


class H3(nn.Module):
    """The H3 layer: ``forward`` ``(batch, length, d_model)`` → same shape (no residual);
    ``step`` decodes one token ``(batch, d_model)``. Chapter *2023*."""

    def __init__(self, cfg: H3Config, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        if d_model % cfg.head_dim:
            raise ValueError(
                f"d_model must be a multiple of head_dim={cfg.head_dim}, got {d_model}"
            )
        if cfg.l_max is None:
            raise ValueError(
                "H3Config.l_max must be set (the kernel length, at least the input length); "
                "Backbone.for_data sets it from the data set"
            )
        self.cfg, self.d_model = cfg, d_model
        self.heads = d_model // cfg.head_dim
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.shift = ShortConv(d_model, cfg.d_shift, bias=False)
        self.kernel = S4DKernel(cfg.s4d_config(), self.heads, 1)
        self.D = nn.Parameter(torch.randn(self.heads))
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(d_model, d_model)

    def _work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.D.dtype, torch.float32)

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self._work_dtype()).unflatten(-1, (self.heads, self.cfg.head_dim))  # (… h d)

    def _outer(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``K̃_h V_hᵀ``: ``(…, D)`` each → ``(…, h, d, d)``, ``[…, h, i, j] = k_{h,i} v_{h,j}``."""
        return self._heads(k).unsqueeze(-1) * self._heads(v).unsqueeze(-2)  # (… h d d)

    def _read(self, q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``Q_hᵀ Y_h`` per head, heads concatenated, dropout, ``W_O``: ``q`` ``(…, D)`` and
        ``y`` ``(…, h, d, d)`` → ``(…, D)``."""
        o = (self._heads(q).unsqueeze(-1) * y).sum(-2).flatten(-2)  # (… D)
        return self.output(self.dropout(o).to(q.dtype))  # (… D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``o`` of the same shape."""
        self._check_input(x, 3, "(batch, length, d_model)")
        Bsz, L, _ = x.shape
        if L > self.cfg.l_max:
            raise ValueError(
                f"x has length {L}, longer than the kernel length l_max={self.cfg.l_max}; "
                "build the layer with a larger H3Config.l_max"
            )
        q, k, v = self.q_proj(x), self.shift(self.k_proj(x)), self.v_proj(x)  # (B L D) each
        d, h = self.cfg.head_dim, self.heads
        with torch.autocast(device_type=x.device.type, enabled=False):
            kv = self._outer(k, v).permute(0, 3, 4, 2, 1).reshape(-1, h, L)  # (Bdd h L)
            K = self.kernel()[0, :, :L].to(kv.dtype)  # (h L)
            y = fftconv(kv, K, self.D.to(kv.dtype))  # (Bdd h L)
            y = y.reshape(Bsz, d, d, h, L).permute(0, 4, 3, 1, 2)  # (B L h d d)
        return self._read(q, y)  # (B L D)

    def init_state(self, batch: int) -> H3State:
        """The zero state for ``batch`` sequences."""
        _checks.positive_int("batch", batch)
        d, N2 = self.cfg.head_dim, self.cfg.d_state // 2
        dtype = self._work_dtype().to_complex()
        x = torch.zeros(batch * d * d, self.heads, N2, dtype=dtype, device=self.D.device)
        return H3State(self.shift.init_state(batch), x)

    def _check_state(self, x_t: torch.Tensor, state: object) -> None:
        d, batch = self.cfg.head_dim, x_t.shape[0]
        if not isinstance(state, H3State) or state.x.shape[0] != batch * d * d:
            raise ValueError(
                f"state must be the H3State of init_state({batch}) (one row per sequence of x_t)"
            )

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: H3State) -> tuple[torch.Tensor, H3State]:
        """One step: ``x_t`` ``(batch, d_model)`` and the state → ``o_t`` ``(batch, d_model)``
        and the next state (the shift SSM's window, then the diagonal SSM's recurrence
        ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = 2 Re(C x_k) + D u_k`` on ``u = K̃ V ᵀ``)."""
        self._check_input(x_t, 2, "(batch, d_model)")
        self._check_state(x_t, state)
        Bsz, d, h = x_t.shape[0], self.cfg.head_dim, self.heads
        k, window = self.shift.step(self.k_proj(x_t), state.window)  # (B D)
        q, v = self.q_proj(x_t), self.v_proj(x_t)  # (B D) each
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            kv = self._outer(k, v).permute(0, 2, 3, 1).reshape(-1, h)  # (Bdd h)
            Ab, Bb, C = (t.to(state.x.dtype) for t in self.kernel.step_system(0))  # (h N2)
            x = state.x.clone()  # (Bdd h N2), advanced in place below
            y = s4d_step(x, kv, Ab, Bb, C, self.D.to(kv.dtype))  # (Bdd h)
            y = y.reshape(Bsz, d, d, h).permute(0, 3, 1, 2)  # (B h d d)
        return self._read(q, y), H3State(window, x)
