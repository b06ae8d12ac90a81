"""RWKV-4's two layers: time mixing (the WKV recurrence) and channel mixing.

Peng et al., "RWKV: Reinventing RNNs for the Transformer Era", arXiv:2305.13048v2, Section 3.
An RWKV block is ``x ← x + TimeMix(LN₁(x)); x ← x + ChannelMix(LN₂(x))``: here each mixing is
its own layer with its own config, and the block is two residual blocks of the shared backbone
(:class:`ssm.layers.Backbone`, prenorm, ``ff="none"``), one around each, alternating, which is
exactly RWKV's block (the final norm and the decoder are the backbone's).

Time mixing (Eqs. 11-15). Token shift: each projection reads a per-channel mix of ``x_t`` and
``x_{t-1}`` (zeros before the start),

    r_t = W_r (μ_r ⊙ x_t + (1 - μ_r) ⊙ x_{t-1}),   k_t, v_t alike with μ_k, μ_v,

then per channel, with the decay ``w = exp(time_decay) > 0`` and the bonus ``u`` of the current
token (Eq. 14),

    wkv_t = (Σ_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
            / (Σ_{i<t} e^{-(t-1-i) w + k_i} + e^{u + k_t}),
    o_t = W_o (σ(r_t) ⊙ wkv_t)                                             (Eq. 15).

Written as causal linear attention (:func:`wkv_as_linear_attention`), ``wkv = (M ⊙ E) v / (M ⊙
E) 1`` with ``E_{t,i} = e^{k_i}`` and the decaying mask ``M_{t,i} = e^{-(t-1-i) w}`` for
``i < t``, ``e^u`` on the diagonal and ``0`` above it: the weights depend on the distance only,
so the sums obey a recurrence. Training runs :func:`wkv_parallel` (a parallel prefix scan over
the sequence, ``log₂ L`` steps of ``O(L)``); decoding runs :func:`wkv_recurrent`'s step, the
RNN form with the state ``(a, b, p)`` of the paper's appendix (RNN cell) and RWKV-LM's CUDA
kernel: the numerator and denominator sums are ``e^p a`` and ``e^p b``, ``p`` the running
maximum of the exponents, so nothing overflows (``k ≈ 100`` overflows ``e^k`` in float32).

Channel mixing (Eqs. 16-18): token shift with ``μ'_r``, ``μ'_k``, then
``o'_t = σ(W'_r x'^r_t) ⊙ W'_v max(W'_k x'^k_t, 0)²``, the hidden width ``ff_mult · D``.

Initialization is RWKV-LM's (RWKV-4) for the first layer of a stack, since a layer does not
know its depth: ``time_decay_c = -5 + 8 (c / (A-1))^0.7``, ``u_c = log 0.3 + 0.5 zigzag_c``
(``zigzag = 0, 1/2, -1/2, ...``), ``μ_k = μ_v = μ'_k = μ'_r = c / D`` and ``μ_r = (c/D)^½``; the
paper's ramps also vary with the depth ``l / n_layers``. The matrices keep PyTorch's default
init (RWKV-LM zeroes some of them). Chapter *2023*.

Dimension letters: B batch, L length, D d_model, A attention width (``d_attn``), F channel-mix
hidden width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .. import _checks
from ._params import register

__all__ = [
    "RWKVChannelMix",
    "RWKVChannelMixConfig",
    "RWKVTimeMix",
    "RWKVTimeMixConfig",
    "TimeMixState",
    "WKVState",
    "wkv_as_linear_attention",
    "wkv_init_state",
    "wkv_parallel",
    "wkv_recurrent",
]


class WKVState(NamedTuple):
    """The WKV recurrence's state after token ``t``, each ``(B, A)``: the sums
    ``Σ_{i≤t} e^{-(t-i) w + k_i} v_i = e^p a`` and ``Σ_{i≤t} e^{-(t-i) w + k_i} = e^p b``."""

    a: torch.Tensor
    b: torch.Tensor
    p: torch.Tensor


class TimeMixState(NamedTuple):
    """A time-mixing layer's decoding state: the previous input ``(B, D)`` and the WKV state."""

    x_prev: torch.Tensor
    wkv: WKVState


