"""The Hyena operator: gates and long implicit convolutions, interleaved.

Poli, Massaroli, Nguyen, Fu, Dao, Baccus, Bengio, Ermon & Ré, "Hyena Hierarchy: Towards Larger
Convolutional Language Models", arXiv:2302.10866v3, Section 3 (Algorithms 1-3). Of order ``N``:

    (x¹, …, x^N, v) = ShortConv(Linear(u))            (B, L, (N+1) D)   N+1 branches of width D
    z⁰ = v
    zⁿ = Dropout( xⁿ ⊙ (hⁿ * zⁿ⁻¹ + Dₙ ⊙ zⁿ⁻¹) )      n = 1 … N         (Eq. 3, Algorithm 3)
    y = Linear(z^N)                                   (B, L, D)

``*`` the causal convolution over the sequence, per channel, by :func:`ssm.ops.fftconv.fftconv`
(float32, float64 for a float64 layer, autocast off); ``Dₙ`` the filter's bias (the skip term of
the authors' ``fftconv``). The short filter is a causal depthwise convolution of ``short_filter``
taps on all ``(N+1) D`` projected channels (:class:`ssm.layers._short_conv.ShortConv`).

The long filters are implicit (Section 3.3, Algorithm 2): with ``t_l = l / l_max`` and
``K = (emb_dim - 1) / 2`` bands ``f_k`` (``linspace(1e-4, K - 1, K)``, as the authors' code),

    PE(t) = [t, cos(2π f_k t), -sin(2π f_k t)]_k                         (emb_dim,)
    FFN = Linear(emb_dim, F) → Sin → Linear(F, F) → Sin → Linear(F, N D, no bias)
    hⁿ_d(t) = exp(-α_{n,d} t) · FFN(PE(t))_{n,d},

``Sin(x) = sin(ω ⊙ x)`` with a learned frequency ``ω`` (one, shared by both activations, ``w`` at
init); the decay rates ``α`` ramp linearly over the ``N D`` channels from ``|ln target| /
slow_decay_pct`` to ``|ln target| / fast_decay_pct`` (the authors' ``ExponentialModulation``: the
fastest channel is down to ``target`` at ``t = fast_decay_pct``), fixed. The filters are not
normalised (the authors' default, ``normalized=False``). A sequence shorter than ``l_max`` uses
the first ``L`` taps.

The FFN's parameters (and ``ω``) are SSM parameters (:func:`ssm.layers.register`: own learning
rate, no weight decay), as the authors' code gives the implicit filter its own ``lr`` and
``wd = 0``. Their positional features, trained at ``lr = 1e-5``, are fixed here (a buffer).

Differences from the authors' code (``safari``, ``HyenaOperator``): it gates before each
convolution and ends with a gate (``y = x¹ ⊙ (h * (x² ⊙ v))`` at its ``order=2``, one filter); here
Algorithm 3 is followed (``N`` filters, each convolution followed by its gate), and ``t`` runs over
``[0, 1)`` rather than ``[0, 1]``.

Hyena has no fixed-size recurrent state: decoding keeps every past input of the ``N`` long
convolutions, so a step costs ``O(t)`` time and memory at step ``t``. Chapter *2023*.

Dimension letters: B batch, L length, D model width, N order, F filter FFN width, E emb_dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import _checks
from ..ops.fftconv import fftconv
from ._params import register
from ._short_conv import ShortConv

__all__ = ["Hyena", "HyenaConfig", "HyenaFilter", "HyenaState"]


@dataclass
class HyenaConfig:
    """Settings of a Hyena layer; ``build(d_model)`` makes one. Every field is plain JSON."""

    order: int = 2  # N: long convolutions (and gates); N + 1 projected branches
    filter_order: int = 64  # F: width of the implicit filter's FFN
    short_filter: int = 3  # taps of the short causal depthwise convolution
    emb_dim: int = 33  # E = 1 + 2 K (odd, >= 3): t and K sin/cos bands
    l_max: int | None = None  # filter length; None until Backbone.for_data sets it
    dropout: float = 0.0  # after each gate
    w: float = 1.0  # the FFN's sine frequency ω at init
    fast_decay_pct: float = 0.3  # the fastest channel's window reaches target at this t
    slow_decay_pct: float = 1.5  # the slowest channel's window reaches target at this t
    target: float = 1e-2  # the window's value at t = *_decay_pct

    def __post_init__(self) -> None:
        _checks.positive_int("order", self.order)
        _checks.positive_int("filter_order", self.filter_order)
        _checks.positive_int("short_filter", self.short_filter)
        _checks.positive_int("emb_dim", self.emb_dim)
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(
                f"emb_dim must be odd and >= 3 (t and (emb_dim - 1) / 2 sin/cos bands), got "
                f"{self.emb_dim}"
            )
        if self.l_max is not None:
            _checks.positive_int("l_max", self.l_max)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.w > 0:
            raise ValueError(f"w must be > 0 (the sine frequency at init), got {self.w}")
        if not 0 < self.fast_decay_pct <= self.slow_decay_pct:
            raise ValueError(
                "fast_decay_pct and slow_decay_pct must satisfy 0 < fast_decay_pct <= "
                f"slow_decay_pct, got {self.fast_decay_pct} and {self.slow_decay_pct}"
            )
        if not 0 < self.target < 1:
            raise ValueError(
                f"target must be in (0, 1) (a decayed window value), got {self.target}"
            )

    def build(self, d_model: int) -> Hyena:
        """The Hyena layer of width ``d_model`` with these settings."""
        return Hyena(self, d_model)


def positional_features(l_max: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` ``(l_max, 1)`` (``t_l = l / l_max``) and ``PE(t)`` ``(l_max, emb_dim)``: ``t``, then
    ``cos(2π f_k t)`` and ``-sin(2π f_k t)`` for the ``(emb_dim - 1) / 2`` bands ``f_k``."""
    t = (torch.arange(l_max, dtype=torch.float64) / l_max).unsqueeze(-1)  # (L 1)
    bands = (emb_dim - 1) // 2
    f = torch.linspace(1e-4, bands - 1, bands, dtype=torch.float64)  # (K)
    angle = 2 * math.pi * f * t  # (L K)
    z = torch.cat([t, torch.cos(angle), -torch.sin(angle)], dim=-1)  # (L E)
    dtype = torch.get_default_dtype()
    return t.to(dtype), z.to(dtype)


