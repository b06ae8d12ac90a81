"""The Mega layer: a damped EMA, then single-head gated attention.

Ma, Zhou, Kong, He, Gui, Neubig, May & Zettlemoyer, "Mega: Moving Average Equipped Gated
Attention", arXiv:2209.10655v3, Section 3. With ``X`` ``(n, d)`` the layer's input:

    X' = EMA(X)                                  multi-dimensional damped EMA (Section 3.1)
    Z  = SiLU(X' W_z + b_z)                      (n, z), shared by queries and keys
    Q  = κ_q ⊙ Z + μ_q,   K = κ_k ⊙ Z + μ_k      (n, z), per-dimension scale and offset
    V  = SiLU(X W_v + b_v)                       (n, v), from the input, not the EMA
    O  = softmax(Q Kᵀ / √z + b_rel) V            (n, v), causal unless bidirectional
    γ  = SiLU(X' W_γ + b_γ)                      (n, v), reset gate
    φ  = sigmoid(X' W_φ + b_φ)                   (n, d), update gate
    Ĥ  = SiLU(X' W_h + (γ ⊙ O) U_h + b_h)        (n, d), candidate output
    Y  = φ ⊙ Ĥ + (1 - φ) ⊙ X                     (n, d)

The EMA's kernel is :func:`ssm.ema_kernel` (a real diagonal SSM, applied by FFT convolution);
``b_rel`` is a learned bias per relative distance ``j - i`` (the paper's simple relative
positional bias). Mega-chunk (``chunk_size = c``) attends only inside chunks of ``c`` steps,
``O(n c)``, while the EMA still runs over the whole sequence and carries context across chunks.
Decoding (:meth:`Mega.step`) keeps the EMA state and the keys and values of the current chunk.
The authors' code also adds a skip ``ω ⊙ X`` and a SiLU to the EMA's output; this layer keeps the
paper's ``X' = EMA(X)``. In :class:`ssm.layers.Backbone` the layer's input is the normalized
residual stream, and the backbone adds its own residual around ``Y``. Chapter *Mega*.

Dimension letters: B batch, L length, D = d_model, N EMA dimension, Z = z, V = v, c chunk
length, k number of chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks
from ..kernels import ema_kernel, ema_recurrence
from ..ops.fftconv import fftconv
from ..ops.vandermonde import log_eigenvalues, vandermonde_transpose
from ._params import register

__all__ = ["Mega", "MegaConfig", "MegaState"]


@dataclass
class MegaConfig:
    """Settings of a Mega layer; ``build(d_model)`` makes one. Every field is plain JSON."""

    d_state: int = 16  # N, the EMA's expansion dimension (h in the paper)
    d_qk: int = 64  # z, the width of the shared representation Z, of queries and keys
    v_mult: int = 2  # v = v_mult · d_model, the width of values and of the attention output
    l_max: int | None = None  # longest input; None until Backbone.for_data sets it
    chunk_size: int | None = None  # c of Mega-chunk; None attends over the whole sequence
    bidirectional: bool = False  # a second EMA over the later steps, no causal mask
    use_ema: bool = True  # False: X' = X (the ablation without the EMA)
    dropout: float = 0.0  # on the attention output O

    def __post_init__(self) -> None:
        for name in ("d_state", "d_qk", "v_mult"):
            _checks.positive_int(name, getattr(self, name))
        for name in ("l_max", "chunk_size"):
            if getattr(self, name) is not None:
                _checks.positive_int(name, getattr(self, name))
        for name in ("bidirectional", "use_ema"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def build(self, d_model: int) -> Mega:
        """The Mega layer of width ``d_model`` with these settings."""
        return Mega(self, d_model)


class MegaState(NamedTuple):
    """Decoding state: the EMA state ``h`` ``(B, D, N)``, the keys ``(B, t, Z)`` and values
    ``(B, t, V)`` of the current chunk's ``t`` earlier steps, and the position ``k``."""

    h: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    k: int


