"""The S4 layer: one structured state-space model per channel, applied as a long convolution.

Gu, Goel & Ré, "Efficiently Modeling Long Sequences with Structured State Spaces" (S4),
arXiv:2111.00396v3, in its updated form (S4D paper, arXiv:2206.11893v2; "How to Train Your
HiPPO", arXiv:2206.12037v2): each of the ``H = d_model`` channels has its own continuous SSM
``x' = A x + B u``, ``y = C x + D u`` with a learned step ``Δ`` (log-uniform at init), its
convolution kernel ``K̄_l = C Ā^l B̄`` (bilinear ``Ā, B̄``) for ``l < l_max``, and the layer is

    y = Linear_GLU( Dropout( GELU( K̄ * u + D u ) ) ).

Two parameterizations of ``A``, the two arms of the S4 paper's ablations (Section 4.4,
Figures 3 and 4):

- ``nplr``: normal plus low rank in the eigenbasis of the normal part,
  ``A = diag(w) - p pᴴ``, one eigenvalue of each conjugate pair stored (``w``, ``P``, ``B``,
  ``C̃`` of size ``N/2``); the kernel by S4's Algorithm 1 (Cauchy kernel, Woodbury identity,
  inverse FFT), with ``C̃ = C (I - Ā^L)`` trained directly;
- ``dense``: a real ``(N, N)`` matrix per channel; the kernel by repeated squaring.

Explained in the book's Chapter 1, *From ODE to S4* (the kernel, the two views), and Chapter 2,
*S4 v2: how to train your HiPPO* (the layer, its initializations, frozen ``A``, the ablations).

Dimension letters: B batch, L length, H channels, N state size (``N2 = N/2`` stored
eigenvalues), c kernels per channel (2 when bidirectional).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .. import _checks
from ..discretize import discretize
from ..hippo import nplr, transition
from ..ops.cauchy import cauchy
from ._conv import ConvolutionalLayer, check_config
from ._params import register

__all__ = [
    "DENSE_INITS",
    "NPLR_INITS",
    "S4",
    "DenseKernel",
    "NPLRKernel",
    "S4Config",
    "S4State",
    "c_from_c_tilde",
    "nplr_kernel",
    "power_kernel",
]

NPLR_INITS = ("legs", "random")
DENSE_INITS = ("legs", "random_dense", "random_diagonal")


@dataclass
class S4Config:
    """Settings of an S4 layer; ``build(d_model)`` makes one. Every field is plain JSON.

    The defaults are the updated S4 of the S4D and "How to Train Your HiPPO" papers. Both
    parameterizations train ``C̃ = C (I - Ā^L)`` (``C`` recovered for the recurrent step), so the
    dense arm of an ablation differs from nplr in ``A`` only.
    """

    d_state: int = 64  # N, state size per channel (even for nplr: conjugate pairs)
    # kernel length L, longer inputs refused; None until Backbone.for_data sets the data's length
    l_max: int | None = None
    parameterization: str = "nplr"  # "nplr" (S4) or "dense" (the ablation's dense A)
    init: str = "legs"  # A at init: NPLR_INITS for nplr, DENSE_INITS for dense
    train_A: bool = True  # False freezes A (w and P, or the dense A) as buffers
    dt_min: float = 1e-3  # log Δ at init: uniform in [log dt_min, log dt_max], per channel
    dt_max: float = 1e-1  # (then trained)
    bidirectional: bool = False  # a second kernel run backwards over the sequence (no step)
    dropout: float = 0.0  # after the GELU, before the GLU output projection

    def __post_init__(self) -> None:
        _checks.choice("parameterization", self.parameterization, ("nplr", "dense"))
        inits = NPLR_INITS if self.parameterization == "nplr" else DENSE_INITS
        _checks.choice(f"init (for parameterization {self.parameterization!r})", self.init, inits)
        nplr = self.parameterization == "nplr"
        check_config(self, even_state="for parameterization 'nplr' " if nplr else None)

    def build(self, d_model: int) -> S4:
        """The S4 layer of width ``d_model`` with these settings."""
        return S4(self, d_model)


class S4State(NamedTuple):
    """Recurrent state of :meth:`S4.step`: the SSM state and the discrete system it runs.

    ``x`` ``(B, H, N)`` (complex for nplr, in the eigenbasis of the full conjugate-pair
    system); ``Ab`` ``(H, N, N)``, ``Bb`` ``(H, N)``, ``C`` ``(H, N)``, computed once by
    :meth:`S4.init_state` from the current parameters.
    """

    x: torch.Tensor
    Ab: torch.Tensor
    Bb: torch.Tensor
    C: torch.Tensor


def nplr_kernel(
    w: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    L: int,
) -> torch.Tensor:
    """S4's kernel (Algorithm 1) from half of each conjugate pair, with ``C̃`` given.

    The full system ``A = diag(w, w̄) - p pᴴ`` with ``p = (P, P̄)``, ``B ← (B, B̄)``,
    ``C̃ ← (C, C̄)`` is real. Its truncated generating function at ``ω_j = exp(-2πi j/L)`` is
    (S4 paper, Lemma C.2 and C.3, bilinear)

        K̂(ω) = (2 / (1 + ω)) [r₀₀ - r₀₁ r₁₀ / (1 + r₁₁)],
        r_ab(ω) = Σ_full Δ a_n b_n / (z - Δ w_n),   z = 2 (1 - ω) / (1 + ω),

    for ``(a, b) ∈ {C̃, P̄} × {B, P}``, each sum over both halves of the pairs being one
    :func:`ssm.cauchy` call. At ``ω = -1`` (even ``L``) ``(I + Ā)⁻¹ B̄ = Δ B / 2``, so
    ``K̂(-1) = (Δ/2) Σ_full C̃_n B_n``. The real kernel is ``irfft`` of the ``⌊L/2⌋ + 1``
    frequencies of the rfft half. Equals :func:`ssm.s4_kernel` with ``c_tilde=True`` on the full
    system. Chapter 1, *From ODE to S4*, section "Computing the kernel fast: the S4 algorithm".

    Args:
        w: ``(H, N2)`` complex eigenvalues, one of each conjugate pair.
        P: ``(H, 1, N2)`` complex rank-1 factor.
        B: ``(H, N2)`` complex.
        C: ``(c, H, N2)`` complex ``C̃``, one row per kernel.
        dt: ``(H,)`` real steps ``Δ > 0``.
        L: kernel length.

    Returns:
        The real kernel ``(c, H, L)``.
    """
    c, H, N2 = C.shape
    omega = torch.exp(
        -2j * math.pi * torch.arange((L - 1) // 2 + 1, device=w.device, dtype=dt.dtype) / L
    ).to(w.dtype)  # (J) frequencies of the rfft half, ω = -1 left out
    z = 2 * (1 - omega) / (1 + omega)  # (J)
    p = P[:, 0]  # (H N2)
    dt_ = dt[:, None]  # (H 1)
    v = (
        torch.cat([C * B, C * p, (p.conj() * B)[None], (p.conj() * p)[None]]) * dt_
    )  # (2c+2 H N2): Δ C̃B, Δ C̃P, Δ P̄B, Δ P̄P
    poles = (dt_ * w).expand(v.shape)  # (2c+2 H N2)
    r = cauchy(v.reshape(-1, N2), z, poles.reshape(-1, N2)).reshape(2 * c + 2, H, -1)  # (., H J)
    r00, r01, r10, r11 = r[:c], r[c : 2 * c], r[2 * c], r[2 * c + 1]  # (c H J) (c H J) (H J) (H J)
    K_hat = (r00 - r01 * r10 / (1 + r11)) * (2 / (1 + omega))  # (c H J)
    if L % 2 == 0:
        nyquist = dt * (C * B).sum(-1).real  # (c H): (Δ/2) Σ_full C̃ B = Δ Re Σ_half C̃ B
        K_hat = torch.cat([K_hat, nyquist[..., None].to(K_hat.dtype)], dim=-1)  # (c H L/2+1)
    return torch.fft.irfft(K_hat, n=L)  # (c H L)


def power_kernel(Ab: torch.Tensor, Bb: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """``K[..., l] = C Ā^l B̄`` for ``l < L`` by repeated squaring: ``⌈log₂ L⌉`` doublings.

    The columns ``V = (B̄, Ā B̄, …, Ā^{m-1} B̄)`` double at each step, ``V ← (V, Ā^m V)``, and
    ``Ā^m ← (Ā^m)²``: ``O(N³ log L + N² L)`` per channel instead of ``L`` dependent
    matrix-vector products. Equals :func:`ssm.ssm_kernel`. Chapter 1, *From ODE to S4*, section
    "Two views of one model: recurrent and convolutional".

    Args:
        Ab: ``(H, N, N)``; Bb: ``(H, N)``; C: ``(c, H, N)``; L: kernel length.

    Returns:
        ``(c, H, L)``.
    """
    V = Bb[..., None]  # (H N 1)
    power = Ab  # Ā^m, m the number of columns of V
    while V.shape[-1] < L:
        V = torch.cat([V, power @ V], dim=-1)  # (H N 2m)
        if V.shape[-1] < L:
            power = power @ power  # Ā^{2m}
    return torch.einsum("chn,hnl->chl", C, V[..., :L])  # (c H L)


def c_from_c_tilde(Ab: torch.Tensor, C_tilde: torch.Tensor, L: int) -> torch.Tensor:
    """The readout ``C = C̃ (I - Ā^L)⁻¹`` of the recurrence, from S4's trained ``C̃``.

    ``Ab`` ``(H, N, N)``, ``C_tilde`` ``(c, H, N)``; returns ``(c, H, N)``. Chapter 2, *S4 v2: how
    to train your HiPPO*.
    """
    eye = torch.eye(Ab.shape[-1], dtype=Ab.dtype, device=Ab.device)
    M = eye - torch.linalg.matrix_power(Ab, L)  # (H N N)
    return torch.linalg.solve(M, C_tilde[..., None, :], left=False)[..., 0, :]  # (c H N)


def _log_dt(H: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """``log Δ`` uniform in ``[log dt_min, log dt_max]``, one per channel: ``(H,)``."""
    return torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def _complex_normal(*shape: int) -> torch.Tensor:
    """Standard complex normal entries (variance 1: ``N(0, ½)`` real and imaginary parts), in
    the complex dtype of the default dtype."""
    return torch.randn(*shape, dtype=torch.get_default_dtype().to_complex())


def _legs_half(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in NPLR form, the eigenvalues of positive imaginary part: ``w, P, B``
    ``(N2,)``, ``(1, N2)``, ``(N2,)`` complex128 (:func:`ssm.hippo.nplr`)."""
    w, P, B, _ = nplr("legs", N)
    keep = torch.argsort(w.imag)[N // 2 :]  # (N2) one of each conjugate pair
    if not bool((w.imag[keep] > 0).all()):
        raise RuntimeError(f"HiPPO-LegS of size {N} has a real eigenvalue; pick another d_state")
    return w[keep], P[:, keep], B[keep]


def _stable_shift(A: torch.Tensor) -> torch.Tensor:
    """``A - (α(A) + 1) I`` per channel, ``α`` the largest real part of an eigenvalue: the
    spectrum moved so its rightmost eigenvalue sits at ``-1``, as HiPPO-LegS's does."""
    alpha = torch.linalg.eigvals(A.double()).real.amax(-1).to(A.dtype)  # (H)
    return A - (alpha + 1)[:, None, None] * torch.eye(A.shape[-1], dtype=A.dtype)


class NPLRKernel(nn.Module):
    """S4's SSMs, ``H`` of them, as normal plus low rank; their kernels ``(c, H, L)``.

    Parameters (complex ones stored as real views, last dim 2, for the optimizers):
    ``w = -exp(log_w_real) + i w_imag`` ``(H, N2)`` (real part kept negative, as the updated
    S4), ``P`` ``(H, 1, N2)``, ``B`` ``(H, N2)``, ``C`` ``(c, H, N2)`` (``C̃``), ``log_dt``
    ``(H,)``. ``w, P, B, log_dt`` are SSM parameters; with ``train_A=False`` ``w`` and ``P``
    are buffers.

    Inits: ``legs``: every channel starts from HiPPO-LegS (:func:`ssm.hippo.nplr`, ``B`` and
    ``P`` in the eigenbasis). ``random`` (the S4 paper's "random NPLR"): ``Re w ~ -U[0.1, 1)``,
    ``Im w ~ U[0, N)``, ``P, B`` standard complex normal; ``A + Aᴴ = 2 Re diag(w) - 2 p pᴴ`` is
    negative definite, so every such ``A`` is stable. ``C̃`` is standard complex normal.
    Chapter 2, *S4 v2: how to train your HiPPO*.
    """

    def __init__(self, cfg: S4Config, H: int, channels: int) -> None:
        super().__init__()
        N2 = cfg.d_state // 2
        self.L = cfg.l_max
        if cfg.init == "legs":
            cdtype = torch.get_default_dtype().to_complex()
            w, P, B = (t.to(cdtype).expand(H, *t.shape) for t in _legs_half(cfg.d_state))
        else:
            w = torch.complex(-(0.1 + 0.9 * torch.rand(H, N2)), cfg.d_state * torch.rand(H, N2))
            P, B = _complex_normal(H, 1, N2), _complex_normal(H, N2)
        register(self, "log_w_real", torch.log(-w.real).contiguous(), trainable=cfg.train_A)
        register(self, "w_imag", w.imag.contiguous(), trainable=cfg.train_A)
        register(self, "P", torch.view_as_real(P.contiguous()).clone(), trainable=cfg.train_A)
        register(self, "B", torch.view_as_real(B.contiguous()).clone())
        register(self, "log_dt", _log_dt(H, cfg.dt_min, cfg.dt_max))
        C = torch.view_as_real(_complex_normal(channels, H, N2))
        register(self, "C", C, ssm=False)

    def system(self) -> tuple[torch.Tensor, ...]:
        """``w`` ``(H, N2)``, ``P`` ``(H, 1, N2)``, ``B`` ``(H, N2)``, ``C̃`` ``(c, H, N2)``
        complex, and ``Δ`` ``(H,)``: one of each conjugate pair."""
        w = torch.complex(-torch.exp(self.log_w_real), self.w_imag)
        P, B, C = (torch.view_as_complex(t) for t in (self.P, self.B, self.C))
        return w, P, B, C, torch.exp(self.log_dt)

    def forward(self) -> torch.Tensor:
        """The kernels ``(c, H, L)`` (:func:`nplr_kernel`)."""
        return nplr_kernel(*self.system(), self.L)

    def recurrence(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The discrete full conjugate-pair system in the eigenbasis: ``Ā`` ``(H, N, N)``,
        ``B̄`` ``(H, N)``, ``C`` ``(c, H, N)`` complex, bilinear, ``C`` from ``C̃``."""
        w, P, B, C, dt = self.system()
        w, p, B, C = (torch.cat([t, t.conj()], dim=-1) for t in (w, P[:, 0], B, C))  # (. N)
        A = torch.diag_embed(w) - p[..., :, None] * p.conj()[..., None, :]  # (H N N)
        Ab, Bb = discretize(A, B, dt, "bilinear")  # (H N N) (H N)
        return Ab, Bb, c_from_c_tilde(Ab, C, self.L)


class DenseKernel(nn.Module):
    """``H`` SSMs with a dense real ``A`` ``(H, N, N)``: the ablation's unstructured arm.

    Parameters: ``A`` ``(H, N, N)`` (a buffer with ``train_A=False``), ``B`` ``(H, N)``,
    ``C`` ``(c, H, N)`` (``C̃``, as for NPLR, so that the two arms differ in ``A`` only),
    ``log_dt`` ``(H,)``; ``A, B, log_dt`` are SSM parameters.

    Inits: ``legs``: HiPPO-LegS (:func:`ssm.hippo.transition`) and its ``B``.
    ``random_dense``: ``G/√N`` with ``G`` standard normal ``(N, N)`` (its eigenvalues fill
    roughly the unit disk), moved left by ``(α + 1) I``, ``α`` its largest eigenvalue real part,
    so the rightmost eigenvalue sits at ``-1`` as LegS's. ``random_diagonal``: ``diag(g)``,
    ``g`` standard normal, moved the same way. Random inits draw ``B`` standard normal.
    ``C̃`` is standard normal. Chapter 2, *S4 v2: how to train your HiPPO*.
    """

    def __init__(self, cfg: S4Config, H: int, channels: int) -> None:
        super().__init__()
        N = cfg.d_state
        self.L = cfg.l_max
        if cfg.init == "legs":
            A, B = transition("legs", N)
            dtype = torch.get_default_dtype()
            A, B = A.to(dtype).expand(H, N, N).clone(), B.to(dtype).expand(H, N).clone()
        elif cfg.init == "random_dense":
            A, B = _stable_shift(torch.randn(H, N, N) / math.sqrt(N)), torch.randn(H, N)
        else:
            A, B = _stable_shift(torch.diag_embed(torch.randn(H, N))), torch.randn(H, N)
        register(self, "A", A, trainable=cfg.train_A)
        register(self, "B", B)
        register(self, "log_dt", _log_dt(H, cfg.dt_min, cfg.dt_max))
        register(self, "C", torch.randn(channels, H, N), ssm=False)

    def recurrence(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Ā`` ``(H, N, N)``, ``B̄`` ``(H, N)`` (bilinear) and ``C`` ``(c, H, N)`` from ``C̃``."""
        Ab, Bb = discretize(self.A, self.B, torch.exp(self.log_dt), "bilinear")  # (H N N) (H N)
        return Ab, Bb, c_from_c_tilde(Ab, self.C, self.L)

    def forward(self) -> torch.Tensor:
        """The kernels ``(c, H, L)`` (:func:`power_kernel`)."""
        return power_kernel(*self.recurrence(), self.L)


class S4(ConvolutionalLayer):
    """The S4 layer (S4 paper, Section 3 and Appendix; updated as in the S4D paper).

    ``forward``: per channel ``h``, ``y_h = K̄_h * u_h + D_h u_h``, then GELU, dropout and S4's
    output projection ``Linear(H, 2H)`` + GLU (:class:`ssm.layers._conv.ConvolutionalLayer`,
    shared with DSS and S4D).

    ``step``: the recurrence ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = Re(C x_k) + D u_k``, with
    ``C = C̃ (I - Ā^L)⁻¹`` (:func:`c_from_c_tilde`), then the same position-wise output:
    steps over a sequence equal ``forward``. A bidirectional layer has no step.

    Shapes: ``x`` and ``y`` ``(batch, length, d_model)`` with ``length <= l_max``; in step
    mode ``(batch, d_model)``. Chapters 1, *From ODE to S4*, and 2, *S4 v2: how to train your
    HiPPO*.
    """

    def __init__(self, cfg: S4Config, d_model: int) -> None:
        channels = 2 if cfg.bidirectional else 1
        kernel = NPLRKernel if cfg.parameterization == "nplr" else DenseKernel
        super().__init__(cfg, d_model, kernel(cfg, d_model, channels))

    def init_state(self, batch: int) -> S4State:
        """The zero state for ``batch`` sequences, with the discrete system of the current
        parameters (call again after the parameters change)."""
        _checks.positive_int("batch", batch)
        self._check_unidirectional()
        with torch.autocast(device_type=self.D.device.type, enabled=False):
            Ab, Bb, C = self.kernel.recurrence()  # (H N N) (H N) (c H N)
        x = Bb.new_zeros(batch, *Bb.shape)  # (B H N)
        return S4State(x, Ab, Bb, C[0])

    def step(self, x_t: torch.Tensor, state: S4State) -> tuple[torch.Tensor, S4State]:
        """One step: ``x_t`` ``(batch, d_model)`` and the state → ``y_t`` ``(batch, d_model)``
        and the next state."""
        self._check_step(x_t, state, S4State)
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            u = x_t.to(self._work_dtype())  # (B H)
            s = torch.einsum("hmn,bhn->bhm", state.Ab, state.x) + state.Bb * u[..., None]  # (B H N)
            y = torch.einsum("hn,bhn->bh", state.C, s).real + self.D * u  # (B H)
        return self._output(y), state._replace(x=s)