def decay_rates(channels: int, cfg: HyenaConfig) -> torch.Tensor:
    """``α`` ``(channels,)``: linear from ``|ln target| / slow_decay_pct`` to ``|ln target| /
    fast_decay_pct``."""
    rate = -math.log(cfg.target)
    return torch.linspace(rate / cfg.slow_decay_pct, rate / cfg.fast_decay_pct, channels)


class Sin(nn.Module):
    """``sin(ω ⊙ x)``, ``ω`` ``(F,)`` learned (an SSM parameter), ``w`` at init."""

    def __init__(self, width: int, w: float) -> None:
        super().__init__()
        register(self, "freq", torch.full((width,), float(w)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


def _ssm_linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` (its usual init) whose parameters are registered as SSM parameters."""
    linear = nn.Linear(d_in, d_out, bias=bias)
    for name, p in list(linear.named_parameters()):
        register(linear, name, p.detach().clone())
    return linear


class HyenaFilter(nn.Module):
    """The ``channels`` implicit long filters ``(channels, L)``: window ⊙ FFN(PE(t)).

    Buffers ``t`` ``(l_max, 1)``, ``z`` ``(l_max, E)`` (the positional features) and ``alpha``
    ``(channels,)`` (the decay rates); parameters: the FFN's (SSM parameters).
    """

    def __init__(self, cfg: HyenaConfig, channels: int) -> None:
        super().__init__()
        t, z = positional_features(cfg.l_max, cfg.emb_dim)
        self.register_buffer("t", t)
        self.register_buffer("z", z)
        self.register_buffer("alpha", decay_rates(channels, cfg))
        F = cfg.filter_order
        act = Sin(F, cfg.w)
        self.ffn = nn.Sequential(
            _ssm_linear(cfg.emb_dim, F), act, _ssm_linear(F, F), act,
            _ssm_linear(F, channels, bias=False),
        )  # fmt: skip

    def window(self, L: int) -> torch.Tensor:
        """``exp(-α t)`` ``(channels, L)`` over the first ``L`` steps."""
        return torch.exp(-self.alpha.unsqueeze(-1) * self.t[:L, 0])  # (C L)

    def forward(self, L: int) -> torch.Tensor:
        """The filters' first ``L`` taps ``(channels, L)``."""
        h = self.ffn(self.z[:L])  # (L C)
        return self.window(L) * h.T  # (C L)


@dataclass
class HyenaState:
    """The decoding state: ``window`` ``(B, (N+1) D, k - 1)`` of the short filter, ``inputs``
    (``N`` tensors ``(B, D, t)``: every past input ``zⁿ⁻¹`` of each long convolution) and
    ``filters`` ``(N, D, l_max)``, computed once at :meth:`Hyena.init_state`."""

    window: torch.Tensor
    inputs: tuple[torch.Tensor, ...]
    filters: torch.Tensor

    @property
    def t(self) -> int:
        """The number of steps taken."""
        return self.inputs[0].shape[-1]


class Hyena(nn.Module):
    """The Hyena layer of order ``N``: ``forward`` ``(batch, length, d_model)`` → same shape;
    ``step`` decodes one token ``(batch, d_model)`` in ``O(t)`` at step ``t`` (no fixed-size
    state: the long convolutions read every past input). Chapter *2023*."""

    def __init__(self, cfg: HyenaConfig, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        if cfg.l_max is None:
            raise ValueError(
                "HyenaConfig.l_max must be set (the filter length, at least the input length); "
                "Backbone.for_data sets it from the data set"
            )
        self.cfg, self.d_model = cfg, d_model
        N, D = cfg.order, d_model
        self.in_proj = nn.Linear(D, (N + 1) * D)
        self.short = ShortConv((N + 1) * D, cfg.short_filter)
        self.filter = HyenaFilter(cfg, N * D)
        self.D = nn.Parameter(torch.randn(N, D))
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_proj = nn.Linear(D, D)

    def _work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.D.dtype, torch.float32)

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)

    def filters(self, L: int) -> torch.Tensor:
        """The long filters ``hⁿ`` ``(N, D, L)`` (float32 or float64, autocast off)."""
        with torch.autocast(device_type=self.D.device.type, enabled=False):
            h = self.filter(L).to(self._work_dtype())  # (ND L)
        return h.view(self.cfg.order, self.d_model, L)  # (N D L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``y`` of the same shape."""
        self._check_input(x, 3, "(batch, length, d_model)")
        L = x.shape[1]
        if L > self.cfg.l_max:
            raise ValueError(
                f"x has length {L}, longer than the filter length l_max={self.cfg.l_max}; "
                "build the layer with a larger HyenaConfig.l_max"
            )
        u = self.short(self.in_proj(x))  # (B L (N+1)D)
        h = self.filters(L)  # (N D L)
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = u.transpose(1, 2).to(self._work_dtype())  # (B (N+1)D L)
            *gates, z = u.split(self.d_model, dim=1)  # N+1 × (B D L)
            D = self.D.to(u.dtype)  # (N D)
            for n, gate in enumerate(gates):
                z = self.dropout(gate * fftconv(z, h[n], D[n]))  # (B D L)
            z = z.transpose(1, 2)  # (B L D)
        return self.out_proj(z)  # (B L D)

    @torch.no_grad()
    def init_state(self, batch: int) -> HyenaState:
        """The empty decoding state for ``batch`` sequences (no past inputs yet)."""
        _checks.positive_int("batch", batch)
        dtype, device = self._work_dtype(), self.D.device
        empty = torch.zeros(batch, self.d_model, 0, dtype=dtype, device=device)  # (B D 0)
        inputs = (empty,) * self.cfg.order
        return HyenaState(self.short.init_state(batch), inputs, self.filters(self.cfg.l_max))

    def _check_state(self, x_t: torch.Tensor, state: object) -> None:
        self._check_input(x_t, 2, "(batch, d_model)")
        if not isinstance(state, HyenaState) or state.window.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"state must be the HyenaState of init_state({x_t.shape[0]}) (one row per "
                "sequence of x_t)"
            )
        if state.t >= self.cfg.l_max:
            raise ValueError(
                f"step {state.t} is past the filter length l_max={self.cfg.l_max}; build the "
                "layer with a larger HyenaConfig.l_max"
            )

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: HyenaState) -> tuple[torch.Tensor, HyenaState]:
        """One step: ``x_t`` ``(batch, d_model)`` → ``y_t`` ``(batch, d_model)`` and the next
        state; ``(hⁿ * zⁿ⁻¹)_t = Σ_{j ≤ t} hⁿ_j zⁿ⁻¹_{t-j}`` over the stored inputs, ``O(t)``."""
        self._check_state(x_t, state)
        u, window = self.short.step(self.in_proj(x_t), state.window)  # (B (N+1)D)
        k = state.filters[..., : state.t + 1].flip(-1)  # (N D t+1), h_0 last: meets z_t
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            *gates, z = u.to(self._work_dtype()).split(self.d_model, dim=-1)  # N+1 × (B D)
            D = self.D.to(z.dtype)  # (N D)
            inputs = []
            for n, gate in enumerate(gates):
                past = torch.cat([state.inputs[n], z.unsqueeze(-1)], dim=-1)  # (B D t+1)
                z = self.dropout(gate * ((past * k[n]).sum(-1) + D[n] * z))  # (B D)
                inputs.append(past)
        return self.out_proj(z), HyenaState(window, tuple(inputs), state.filters)