class Mega(nn.Module):
    """The Mega layer: ``forward`` ``(batch, length, d_model)`` → same shape; ``prefill`` and
    ``step`` decode (causal layers only). EMA parameters (SSM parameters): the logits of ``α``
    and ``δ``, ``β`` and ``η``, each ``(c, D, N)``, ``c = 2`` when bidirectional."""

    def __init__(self, cfg: MegaConfig, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        if cfg.l_max is None:
            raise ValueError(
                "MegaConfig.l_max must be set (the EMA kernel length, at least the input "
                "length); Backbone.for_data sets it from the data set"
            )
        self.cfg, self.d_model = cfg, d_model
        D, N, Z, V = d_model, cfg.d_state, cfg.d_qk, cfg.v_mult * d_model
        c = 2 if cfg.bidirectional else 1
        sign = torch.ones(N)
        sign[1::2] = -1  # β at init: 1, -1, 1, ... plus noise (the authors' code)
        register(self, "alpha_logit", 0.2 * torch.randn(c, D, N))
        register(self, "delta_logit", 0.2 * torch.randn(c, D, N))
        register(self, "beta", sign + 0.02 * torch.randn(c, D, N))
        register(self, "eta", torch.randn(c, D, N) / math.sqrt(N))
        self.proj = nn.Linear(D, Z + V + 2 * D)  # X' → Z, γ, φ, X' W_h
        self.value = nn.Linear(D, V)  # X → V
        self.reset_out = nn.Linear(V, D, bias=False)  # U_h
        self.qk_scale = nn.Parameter(0.02 * torch.randn(2, Z))  # κ_q, κ_k
        self.qk_offset = nn.Parameter(torch.zeros(2, Z))  # μ_q, μ_k
        self.window = cfg.chunk_size or cfg.l_max  # longest span of attention
        self.rel_bias = nn.Parameter(0.02 * torch.randn(2 * self.window - 1))  # b_rel[j - i]
        self.dropout = nn.Dropout(cfg.dropout)

    def _work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.beta.dtype, torch.float32)

    def ema_system(self) -> tuple[torch.Tensor, ...]:
        """``α, δ, β, η`` ``(c, D, N)``, ``α`` and ``δ`` through a sigmoid (in ``(0, 1)``)."""
        return torch.sigmoid(self.alpha_logit), torch.sigmoid(self.delta_logit), self.beta, self.eta

    def _ema(self, x: torch.Tensor) -> torch.Tensor:
        """``X' = EMA(X)``: ``x`` ``(B, L, D)`` → ``(B, L, D)`` in the work dtype. The second,
        bidirectional EMA reads the strictly later steps, ``Σ_{j>l} K₁[j-l] x_j``, so the current
        step is counted once (as in the authors' code)."""
        if not self.cfg.use_ema:
            return x
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = x.transpose(1, 2).to(self._work_dtype())  # (B D L)
            L = u.shape[-1]
            K = [ema_kernel(*p, L) for p in zip(*self.ema_system(), strict=True)]  # c × (D L)
            y = fftconv(u, K[0].to(u.dtype))  # (B D L)
            if self.cfg.bidirectional:
                K1 = F.pad(K[1][:, 1:], (1, 0)).to(u.dtype)  # (D L): no tap at lag 0
                y = y + fftconv(u.flip(-1), K1).flip(-1)  # (B D L): Σ_{j>l} K1[j-l] u_j
        return y.transpose(1, 2)  # (B L D)

    def _gates(self, x: torch.Tensor, xe: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys ``(..., Z)``, values, reset gate ``(..., V)``, update gate and
        ``X' W_h + b_h`` ``(..., D)`` from ``x`` and ``xe = X'`` ``(..., D)``."""
        Z, V, D = self.cfg.d_qk, self.cfg.v_mult * self.d_model, self.d_model
        z, reset, update, hx = self.proj(xe).split([Z, V, D, D], dim=-1)
        z = F.silu(z)  # (... Z)
        q, k = (z.unsqueeze(-2) * self.qk_scale + self.qk_offset).unbind(-2)  # (... Z) each
        v = F.silu(self.value(x))  # (... V)
        return q, k, v, F.silu(reset), torch.sigmoid(update), hx

    def _output(self, x, o, reset, update, hx) -> torch.Tensor:
        """``Y = φ ⊙ SiLU(X' W_h + (γ ⊙ O) U_h + b_h) + (1 - φ) ⊙ X``, ``(..., D)``."""
        h = F.silu(hx + self.reset_out(reset * self.dropout(o)))  # (... D)
        return update * h + (1 - update) * x  # (... D)

    def _attend(self, q, k, v, bias, mask) -> torch.Tensor:
        """``softmax(q kᵀ/√z + bias, masked) v``: ``q`` ``(..., Lq, Z)``, ``k`` ``(..., Lk,
        Z)``, ``v`` ``(..., Lk, V)``, ``bias`` and ``mask`` (True: hidden) ``(..., Lq, Lk)``."""
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.cfg.d_qk) + bias  # (... Lq Lk)
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        weights = torch.softmax(scores.masked_fill(mask, -math.inf), dim=-1)  # (... Lq Lk)
        return weights.to(v.dtype) @ v  # (... Lq V)

    def _bias(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """``b_rel[j - i]`` for positions ``i`` ``(Lq, 1)`` and ``j`` ``(1, Lk)`` in a chunk."""
        return self.rel_bias[j - i + self.window - 1]  # (Lq Lk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``y`` of the same shape."""
        self._check_input(x, 3, "(batch, length, d_model)")
        return self._sequence(x)[0]

    def _sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``y`` ``(B, L, D)``, and the keys ``(B, L, Z)`` and values ``(B, L, V)``."""
        B, L, _ = x.shape
        q, k, v, reset, update, hx = self._gates(x, self._ema(x))
        c = min(self.window, L)
        pad = -L % c
        n = (L + pad) // c
        chunks = (F.pad(t, (0, 0, 0, pad)).reshape(B, n, c, -1) for t in (q, k, v))  # (B k c ·)
        pos = torch.arange(c, device=x.device)  # (c)
        hidden = torch.arange(n * c, device=x.device).reshape(n, 1, c) >= L  # (k 1 c): padding
        if not self.cfg.bidirectional:
            hidden = hidden | (pos[None, :] > pos[:, None])  # (k c c): future steps
        o = self._attend(*chunks, self._bias(pos[:, None], pos[None, :]), hidden)  # (B k c V)
        o = o.reshape(B, n * c, -1)[:, :L]  # (B L V)
        return self._output(x, o, reset, update, hx), k, v  # (B L D), (B L Z), (B L V)

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)
        if ndim == 3 and x.shape[1] > self.cfg.l_max:
            raise ValueError(
                f"x has length {x.shape[1]}, longer than l_max={self.cfg.l_max}; build the "
                "layer with a larger MegaConfig.l_max"
            )

    def _check_causal(self) -> None:
        if self.cfg.bidirectional:
            raise ValueError(
                "a bidirectional Mega layer has no recurrent step (its second EMA and its "
                "attention read the future); build it with bidirectional=False to step"
            )

    def init_state(self, batch: int) -> MegaState:
        """The empty state for ``batch`` sequences."""
        _checks.positive_int("batch", batch)
        self._check_causal()
        like = dict(dtype=self._work_dtype(), device=self.beta.device)
        h = torch.zeros(batch, self.d_model, self.cfg.d_state, **like)  # (B D N)
        keys = torch.zeros(batch, 0, self.cfg.d_qk, **like)  # (B 0 Z)
        return MegaState(h, keys, torch.zeros(batch, 0, self.cfg.v_mult * self.d_model, **like), 0)

    @torch.no_grad()
    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, MegaState]:
        """``forward`` on a prompt ``x`` ``(batch, length, d_model)``, and the state after it:
        the EMA state ``h_{L-1} = Σ_l φ^l ⊙ α ⊙ β x_{L-1-l}`` (a transposed Vandermonde product)
        and the keys and values of the last, unfinished chunk."""
        self._check_causal()
        self._check_input(x, 3, "(batch, length, d_model)")
        y, k, v = self._sequence(x)  # (B L D), (B L Z), (B L V)
        L = x.shape[1]
        alpha, delta, beta, _ = (p[0] for p in self.ema_system())  # (D N) each
        phi = (1 - alpha * delta).to(self._work_dtype().to_complex())  # (D N)
        u = x.transpose(1, 2).flip(-1).to(self._work_dtype())  # (B D L), reversed in time
        h = (alpha * beta) * vandermonde_transpose(u, log_eigenvalues(phi)).real  # (B D N)
        start = L - (L % self.window or self.window) if self.cfg.chunk_size else 0
        k, v = k[:, start:].to(h.dtype), v[:, start:].to(h.dtype)  # (B t Z), (B t V)
        return y, MegaState(h.to(self._work_dtype()), k, v, L)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: MegaState) -> tuple[torch.Tensor, MegaState]:
        """One step: ``x_t`` ``(batch, d_model)`` and the state → ``y_t`` ``(batch, d_model)``
        and the next state. Inference only (no gradient)."""
        self._check_input(x_t, 2, "(batch, d_model)")
        if not isinstance(state, MegaState) or state.h.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"state must be the MegaState of init_state({x_t.shape[0]}) or prefill (one row "
                "per sequence of x_t)"
            )
        if state.k >= self.cfg.l_max:
            raise ValueError(f"the layer has taken l_max={self.cfg.l_max} steps already")
        h, xe = state.h, x_t
        if self.cfg.use_ema:
            params = (p[0] for p in self.ema_system())  # (D N) each
            u = x_t.to(h.dtype)[..., None]  # (B D 1)
            xe, h = ema_recurrence(*params, u, h, return_state=True)  # (B D 1), (B D N)
            xe = xe[..., 0]  # (B D)
        q, k, v, reset, update, hx = self._gates(x_t, xe)  # (B Z), (B Z), (B V), ...
        keys, values = state.keys, state.values
        if self.cfg.chunk_size and state.k % self.window == 0:
            keys, values = keys[:, :0], values[:, :0]  # a new chunk starts
        keys = torch.cat([keys, k[:, None].to(keys.dtype)], 1)  # (B t Z)
        values = torch.cat([values, v[:, None].to(values.dtype)], 1)  # (B t V)
        t = keys.shape[1]
        pos = torch.arange(t, device=x_t.device)  # (t)
        bias = self._bias(pos[-1:, None], pos[None, :])  # (1 t)
        hidden = torch.zeros(1, t, dtype=torch.bool, device=x_t.device)  # (1 t)
        o = self._attend(q[:, None].to(keys.dtype), keys, values, bias, hidden)[:, 0]  # (B V)
        return self._output(x_t, o, reset, update, hx), MegaState(h, keys, values, state.k + 1)
