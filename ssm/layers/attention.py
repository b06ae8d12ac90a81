"""Causal multi-head self-attention, the Transformer baseline of the 2023 layers.

Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser & Polosukhin, "Attention Is All You
Need", arXiv:1706.03762v7, Eq. 1 and Section 3.2.2. With ``x`` ``(L, D)`` the layer's input,
``n = D / d`` heads of ``d = head_dim`` channels:

    [Q | K | V] = x W_qkv                  (L, 3D), no bias, each split into n heads (L, d)
    Q, K ← R_Θ Q, R_Θ K                    positions "rope" only: each row rotated by its position
    O_h = softmax(Q_h K_hᵀ / √d + M) V_h   (L, d), M_ij = -∞ for j > i (causal)
    y   = [O_1 | … | O_n] W_o + b_o        (L, D)

computed by ``torch.nn.functional.scaled_dot_product_attention`` (the plain formula in float64
is :func:`attention_reference`). Positions:

- ``"rope"``: the rotary embedding of Su, Lu, Pan, Murtadha, Wen & Liu, "RoFormer",
  arXiv:2104.09864v5, Eq. 34 (:func:`rope`), base 10000, on queries and keys: their inner
  product depends on the positions only through ``m - n``;
- ``"absolute"``: the sinusoidal encoding of Vaswani et al. (Section 3.5,
  :func:`sinusoidal_encoding`) added to the layer's input before the projections. The paper adds
  it once to the embeddings; in :class:`ssm.layers.Backbone` every attention layer adds it to
  its own (normalized) input, so a model of these layers sees absolute positions without a
  change to the backbone. It is defined at every position, past any training length;
- ``"none"``: no position information (NoPE): the causal mask alone tells the steps apart.

Decoding (:meth:`Attention.step`) keeps a KV cache, the keys and values of every step so far.
Chapter *2023*. Dimension letters: B batch, L length, D = d_model, H heads, d head_dim,
t steps decoded so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks

__all__ = [
    "POSITIONS",
    "Attention",
    "AttentionConfig",
    "KVCache",
    "attention_reference",
    "rope",
    "sinusoidal_encoding",
]

#: How the layer knows where a step is: rotary queries and keys, an added sinusoid, or not at all.
POSITIONS = ("rope", "absolute", "none")
BASE = 10000.0  # the wavelength base of both RoPE (RoFormer Eq. 15) and the sinusoids


@dataclass
class AttentionConfig:
    """Settings of a causal attention layer; ``build(d_model)`` makes one. Every field is plain
    JSON."""

    head_dim: int = 16  # d, channels per head; d_model must be a multiple of it
    positions: str = "rope"  # one of POSITIONS
    dropout: float = 0.0  # on the attention weights, in training only

    def __post_init__(self) -> None:
        _checks.positive_int("head_dim", self.head_dim)
        _checks.choice("positions", self.positions, POSITIONS)
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(
                f"head_dim must be even for positions='rope' (RoPE rotates pairs of channels), "
                f"got {self.head_dim}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def build(self, d_model: int) -> Attention:
        """The attention layer of width ``d_model`` with these settings."""
        return Attention(self, d_model)


def _positions(name: str, positions: object, length: int | None = None) -> torch.Tensor:
    """``positions`` is a real 1-D tensor, of ``length`` entries when given."""
    if not isinstance(positions, torch.Tensor) or positions.is_complex() or positions.ndim != 1:
        raise ValueError(f"{name} must be a real 1-D tensor (L,), got {positions!r:.80}")
    if length is not None and positions.shape[0] != length:
        raise ValueError(
            f"{name} must have one entry per step ({length}), got shape {tuple(positions.shape)}"
        )
    return positions


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = BASE) -> torch.Tensor:
    """Rotary position embedding (RoFormer, arXiv:2104.09864v5, Eq. 34): ``R_{Θ,m} x``.

    Channel pairs ``(x_{2i}, x_{2i+1})``, ``i = 0 … d/2 - 1``, of the row at position ``m`` are
    turned by the angle ``m θ_i``, ``θ_i = base^{-2i/d}`` (Eq. 15, counting ``i`` from 0):

        (R x)_{2i}   = x_{2i} cos mθ_i - x_{2i+1} sin mθ_i
        (R x)_{2i+1} = x_{2i} sin mθ_i + x_{2i+1} cos mθ_i

    Args:
        x: ``(..., L, d)``, ``d`` even, real.
        positions: ``(L,)``, the position ``m`` of each row (any real numbers).
        base: the wavelength base, 10000 in the paper.

    Returns ``(..., L, d)`` in ``x``'s dtype (the angles are computed in float64).
    """
    x = _checks.tensor("x", x, complex_ok=False)
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must have shape (..., L, d) with d even, got {tuple(x.shape)}")
    positions = _positions("positions", positions, x.shape[-2])
    d = x.shape[-1]
    work = torch.promote_types(x.dtype, torch.float32)
    i = torch.arange(d // 2, dtype=torch.float64, device=x.device)  # (d/2)
    theta = base ** (-2 * i / d)  # (d/2)
    angle = positions.to(torch.float64)[:, None] * theta  # (L d/2), m θ_i
    cos, sin = angle.cos().to(work), angle.sin().to(work)  # (L d/2) each
    x_even, x_odd = x[..., 0::2].to(work), x[..., 1::2].to(work)  # (... L d/2) each
    y_even = x_even * cos - x_odd * sin  # (... L d/2)
    y_odd = x_even * sin + x_odd * cos  # (... L d/2)
    return torch.stack([y_even, y_odd], -1).flatten(-2).to(x.dtype)  # (... L d), pairs interleaved


def sinusoidal_encoding(positions: torch.Tensor, d_model: int, base: float = BASE) -> torch.Tensor:
    """The sinusoidal position encoding of Vaswani et al. (arXiv:1706.03762v7, Section 3.5):

        PE(pos, 2i) = sin(pos / base^{2i/D}),   PE(pos, 2i+1) = cos(pos / base^{2i/D}).

    ``positions`` ``(L,)`` (any real numbers, so any length) → ``(L, D)`` float64 (an odd ``D``
    ends with a sine).
    """
    _checks.positive_int("d_model", d_model)
    positions = _positions("positions", positions)
    j = torch.arange(d_model, device=positions.device)  # (D), channel index 2i or 2i+1
    omega = base ** (-2 * (j // 2).to(torch.float64) / d_model)  # (D), 1 / base^{2i/D}
    angle = positions.to(torch.float64)[:, None] * omega  # (L D)
    return torch.where(j % 2 == 0, angle.sin(), angle.cos())  # (L D)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal scaled dot-product attention, the formula itself in float64 (Vaswani et al.,
    Eq. 1, with the decoder's mask): ``softmax(Q Kᵀ / √d + M) V``, ``M_ij = -∞`` for ``j > i``.

    ``q``, ``k``, ``v`` ``(..., L, d)`` → ``(..., L, d)`` float64.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.tensor(name, t, complex_ok=False)
        if t.ndim < 2 or t.shape != q.shape:
            raise ValueError(
                f"q, k and v must share one shape (..., L, d), got {name} of shape "
                f"{tuple(t.shape)} and q of shape {tuple(q.shape)}"
            )
    q, k, v = q.double(), k.double(), v.double()
    L, d = q.shape[-2:]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (... L L)
    future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)  # (L L), j > i
    scores = scores.masked_fill(future, -math.inf)  # (... L L)
    return scores.softmax(-1) @ v  # (... L d)


class KVCache(NamedTuple):
    """Decoding state: the keys and values ``(B, H, t, d)`` of the ``t`` steps so far (keys
    already rotated under RoPE), and the position ``t`` of the next step."""

    keys: torch.Tensor
    values: torch.Tensor
    t: int


class Attention(nn.Module):
    """Causal multi-head self-attention: ``forward`` ``(batch, length, d_model)`` → same shape
    (no residual); ``step`` decodes one token ``(batch, d_model)`` from a KV cache. Parameters:
    ``qkv`` ``(3D, D)`` without bias and ``output`` ``(D, D)`` with its bias; none is an SSM
    parameter. Chapter *2023*."""

    def __init__(self, cfg: AttentionConfig, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        if d_model % cfg.head_dim:
            raise ValueError(
                f"d_model must be a multiple of head_dim={cfg.head_dim} (whole heads), "
                f"got {d_model}"
            )
        self.cfg, self.d_model = cfg, d_model
        self.n_heads = d_model // cfg.head_dim
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.output = nn.Linear(d_model, d_model)

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)

    def _heads(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values ``(B, H, L, d)`` of ``x`` ``(B, L, D)`` at ``positions``
        ``(L,)``, with the configured position information."""
        if self.cfg.positions == "absolute":
            pe = sinusoidal_encoding(positions, self.d_model)  # (L D)
            x = x + pe.to(x.dtype)  # (B L D)
        qkv = self.qkv(x)  # (B L 3D)
        qkv = qkv.unflatten(-1, (3, self.n_heads, self.cfg.head_dim))  # (B L 3 H d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B H L d) each
        if self.cfg.positions == "rope":
            q, k = rope(q, positions), rope(k, positions)  # (B H L d) each
        return q, k, v

    def _merge(self, o: torch.Tensor) -> torch.Tensor:
        """The heads' outputs ``(B, H, L, d)`` → ``y`` ``(B, L, D)``."""
        return self.output(o.transpose(1, 2).flatten(2))  # (B L D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``y`` of the same shape; step ``l`` attends to
        steps ``0 … l``."""
        self._check_input(x, 3, "(batch, length, d_model)")
        positions = torch.arange(x.shape[1], device=x.device)  # (L)
        q, k, v = self._heads(x, positions)  # (B H L d) each
        p = self.cfg.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B H L d)
        return self._merge(o)  # (B L D)

    def init_state(self, batch: int) -> KVCache:
        """The empty KV cache for ``batch`` sequences: keys and values ``(batch, H, 0, d)``."""
        _checks.positive_int("batch", batch)
        w = self.qkv.weight
        empty = w.new_zeros(batch, self.n_heads, 0, self.cfg.head_dim)  # (B H 0 d)
        return KVCache(empty, empty.clone(), 0)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One step: ``x_t`` ``(batch, d_model)`` and the cache of ``t`` steps → ``y_t``
        ``(batch, d_model)`` and the cache of ``t + 1`` steps. Inference only (no gradient, no
        dropout).

        The cache grows by one key and one value per step: decoding token ``t`` costs ``O(t)``
        time (its query meets every cached key) and the cache ``O(t)`` memory, where an SSM
        carries a state of constant size whatever the length.
        """
        self._check_input(x_t, 2, "(batch, d_model)")
        if not isinstance(state, KVCache) or state.keys.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"state must be the KVCache of init_state({x_t.shape[0]}) (one row per "
                "sequence of x_t)"
            )
        positions = torch.tensor([state.t], device=x_t.device)  # (1)
        q, k, v = self._heads(x_t[:, None], positions)  # (B H 1 d) each
        keys = torch.cat([state.keys, k.to(state.keys.dtype)], 2)  # (B H t+1 d)
        values = torch.cat([state.values, v.to(state.values.dtype)], 2)  # (B H t+1 d)
        o = F.scaled_dot_product_attention(q.to(keys.dtype), keys, values)  # (B H 1 d), no mask
        return self._merge(o)[:, 0], KVCache(keys, values, state.t + 1)  # (B D)