def _check_wkv(w: object, u: object, k: object, v: object) -> torch.dtype:
    """The arguments of the WKV functions; returns the dtype they compute in (float32 or more)."""
    k = _checks.tensor("k", k, complex_ok=False)
    if k.ndim != 3:
        raise ValueError(f"k must have shape (batch, length, channels), got {tuple(k.shape)}")
    _checks.real("v", v, tuple(k.shape), "the shape of k")
    C = k.shape[-1]
    w = _checks.real("w", w, (C,), "one decay per channel of k")
    u = _checks.real("u", u, (C,), "one bonus per channel of k")
    _checks.one_device(w=w, u=u, k=k, v=v)
    if not bool((w > 0).all()):
        raise ValueError(f"w must be > 0 everywhere (a decay), got min {float(w.min()):.3g}")
    return torch.promote_types(_checks.common_dtype(w, u, k, v), torch.float32)


def _prefix_sums(w: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> WKVState:
    """The states after every token, ``(B, L, A)`` each, by a Hillis-Steele scan: after the
    level of offset ``d`` each position holds the sums over its last ``2d`` tokens; the right
    part of a combination always spans ``d`` tokens, so the left one decays by ``e^{-d w}``."""
    a, b, p = v, torch.ones_like(k), k  # (B L A) each: one token, e^{k_i} (v_i, 1)
    d = 1
    while d < k.shape[1]:
        p_left, p_right = p[:, :-d] - d * w, p[:, d:]  # (B L-d A)
        q = torch.maximum(p_left, p_right).detach()  # any shift is exact: it cancels in wkv
        e_left, e_right = torch.exp(p_left - q), torch.exp(p_right - q)
        a = torch.cat([a[:, :d], e_left * a[:, :-d] + e_right * a[:, d:]], 1)  # (B L A)
        b = torch.cat([b[:, :d], e_left * b[:, :-d] + e_right * b[:, d:]], 1)  # (B L A)
        p = torch.cat([p[:, :d], q], 1)  # (B L A)
        d *= 2
    return WKVState(a, b, p)


def _with_bonus(state: WKVState, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``wkv = (e^p a + e^{u+k} v) / (e^p b + e^{u+k})``, scaled by ``e^{-max}``: ``(..., A)``."""
    bonus = u + k
    q = torch.maximum(state.p, bonus).detach()
    e_past, e_now = torch.exp(state.p - q), torch.exp(bonus - q)
    return (e_past * state.a + e_now * v) / (e_past * state.b + e_now)


def wkv_parallel(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The WKV operator (arXiv:2305.13048v2, Eq. 14) over a whole sequence, in parallel.

    ``w`` ``(A,)`` the decays (``> 0``), ``u`` ``(A,)`` the bonuses, ``k``, ``v``
    ``(B, L, A)`` → ``wkv`` ``(B, L, A)`` (float32, or float64 for float64 inputs). The states
    after every token come from a parallel prefix scan in the running-maximum form (nothing
    overflows for any ``k``); the state before ``t`` and the bonus term give ``wkv_t``.
    Chapter *2023*.
    """
    dtype = _check_wkv(w, u, k, v)
    w, u, k, v = (t.to(dtype) for t in (w, u, k, v))
    a, b, p = _prefix_sums(w, k, v)  # (B L A) each
    before = WKVState(
        F.pad(a, (0, 0, 1, -1)), F.pad(b, (0, 0, 1, -1)),  # empty sums before t = 0
        torch.cat([u + k[:, :1], p[:, :-1]], 1),  # any finite exponent for the empty sums
    )  # fmt: skip
    return _with_bonus(before, u, k, v)  # (B L A)


def wkv_init_state(
    batch: int, channels: int, dtype: torch.dtype, device: torch.device | None = None
) -> WKVState:
    """The state before the first token: empty sums, ``a = b = 0`` and ``p = -∞``."""
    zeros = torch.zeros(batch, channels, dtype=dtype, device=device)
    return WKVState(zeros, zeros.clone(), torch.full_like(zeros, -math.inf))


def _wkv_step(
    w: torch.Tensor, u: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, state: WKVState
) -> tuple[torch.Tensor, WKVState]:
    """One token of the RNN form: ``wkv_t`` ``(B, A)`` and the state after ``t``."""
    wkv = _with_bonus(state, u, k_t, v_t)  # (B A)
    p_decayed = state.p - w
    q = torch.maximum(p_decayed, k_t).detach()
    e_past, e_now = torch.exp(p_decayed - q), torch.exp(k_t - q)
    return wkv, WKVState(e_past * state.a + e_now * v_t, e_past * state.b + e_now, q)


def wkv_recurrent(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: WKVState | None = None,
) -> tuple[torch.Tensor, WKVState]:
    """The WKV operator as an RNN, one token at a time (the paper's appendix, RNN cell; RWKV-LM's
    wkv kernel), from ``state`` (default :func:`wkv_init_state`):

        q = max(p, u + k_t),    wkv_t = (e^{p-q} a + e^{u+k_t-q} v_t) / (e^{p-q} b + e^{u+k_t-q}),
        q' = max(p - w, k_t),   a ← e^{p-w-q'} a + e^{k_t-q'} v_t,   b ← e^{p-w-q'} b + e^{k_t-q'},
        p ← q'.

    Arguments as :func:`wkv_parallel`; returns ``wkv`` ``(B, L, A)`` and the state after the
    last token. Chapter *2023*.
    """
    dtype = _check_wkv(w, u, k, v)
    w, u, k, v = (t.to(dtype) for t in (w, u, k, v))
    B, L, A = k.shape
    if state is None:
        state = wkv_init_state(B, A, dtype, k.device)
    outputs = []
    for t in range(L):
        wkv_t, state = _wkv_step(w, u, k[:, t], v[:, t], state)  # (B A)
        outputs.append(wkv_t)
    return (torch.stack(outputs, 1) if outputs else torch.empty_like(k)), state  # (B L A)


def wkv_as_linear_attention(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The WKV operator as causal linear attention with an explicit ``L × L`` decaying mask:

        wkv_t = Σ_i M_{t,i} e^{k_i} v_i / Σ_i M_{t,i} e^{k_i},
        M_{t,i} = e^{-(t-1-i) w} (i < t),   e^u (i = t),   0 (i > t).

    For exposition and checks on short sequences (``O(L²)``, plain exponentials: use float64).
    Arguments as :func:`wkv_parallel`. Chapter *2023*.
    """
    dtype = _check_wkv(w, u, k, v)
    w, u, k, v = (t.to(dtype) for t in (w, u, k, v))
    t = torch.arange(k.shape[1], device=k.device)
    lag = (t[:, None] - 1 - t[None, :]).to(dtype)  # (L L): t - 1 - i
    log_m = torch.where(lag >= 0, -lag * w[:, None, None], u[:, None, None])  # (A L L)
    M = torch.exp(log_m) * (lag >= -1)  # (A L L), zero above the diagonal
    e_k = torch.exp(k)  # (B L A)
    num = torch.einsum("ati,bia->bta", M, e_k * v)  # (B L A)
    return num / torch.einsum("ati,bia->bta", M, e_k)  # (B L A)


def _token_shift(x: torch.Tensor) -> torch.Tensor:
    """``x_{t-1}`` at every ``t``, zeros at ``t = 0``: ``(B, L, D)`` → ``(B, L, D)``."""
    return F.pad(x, (0, 0, 1, -1))


def _mix(x: torch.Tensor, x_prev: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``μ ⊙ x_t + (1 - μ) ⊙ x_{t-1}``, ``(..., D)``."""
    return mu * x + (1 - mu) * x_prev


def _ramp(D: int) -> torch.Tensor:
    """``c / D`` for the channels ``c = 0, …, D-1``: RWKV-LM's token-shift ramp."""
    return torch.arange(D, dtype=torch.get_default_dtype()) / D


@dataclass
class RWKVTimeMixConfig:
    """Settings of an RWKV-4 time-mixing layer; ``build(d_model)`` makes one. Every field is
    plain JSON."""

    d_attn: int | None = None  # A: channels of r, k, v and of the WKV operator; None: d_model

    def __post_init__(self) -> None:
        if self.d_attn is not None:
            _checks.positive_int("d_attn", self.d_attn)

    def build(self, d_model: int) -> RWKVTimeMix:
        """The time-mixing layer of width ``d_model`` with these settings."""
        return RWKVTimeMix(self, d_model)


class RWKVTimeMix(nn.Module):
    """RWKV-4 time mixing: ``forward`` ``(batch, length, d_model)`` → same shape, through
    :func:`wkv_parallel`; ``step`` decodes one token ``(batch, d_model)`` through the RNN form.
    Parameters: ``mix_r``, ``mix_k``, ``mix_v`` ``(D,)``, the SSM parameters ``time_decay``
    (``w = exp(time_decay)``) and ``time_first`` (``u``) ``(A,)``, ``W_r``, ``W_k``, ``W_v``
    ``(A, D)`` and ``W_o`` ``(D, A)`` without biases. Chapter *2023*."""

    def __init__(self, cfg: RWKVTimeMixConfig, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        self.cfg, self.d_model = cfg, d_model
        D, A = d_model, cfg.d_attn or d_model
        self.d_attn = A
        ramp = _ramp(D)
        self.mix_r = nn.Parameter(ramp.sqrt())
        self.mix_k = nn.Parameter(ramp.clone())
        self.mix_v = nn.Parameter(ramp.clone())
        channel = torch.linspace(0, 1, A, dtype=ramp.dtype)  # c / (A - 1)
        register(self, "time_decay", -5 + 8 * channel**0.7)
        zigzag = ((torch.arange(A) + 1) % 3 - 1).to(ramp.dtype) * 0.5
        register(self, "time_first", math.log(0.3) + zigzag)
        self.receptance = nn.Linear(D, A, bias=False)
        self.key = nn.Linear(D, A, bias=False)
        self.value = nn.Linear(D, A, bias=False)
        self.output = nn.Linear(A, D, bias=False)

    def _work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.time_decay.dtype, torch.float32)

    def _rkv(self, x: torch.Tensor, x_prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``r``, ``k``, ``v`` ``(..., A)`` from the inputs and the shifted inputs ``(..., D)``."""
        r = self.receptance(_mix(x, x_prev, self.mix_r))
        return r, self.key(_mix(x, x_prev, self.mix_k)), self.value(_mix(x, x_prev, self.mix_v))

    def _decay_and_bonus(self) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self._work_dtype()
        return torch.exp(self.time_decay.to(dtype)), self.time_first.to(dtype)

    def _gate(self, r: torch.Tensor, wkv: torch.Tensor) -> torch.Tensor:
        """``W_o (σ(r) ⊙ wkv)``: ``(..., A)`` → ``(..., D)``."""
        return self.output(torch.sigmoid(r) * wkv.to(r.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``o`` of the same shape."""
        _checks.layer_input(x, self.d_model, 3, "(batch, length, d_model)")
        r, k, v = self._rkv(x, _token_shift(x))  # (B L A) each
        with torch.autocast(device_type=x.device.type, enabled=False):
            w, u = self._decay_and_bonus()
            wkv = wkv_parallel(w, u, k.to(w.dtype), v.to(w.dtype))  # (B L A)
        return self._gate(r, wkv)  # (B L D)

    def init_state(self, batch: int) -> TimeMixState:
        """No previous input (zeros ``(batch, D)``) and empty WKV sums ``(batch, A)``."""
        _checks.positive_int("batch", batch)
        p = self.mix_r
        x_prev = torch.zeros(batch, self.d_model, dtype=p.dtype, device=p.device)
        return TimeMixState(
            x_prev, wkv_init_state(batch, self.d_attn, self._work_dtype(), p.device)
        )

    def step(self, x_t: torch.Tensor, state: TimeMixState) -> tuple[torch.Tensor, TimeMixState]:
        """One step: ``x_t`` ``(batch, d_model)`` and the state → ``o_t`` ``(batch, d_model)``
        and the next state."""
        _checks.layer_input(x_t, self.d_model, 2, "(batch, d_model)")
        if not isinstance(state, TimeMixState) or state.x_prev.shape != x_t.shape:
            raise ValueError(
                f"state must be the TimeMixState of init_state({x_t.shape[0]}) (one row per "
                "sequence of x_t)"
            )
        r, k, v = self._rkv(x_t, state.x_prev.to(x_t.dtype))  # (B A) each
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            w, u = self._decay_and_bonus()
            wkv, wkv_state = _wkv_step(w, u, k.to(w.dtype), v.to(w.dtype), state.wkv)  # (B A)
        return self._gate(r, wkv), TimeMixState(x_t, wkv_state)


@dataclass
class RWKVChannelMixConfig:
    """Settings of an RWKV-4 channel-mixing layer; ``build(d_model)`` makes one. Every field is
    plain JSON."""

    ff_mult: int = 4  # F = ff_mult · d_model: the hidden width of k'

    def __post_init__(self) -> None:
        _checks.positive_int("ff_mult", self.ff_mult)

    def build(self, d_model: int) -> RWKVChannelMix:
        """The channel-mixing layer of width ``d_model`` with these settings."""
        return RWKVChannelMix(self, d_model)


class RWKVChannelMix(nn.Module):
    """RWKV-4 channel mixing, ``σ(W'_r x'^r) ⊙ W'_v relu(W'_k x'^k)²`` on token-shifted inputs:
    ``forward`` ``(batch, length, d_model)`` → same shape; ``step`` decodes one token with the
    previous input as its state. Parameters: ``mix_r``, ``mix_k`` ``(D,)``, ``W'_r`` ``(D, D)``,
    ``W'_k`` ``(F, D)``, ``W'_v`` ``(D, F)`` without biases. Chapter *2023*."""

    def __init__(self, cfg: RWKVChannelMixConfig, d_model: int) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        self.cfg, self.d_model = cfg, d_model
        D, hidden = d_model, cfg.ff_mult * d_model
        self.mix_r = nn.Parameter(_ramp(D))
        self.mix_k = nn.Parameter(_ramp(D))
        self.receptance = nn.Linear(D, D, bias=False)
        self.key = nn.Linear(D, hidden, bias=False)
        self.value = nn.Linear(hidden, D, bias=False)

    def _mixed(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` inputs and shifted inputs → ``(..., D)``."""
        r = self.receptance(_mix(x, x_prev, self.mix_r))  # (... D)
        k = torch.relu(self.key(_mix(x, x_prev, self.mix_k))).square()  # (... F)
        return torch.sigmoid(r) * self.value(k)  # (... D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``o'`` of the same shape."""
        _checks.layer_input(x, self.d_model, 3, "(batch, length, d_model)")
        return self._mixed(x, _token_shift(x))  # (B L D)

    def init_state(self, batch: int) -> torch.Tensor:
        """The previous input: zeros ``(batch, d_model)``."""
        _checks.positive_int("batch", batch)
        p = self.mix_r
        return torch.zeros(batch, self.d_model, dtype=p.dtype, device=p.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x_t`` ``(batch, d_model)`` and the previous input → ``o'_t`` and ``x_t``."""
        _checks.layer_input(x_t, self.d_model, 2, "(batch, d_model)")
        if not isinstance(state, torch.Tensor) or state.shape != x_t.shape:
            raise ValueError(
                f"state must be the previous input of init_state({x_t.shape[0]}), of shape "
                f"{tuple(x_t.shape)}"
            )
        return self._mixed(x_t, state.to(x_t.dtype)), x_t
