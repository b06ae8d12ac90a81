"""The recurrent view of a discrete SSM: ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = C x_k + D u_k``.

- :func:`recurrence`: any ``(Ā, B̄, C)``. Explained in the book's chapter *From ODE to S4*,
  section "Two views of one model: recurrent and convolutional".
- :func:`dss_recurrence` and :func:`dss_step_system`: the recurrent views of DSS's two kernels
  (:func:`ssm.dss_kernel`), with DSS-softmax's two stable cases (chapter *DSS*).
- :func:`associative_scan` and :func:`s5_scan`: the log-depth parallel scan of a diagonal linear
  recurrence and S5's MIMO SSM on it.

Dimension letters: L length, N state size, H channels; ``(...)`` batch dimensions.
"""

from __future__ import annotations

import torch

from . import _checks
from .discretize import discretize, expm1_over_x
from .kernels import DSS_EPS, dss_inputs, reciprocal, softmax_normalizer


def recurrence(
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | float | None = None,
    *,
    diagonal: bool | None = None,
    x0: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run the SSM step by step from ``x_{-1} = x0`` (zero by default).

    Args:
        Ab: dense ``(..., N, N)`` or diagonal ``(..., N)`` (1-D, or ``diagonal=True``).
        Bb, C: ``(..., N)``.
        u: input ``(..., L)``; its batch dims broadcast with the system's.
        D: skip term, a scalar or a tensor that broadcasts to the batch dims ``(...)`` of the
            output (without enlarging them).
        x0: initial state ``(..., N)``; its batch dims broadcast with the others.
        return_state: also return the last state ``x_{L-1}`` ``(..., N)``.

    Returns:
        ``y`` ``(..., L)`` (and the last state), in the promoted dtype of the inputs.

    Explained in the chapter *From ODE to S4*, section "Two views of one model: recurrent and
    convolutional".
    """
    Ab, Bb, C, u = (_checks.tensor(n, t) for n, t in (("Ab", Ab), ("Bb", Bb), ("C", C), ("u", u)))
    x0 = None if x0 is None else _checks.tensor("x0", x0)
    _checks.one_device(Ab=Ab, Bb=Bb, C=C, u=u, D=D, x0=x0)
    diagonal = Ab.ndim == 1 if diagonal is None else diagonal
    N = Ab.shape[-1] if diagonal else _checks.square("Ab", Ab)
    _checks.last_dim("Bb", Bb, N, "the state size N of Ab")
    _checks.last_dim("C", C, N, "the state size N of Ab")
    if u.ndim < 1 or u.shape[-1] < 1:
        raise ValueError(f"u must have shape (..., L) with L >= 1, got {tuple(u.shape)}")
    shapes = {
        "Ab": Ab.shape[: -2 if not diagonal else -1],
        "Bb": Bb.shape[:-1],
        "C": C.shape[:-1],
        "u": u.shape[:-1],
    }
    inputs = [Ab, Bb, C, u]
    if x0 is not None:
        _checks.last_dim("x0", x0, N, "the state size N of Ab")
        shapes["x0"] = x0.shape[:-1]
        inputs.append(x0)
    batch = _checks.batch_shape(**shapes)
    D = _checks.skip_term(D, batch, "the output")
    if isinstance(D, torch.Tensor):
        inputs.append(D)
    dtype = _checks.common_dtype(*inputs)
    Ab, Bb, C, u = Ab.to(dtype), Bb.to(dtype), C.to(dtype), u.to(dtype)
    x = u.new_zeros(*batch, N) if x0 is None else x0.to(dtype).expand(*batch, N)  # (... N)
    ys = []
    for k in range(u.shape[-1]):
        Ax = Ab * x if diagonal else (Ab @ x.unsqueeze(-1)).squeeze(-1)  # (... N)
        x = Ax + Bb * u[..., k, None]  # (... N)
        ys.append((C * x).sum(-1))  # (...)
    y = torch.stack(ys, dim=-1)  # (... L)
    if D is not None:
        y = y + (D.to(dtype)[..., None] if isinstance(D, torch.Tensor) else D) * u
    return (y, x) if return_state else y


def dss_step_system(
    Lambda: torch.Tensor,
    W: torch.Tensor,
    dt: float | torch.Tensor,
    L: int,
    k: int,
    variant: str = "exp",
    *,
    eps: float = DSS_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Ā, B̄_k, C_k)`` of step ``k`` of DSS's recurrent view, each ``(H, N)`` complex.

    Step ``k`` is ``x̃_k = Ā x̃_{k-1} + B̄_k u_k``, ``y_k = 2 Re(C_k x̃_k)`` (DSS paper, §3.3):

    - ``exp``: ``Ā = e^{λΔ}``, ``B̄ = (e^{λΔ} - 1)/λ``, ``C = W̃``, the same at every step;
    - ``softmax``, ``Re λ ≤ 0``: ``x̃_k = e^{λΔ} x̃_{k-1} + u_k`` and
      ``x_k = x̃_k (e^{λΔ} - 1) / (λ (e^{λΔL} - 1))``: ``Ā = e^{λΔ}``, ``B̄ = 1``,
      ``C = W / (λ S)``;
    - ``softmax``, ``Re λ > 0``: ``x̃_k = x̃_{k-1} + e^{-kλΔ} u_k`` and
      ``x_k = x̃_k e^{λΔ(k-(L-1))} (e^{-λΔ} - 1) / (λ (e^{-λΔL} - 1))``: ``Ā = 1``,
      ``B̄_k = e^{-kλΔ}``, ``C_k = W e^{λΔ(k-(L-1))} / (λ S)``.

    ``S`` is the softmax's row sum (:func:`ssm.kernels.softmax_normalizer`); the softmax
    recurrence holds for ``k < L`` only, ``L`` the length it normalizes over. No factor
    overflows: every exponent has a real part ``≤ 0``.
    """
    Lambda, W, dt = dss_inputs(Lambda, W, dt, L, variant)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < L:
        raise ValueError(f"k must be an integer step in [0, L) = [0, {L}), got {k!r}")
    Ab, Bb, C = _dss_steps(Lambda, W, dt, L, torch.tensor([k]), variant, eps)
    return Ab, Bb[..., 0], C[..., 0]


def _dss_steps(Lambda, W, dt, L, k, variant, eps):
    """:func:`dss_step_system` at the steps ``k`` ``(T,)``: ``Ā`` ``(H, N)``, ``B̄`` and ``C``
    ``(H, N, T)``, from checked arguments (``dt`` ``(H, 1)``)."""
    dL = Lambda * dt  # (H N)
    k = k.to(device=dL.device, dtype=dL.real.dtype)  # (T)
    if variant == "exp":
        ones = torch.ones(len(k), dtype=dL.dtype, device=dL.device)  # (T)
        return torch.exp(dL), (expm1_over_x(dL) * dt)[..., None] * ones, W[..., None] * ones
    backward, x, S = softmax_normalizer(dL, L)  # (H N) each
    C = (W * reciprocal(Lambda, eps) * reciprocal(S, eps))[..., None]  # (H N 1)
    back = backward[..., None]  # (H N 1)
    Ab = torch.where(backward, torch.ones_like(dL), torch.exp(dL))  # (H N)
    Bb = torch.where(back, torch.exp(x[..., None] * k), 1)  # (H N T), x = -λΔ where backward
    C = torch.where(back, C * torch.exp(x[..., None] * (L - 1 - k)), C)  # (H N T)
    return Ab, Bb, C


def dss_recurrence(
    Lambda: torch.Tensor,
    W: torch.Tensor,
    dt: float | torch.Tensor,
    u: torch.Tensor,
    variant: str = "exp",
    *,
    L: int | None = None,
    eps: float = DSS_EPS,
) -> torch.Tensor:
    """DSS run step by step (:func:`dss_step_system`): equal to ``u`` convolved with
    :func:`ssm.dss_kernel`, without overflow for any ``Re λ``.

    Args:
        Lambda, W: ``(H, N)`` complex.
        dt: ``Δ > 0``, a float or ``(H,)``.
        u: input ``(..., H, T)`` real, ``T ≤ L``.
        variant: ``"exp"`` or ``"softmax"``.
        L: the kernel length the softmax normalizes over; the input length ``T`` by default.

    Returns:
        ``y`` ``(..., H, T)`` real, ``y_k = Σ_{j≤k} K_j u_{k-j}``.
    """
    u = _checks.tensor("u", u, complex_ok=False)
    if u.ndim < 2 or u.shape[-2] != Lambda.shape[0] or u.shape[-1] < 1:
        raise ValueError(
            f"u must have shape (..., H, T) with H={Lambda.shape[0]} (the rows of Lambda) and "
            f"T >= 1, got {tuple(u.shape)}"
        )
    T = u.shape[-1]
    L = T if L is None else L
    if T > _checks.positive_int("L", L):
        raise ValueError(f"u has length {T}, longer than the kernel length L={L}")
    Lambda, W, dt = dss_inputs(Lambda, W, dt, L, variant)
    Ab, Bb, C = _dss_steps(Lambda, W, dt, L, torch.arange(T), variant, eps)  # (H N) (H N T) x2
    inflow = Bb * u[..., None, :].to(Bb.dtype)  # (... H N T): B̄_k u_k
    x = torch.zeros_like(inflow[..., 0])  # (... H N)
    ys = []
    for k in range(T):
        x = Ab * x + inflow[..., k]  # (... H N)
        ys.append(2 * (C[..., k] * x).sum(-1).real)  # (... H)
    return torch.stack(ys, dim=-1)  # (... H T)


# S5: one MIMO SSM with a diagonal state matrix, run by a parallel scan.
# Smith, Warrington & Linderman, "Simplified State Space Layers for Sequence Modeling" (S5),
# arXiv:2208.04933v3. Dimension letters: T or L length, P states, H channels.


def associative_scan(
    Ab: torch.Tensor, Bu: torch.Tensor, *, x0: torch.Tensor | None = None
) -> torch.Tensor:
    """The states of ``x_k = Ā_k ⊙ x_{k-1} + b_k`` (``k = 0..T-1``, ``x_{-1} = x0``, zero by
    default) by a parallel scan over the time axis.

    S5 paper, Section 2.2 and Appendix H: with the elements ``c_k = (Ā_k, b_k)`` and the
    associative operator

        (a_1, b_1) • (a_2, b_2) = (a_2 ⊙ a_1, a_2 ⊙ b_1 + b_2),

    ``c_0 • c_1 • … • c_k = (Ā_k ⋯ Ā_0, x_k)``. The scan is Hillis & Steele's: in round
    ``r = 0, 1, …, ⌈log₂ T⌉ - 1`` every element ``k ≥ s = 2^r`` takes in element ``k - s``
    (``c_{k-s} • c_k``), one tensor op over the whole time axis per round: depth ``⌈log₂ T⌉``,
    work ``O(T log T)``, no padding. A constant ``Ā`` needs only its powers ``Ā^s``.

    Args:
        Ab: ``Ā``, diagonal: constant ``(P,)`` or per step ``(..., T, P)``, real or complex.
        Bu: ``b_k`` ``(..., T, P)``, ``T ≥ 1``; its batch dims broadcast with ``Ab``'s.
        x0: initial state ``(..., P)``, folded into the first element (``b_0 + Ā_0 x0``).

    Returns:
        ``x`` ``(..., T, P)``: every state, in the promoted dtype of the inputs.
    """
    Ab, Bu = _checks.tensor("Ab", Ab), _checks.tensor("Bu", Bu)
    _checks.one_device(Ab=Ab, Bu=Bu, x0=x0)
    if Bu.ndim < 2 or Bu.shape[-2] < 1:
        raise ValueError(f"Bu must have shape (..., T, P) with T >= 1, got {tuple(Bu.shape)}")
    P, T = Bu.shape[-1], Bu.shape[-2]
    constant = Ab.ndim == 1
    _checks.last_dim("Ab", Ab, P, "the state size P of Bu")
    if not constant and (Ab.ndim < 2 or not _checks.broadcasts(Ab.shape, Bu.shape)):
        raise ValueError(
            f"Ab must be constant (P,) or per step (..., T, P) broadcasting with Bu "
            f"{tuple(Bu.shape)}, got {tuple(Ab.shape)}"
        )
    dtype = _checks.common_dtype(Ab, Bu, *([] if x0 is None else [_checks.tensor("x0", x0)]))
    a, b = Ab.to(dtype), Bu.to(dtype)  # (P) or (... T P), (... T P)
    if not constant:
        a, b = torch.broadcast_tensors(a, b)  # (... T P) each
    if x0 is not None:
        _checks.last_dim("x0", x0, P, "the state size P of Bu")
        first = (a if constant else a[..., 0, :]) * x0.to(dtype) + b[..., 0, :]  # (... P)
        b = torch.cat([first[..., None, :], b[..., 1:, :].expand(*first.shape[:-1], T - 1, P)], -2)
    s = 1
    while s < T:
        a_s = a if constant else a[..., s:, :]  # (P) or (... T-s P): Ā^s, or the products
        b = torch.cat([b[..., :s, :], a_s * b[..., :-s, :] + b[..., s:, :]], dim=-2)  # (... T P)
        a = a * a if constant else torch.cat([a[..., :s, :], a_s * a[..., :-s, :]], dim=-2)
        s *= 2
    return b


def s5_scan(
    Lambda: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    u: torch.Tensor,
    dt: torch.Tensor | float,
    D: torch.Tensor | None = None,
    *,
    method: str = "zoh",
    conj_sym: bool = False,
    x0: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The S5 SSM: one multi-input, multi-output SSM over all ``H`` channels, by
    :func:`associative_scan`.

    S5 paper, Section 3 (diagonalized, discretized MIMO SSM)::

        x_k = Λ̄_k x_{k-1} + B̄_k u_k,    y_k = Re(C̃ x_k) + D ⊙ u_k,

    with ``Λ̄_k = e^{ΛΔ_k}`` and ``B̄_k = Λ⁻¹(Λ̄_k - I) B̃`` (``zoh``), or
    ``Λ̄_k = (I - Δ_k/2 Λ)⁻¹(I + Δ_k/2 Λ)`` and ``B̄_k = (I - Δ_k/2 Λ)⁻¹ Δ_k B̃`` (``bilinear``)
    from :func:`ssm.discretize`. A constant ``Δ`` is the paper's LTI layer, whose output is the
    convolution with ``K_l = Re(C̃ Λ̄^l B̄)`` (``H × H`` per lag); a ``Δ_k`` per step is its
    variant for irregularly sampled sequences. With ``conj_sym`` only one of each conjugate pair
    of states is kept and ``Re`` becomes ``2 Re``.

    Args:
        Lambda: ``Λ`` ``(P,)`` complex, the diagonal state matrix.
        B, C: ``B̃`` ``(P, H)`` and ``C̃`` ``(H, P)`` complex.
        u: input ``(..., L, H)`` real, ``L ≥ 1``.
        dt: ``Δ > 0``: a float, ``(P,)`` (one per state), or ``(..., L, P)`` (per step).
        D: skip term ``(H,)`` real, or ``None``.
        method: ``"zoh"`` or ``"bilinear"``.
        conj_sym: output ``2 Re(C̃ x_k)``.
        x0: state before the first step ``(..., P)`` complex (zero by default).
        return_state: also return the last state ``x_{L-1}`` ``(..., P)``.

    Returns:
        ``y`` ``(..., L, H)`` real (and the last state), in the promoted precision of the inputs.
    """
    Lambda, B, C, u, step = _s5_inputs(Lambda, B, C, u, dt, D, x0)
    _checks.choice("method", method, ("zoh", "bilinear"))
    dtype = _checks.common_dtype(Lambda, B, C, u.to(step.dtype)).to_complex()
    Lambda, B, C = Lambda.to(dtype), B.to(dtype), C.to(dtype)
    A, ones = Lambda[:, None], torch.ones_like(Lambda)[:, None]  # (P 1): P systems of size 1
    Ab, gain = discretize(A, ones, step, method, diagonal=True)  # (P 1) or (... L P 1)
    Ab, gain = Ab[..., 0], gain[..., 0]  # (P) or (... L P): Λ̄_k, and B̄_k = gain_k ⊙ B̃
    Bu = gain * (u.to(dtype) @ B.T)  # (... L P): B̄_k u_k
    x = associative_scan(Ab, Bu, x0=x0)  # (... L P)
    y = (2 if conj_sym else 1) * (x @ C.T).real  # (... L H)
    if D is not None:
        y = y + D.to(y.dtype) * u.to(y.dtype)
    return (y, x[..., -1, :]) if return_state else y


def _s5_inputs(Lambda, B, C, u, dt, D, x0):
    """:func:`s5_scan`'s arguments checked: ``Λ`` ``(P,)``, ``B̃`` ``(P, H)``, ``C̃`` ``(H, P)``,
    ``u`` ``(..., L, H)`` real, ``D`` ``(H,)`` and ``Δ`` ``()``, ``(P,)`` or ``(..., L, P)``."""
    named = (("Lambda", Lambda), ("B", B), ("C", C), ("u", u))
    Lambda, B, C, u = (_checks.tensor(name, t) for name, t in named)
    _checks.one_device(Lambda=Lambda, B=B, C=C, u=u, dt=dt, D=D, x0=x0)
    if Lambda.ndim != 1:
        raise ValueError(f"Lambda must have shape (P,), got {tuple(Lambda.shape)}")
    if u.is_complex() or u.ndim < 2 or u.shape[-2] < 1:
        raise ValueError(f"u must be real with shape (..., L, H), L >= 1, got {tuple(u.shape)}")
    P, H = Lambda.shape[0], u.shape[-1]
    for name, t, shape in (("B", B, (P, H)), ("C", C, (H, P))):
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} (P from Lambda, H from u), got {tuple(t.shape)}"
            )
    _checks.real("D", D, (H,), "one per channel of u")
    step = _checks.positive_step("dt", dt, Lambda)
    per_step = step.ndim >= 2 and _checks.broadcasts(step.shape[:-1], u.shape[:-1])
    if (step.ndim > 0 and step.shape[-1] != P) or (step.ndim >= 2 and not per_step):
        raise ValueError(
            f"dt must be a float, one per state ({P},) or per step (..., L, {P}) broadcasting "
            f"with u's {tuple(u.shape[:-1])}, got shape {tuple(step.shape)}"
        )
    return Lambda, B, C, u, step
