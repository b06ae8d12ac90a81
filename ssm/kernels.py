"""Convolution kernels of discrete SSMs: ``K̄ = (C B̄, C Ā B̄, …, C Ā^{L-1} B̄)``.

- :func:`ssm_kernel`: the definition (power series), for any ``Ā``.
- :func:`s4_kernel`: S4's algorithm for a normal-plus-low-rank ``A`` (truncated generating
  function at the roots of unity, Woodbury identity, Cauchy kernel, inverse FFT).
- :func:`s4d_kernel`: S4D's Vandermonde product for a diagonal ``A``.
- :func:`dss_kernel`: DSS's two kernels (``exp`` and ``softmax``) of a diagonal ``Λ``, through the
  same Vandermonde product; :func:`dss_kernel_reference` writes them as the DSS paper does, with
  its corrected complex softmax (:func:`complex_softmax`).
- :func:`ema_kernel`: Mega's multi-dimensional damped EMA, a real diagonal SSM, through the same
  Vandermonde product; :func:`ema_recurrence` is its step-by-step definition.

Explained in the book's chapter *From ODE to S4* (the power series and S4's algorithm) and in
*Making SSMs fast* (the S4D kernel as a Vandermonde product), DSS's two kernels in *DSS*, the
EMA in *Mega*.
Dimension letters: H channels, N state size, L length, r rank of the low-rank term; ``(...)``
batch dimensions.
"""

from __future__ import annotations

import math

import torch

from . import _checks
from .discretize import discretize, expm1_over_x
from .ops.vandermonde import log_eigenvalues, vandermonde


def ssm_kernel(
    Ab: torch.Tensor,
    Bb: torch.Tensor,
    C: torch.Tensor,
    L: int,
    *,
    diagonal: bool | None = None,
) -> torch.Tensor:
    """``K[..., l] = C Ā^l B̄`` for ``l = 0..L-1``, by repeated multiplication: ``O(N² L)``.

    The definition of the convolution kernel (chapter *From ODE to S4*, section "Two views of
    one model: recurrent and convolutional").

    Args:
        Ab: dense ``(..., N, N)`` or diagonal ``(..., N)`` (1-D, or ``diagonal=True``).
        Bb, C: ``(..., N)``; batch dims broadcast with those of ``Ab``.
        L: kernel length.

    Returns:
        ``K`` ``(..., L)`` in the promoted dtype of the inputs.
    """
    Ab, Bb, C = (_checks.tensor(n, t) for n, t in (("Ab", Ab), ("Bb", Bb), ("C", C)))
    _checks.positive_int("L", L)
    _checks.one_device(Ab=Ab, Bb=Bb, C=C)
    diagonal = Ab.ndim == 1 if diagonal is None else diagonal
    N = Ab.shape[-1] if diagonal else _checks.square("Ab", Ab)
    _checks.last_dim("Bb", Bb, N, "the state size N of Ab")
    _checks.last_dim("C", C, N, "the state size N of Ab")
    _checks.batch_shape(Ab=Ab.shape[: -1 if diagonal else -2], Bb=Bb.shape[:-1], C=C.shape[:-1])
    dtype = _checks.common_dtype(Ab, Bb, C)
    Ab, v, C = Ab.to(dtype), Bb.to(dtype), C.to(dtype)
    K = []
    for _ in range(L):
        K.append((C * v).sum(-1))  # C Ā^l B̄: (...)
        v = Ab * v if diagonal else (Ab @ v.unsqueeze(-1)).squeeze(-1)  # Ā^{l+1} B̄: (... N)
    return torch.stack(K, dim=-1)  # (... L)


def s4_kernel(
    w: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: float | torch.Tensor,
    L: int,
    *,
    c_tilde: bool = False,
) -> torch.Tensor:
    """S4 convolution kernel of ``A = diag(w) - Pᵀ P̄`` (S4 paper, Algorithm 1), bilinear.

    All of ``w, P, B, C`` are in the eigenbasis of the normal part (as returned by
    :func:`ssm.hippo.nplr`, with ``C ← C V``). With ``(Ā, B̄)`` the bilinear discretization
    (:func:`ssm.discretize`) and ``ω_j = exp(-2πi j / L)``, the truncated generating function is
    ``K̂(ω) = Σ_{l<L} C Ā^l B̄ ω^l = C̃ (I - Āω)⁻¹ B̄`` with ``C̃ = C (I - Ā^L)``, and
    ``(I - Āω)⁻¹ B̄ = R(ω) B`` with ``R(ω) = 2 ((2/Δ)(1-ω) I - (1+ω) A)⁻¹``. For the diagonal part
    ``R`` is a Cauchy kernel, ``R_n(ω) = 2 / ((2/Δ)(1-ω) - (1+ω) w_n)``; the low-rank part
    follows from the Woodbury identity:
    ``K̂ = k₀₀ - k₀₁ s (I + s k₁₁)⁻¹ k₁₀`` with ``s = (1+ω)/2`` and
    ``k_ab(ω) = Σ_n a_n b_n R_n(ω)`` for ``(a, b) ∈ {C̃, P̄} × {B, P}``. Finally
    ``K = iFFT(K̂)``. Explained in the chapter *From ODE to S4*, section "Computing the kernel
    fast: the S4 algorithm".

    Args:
        w: eigenvalues ``(..., N)`` complex.
        P: low-rank factor ``(..., r, N)``.
        B, C: ``(..., N)``.
        dt: step ``Δ``, finite and ``> 0``: a float or a real tensor that broadcasts with the
            batch dims ``(...)``.
        L: kernel length.
        c_tilde: ``C`` is already ``C̃ = C (I - Ā^L)`` (S4 learns ``C̃`` directly).

    Returns:
        The kernel ``(..., L)``, complex (its imaginary part vanishes for a real SSM).
    """
    w, P, B, C = (_checks.tensor(n, t) for n, t in (("w", w), ("P", P), ("B", B), ("C", C)))
    _checks.positive_int("L", L)
    _checks.one_device(w=w, P=P, B=B, C=C, dt=dt)
    N = w.shape[-1]
    if P.ndim < 2 or P.shape[-1] != N:
        raise ValueError(f"P must have shape (..., r, N) with N={N}, got {tuple(P.shape)}")
    _checks.last_dim("B", B, N, "the state size N of w")
    _checks.last_dim("C", C, N, "the state size N of w")
    _checks.batch_shape(w=w.shape[:-1], P=P.shape[:-2], B=B.shape[:-1], C=C.shape[:-1])
    cdtype = (
        torch.complex128
        if torch.float64 in {t.real.dtype for t in (w, P, B, C)}
        else (torch.complex64)
    )
    w, P, B, C = (t.to(cdtype) for t in (w, P, B, C))
    A = torch.diag_embed(w) - P.transpose(-1, -2) @ P.conj()  # (... N N)
    Ab, Bb = discretize(A, B, dt, "bilinear")  # (... N N), (... N); checks dt
    dt = torch.as_tensor(dt, dtype=w.real.dtype, device=w.device)[..., None, None]  # (... 1 1)
    if not c_tilde:
        C = C - (C[..., None, :] @ torch.linalg.matrix_power(Ab, L))[..., 0, :]
    omega = torch.exp(-2j * math.pi * torch.arange(L, dtype=w.real.dtype, device=w.device) / L)
    omega = omega.to(cdtype)[:, None]  # (L 1)
    denom = (2 / dt) * (1 - omega) - (1 + omega) * w[..., None, :]  # (... L N)
    # A frequency where some (2/Δ)(1-ω) = (1+ω) w_n (e.g. ω = 1 with w_n = 0, as for HiPPO-FouT)
    # is a pole of the diagonal part only: there the kernel is evaluated densely instead.
    singular = denom.abs() < 1e-9 * (2 / dt.abs())  # (... L N)
    R = 2 / torch.where(singular, torch.ones_like(denom), denom)  # (... L N)
    left = torch.cat([C[..., None, :], P.conj()], dim=-2)  # (... 1+r N): C̃, P̄
    right = torch.cat([B[..., None, :], P], dim=-2)  # (... 1+r N): B, P
    k = torch.einsum("...an,...ln,...bn->...lab", left, R, right)  # (... L 1+r 1+r)
    k00, k01, k10, k11 = k[..., :1, :1], k[..., :1, 1:], k[..., 1:, :1], k[..., 1:, 1:]
    s = ((1 + omega) / 2)[..., None]  # (L 1 1)
    eye = torch.eye(k11.shape[-1], dtype=cdtype, device=w.device)
    K_hat = (k00 - k01 @ torch.linalg.solve(eye + s * k11, s * k10))[..., 0, 0]  # (... L)
    poles = singular.any(-1).reshape(-1, L).any(0).nonzero()[:, 0]  # frequencies to redo: (J)
    if len(poles):
        dense = _dense_generating_function(Ab, Bb, C, omega[poles, 0])  # (... J)
        K_hat = K_hat.clone()
        K_hat[..., poles] = dense
    return torch.fft.ifft(K_hat, dim=-1)  # (... L)


def _dense_generating_function(Ab, Bb, C, omega):
    """``C̃ (I - Āω)⁻¹ B̄`` at a few ``ω`` ``(J,)`` by dense solves, ``O(J N³)``: a fallback.

    ``Ab`` ``(..., N, N)``, ``Bb`` and ``C`` ``(..., N)``; returns ``(..., J)``."""
    eye = torch.eye(Ab.shape[-1], dtype=Ab.dtype, device=Ab.device)
    M = eye - Ab[..., None, :, :] * omega[:, None, None]  # (... J N N)
    rhs = Bb[..., None, :, None].expand((*M.shape[:-1], 1))  # (... J N 1)
    x, info = torch.linalg.solve_ex(M, rhs)
    if bool((info != 0).any()) or not bool(torch.isfinite(x).all()):
        raise ValueError(
            "s4_kernel: Ā has an eigenvalue at an L-th root of unity (e.g. HiPPO-FouT, whose A is "
            "singular), so the generating function has a pole there; use ssm.ssm_kernel instead"
        )
    return (C[..., None, None, :] @ x)[..., 0, 0]  # (... J)


def s4d_kernel(
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: float | torch.Tensor,
    L: int,
    method: str = "zoh",
) -> torch.Tensor:
    """S4D kernel ``K[h, l] = 2 Re(Σ_n C[h,n] B̄[h,n] Ā[h,n]^l)`` by a Vandermonde product.

    ``A, B, C`` hold one eigenvalue of each conjugate pair, so ``2·Re`` adds the other half
    (S4D paper, arXiv:2206.11893v2, Section 3; ``K = (B̄ ∘ C) · V_L(Ā)`` with
    ``V_L(Ā)[n, l] = Ā_n^l``). ``(Ā, B̄)`` come from :func:`ssm.discretize`; the product is
    :func:`ssm.ops.vandermonde.vandermonde` on ``v = C ∘ B̄`` and ``x = log Ā`` (``ΔA`` for ZOH):
    its fused Triton kernel on a GPU, the reference on the CPU and in float64. Explained in the
    chapter *Making SSMs fast*, section "Diagonal kernels: the Vandermonde and Cauchy products".

    Args:
        A: diagonal state matrix ``(H, N)`` complex (any leading dims ``(...)``).
        B, C: ``(H, N)``, complex (real ones are cast).
        dt: step ``Δ``, finite and ``> 0``: a float or a real tensor ``(H,)``.
        L: kernel length.
        method: ``"zoh"`` or ``"bilinear"``.

    Returns:
        The real kernel ``(H, L)``.
    """
    A = _checks.tensor("A", A)
    if not A.is_complex():
        raise ValueError(f"A must be complex (one of each conjugate pair), got {A.dtype}")
    B, C = _checks.tensor("B", B), _checks.tensor("C", C)
    _checks.choice("method", method, ("zoh", "bilinear"))
    _checks.positive_int("L", L)
    _checks.one_device(A=A, B=B, C=C, dt=dt)
    for name, x in (("B", B), ("C", C)):
        if x.shape != A.shape:
            raise ValueError(
                f"{name} must have the shape of A {tuple(A.shape)}, got {tuple(x.shape)}"
            )
    if isinstance(dt, torch.Tensor) and dt.ndim and dt.shape != A.shape[:-1]:
        raise ValueError(
            f"dt must have shape {tuple(A.shape[:-1])} (one step per channel) or be a float, "
            f"got shape {tuple(dt.shape)}"
        )
    Ab, Bb = discretize(A, B.to(A.dtype), dt, method, diagonal=True)  # (H N) (H N); checks dt
    if method == "zoh":  # Ā^l = exp(l ΔA), exact where Ā underflows
        dt = torch.as_tensor(dt, dtype=A.real.dtype, device=A.device)
        log_Ab = dt[..., None] * A  # (H N)
    else:
        log_Ab = log_eigenvalues(Ab)  # (H N)
    v = C.to(A.dtype) * Bb  # (H N)
    rows = (math.prod(A.shape[:-1]), A.shape[-1])  # the channels of any leading dims: (H N)
    K = vandermonde(v.reshape(rows), log_Ab.to(v.dtype).reshape(rows), L)  # (H L)
    return K.reshape(*A.shape[:-1], L)


#: The ``ε`` of DSS's corrected reciprocal (DSS paper, Appendix A.2, and its authors' code).
DSS_EPS = 1e-7
DSS_VARIANTS = ("exp", "softmax")


def reciprocal(z: torch.Tensor, eps: float = DSS_EPS) -> torch.Tensor:
    """``1/z`` with bounded modulus: ``z̄ / (|z|² + ε)``, ``0`` at ``z = 0`` (DSS, App. A.2)."""
    return z.conj() / (z.real**2 + z.imag**2 + eps)


def complex_softmax(P: torch.Tensor, eps: float = DSS_EPS) -> torch.Tensor:
    """Row softmax over the last dim of a complex ``P``: ``e^{P_k} / Σ_r e^{P_r}``, corrected.

    The complex softmax is undefined where the sum vanishes (``softmax(0, iπ)``: ``1 + e^{iπ} =
    0``); DSS (Appendix A.2) divides by the sum through :func:`reciprocal`, which is ``0`` there.
    Each row is first shifted by its largest real part, so ``e^{P}`` never overflows; with
    ``ε = 0`` this is the exact softmax. ``P`` ``(..., L)`` complex; returns ``(..., L)``.
    """
    P = P - P.real.amax(-1, keepdim=True)  # (... L) real parts <= 0
    E = torch.exp(P)  # (... L)
    return E * reciprocal(E.sum(-1, keepdim=True), eps)  # (... L)


def softmax_normalizer(dL: torch.Tensor, L: int) -> tuple[torch.Tensor, ...]:
    """The closed form of the row sums of DSS's softmax, without overflow.

    ``dL = ΛΔ`` ``(H, N)``. Returns ``backward`` (``Re λ > 0``: the row's largest entry is the
    last), ``x = ∓ΛΔ`` with ``Re x ≤ 0``, and ``S = Σ_{j<L} e^{x j} = L · E(xL) / E(x)``
    (``E(z) = (e^z - 1)/z``; ``L`` where ``e^x = 1``), the row sum of ``e^{P - max}``; each
    ``(H, N)``. Used by :func:`dss_kernel` and :func:`ssm.scan.dss_step_system`.
    """
    backward = dL.real > 0  # (H N)
    x = torch.where(backward, -dL, dL)  # (H N)
    S = L * expm1_over_x(x * L) / expm1_over_x(x)  # (H N)
    return backward, x, torch.where(torch.exp(x) == 1, torch.full_like(S, L), S)


def dss_inputs(Lambda, W, dt, L, variant):
    """Checked DSS arguments: ``Λ``, ``W`` ``(H, N)`` complex (``W`` in ``Λ``'s dtype) and ``Δ``
    ``(H, 1)`` real."""
    Lambda, W = _checks.tensor("Lambda", Lambda), _checks.tensor("W", W)
    if not Lambda.is_complex() or Lambda.ndim != 2:
        raise ValueError(
            f"Lambda must be a complex tensor of shape (H, N) (one eigenvalue of each conjugate "
            f"pair), got {Lambda.dtype} of shape {tuple(Lambda.shape)}"
        )
    if W.shape != Lambda.shape:
        raise ValueError(
            f"W must have the shape of Lambda {tuple(Lambda.shape)}, got {tuple(W.shape)}"
        )
    _checks.choice("variant", variant, DSS_VARIANTS)
    _checks.positive_int("L", L)
    _checks.one_device(Lambda=Lambda, W=W, dt=dt)
    if isinstance(dt, torch.Tensor) and dt.dtype in _checks.HALF:
        dt = dt.float()  # half-precision steps: the exponentials need float32 at least
    step = _checks.positive_step("dt", dt, Lambda)
    if step.ndim and step.shape != Lambda.shape[:1]:
        raise ValueError(
            f"dt must be a float or have shape (H,) = ({Lambda.shape[0]},), one step per "
            f"channel, got shape {tuple(step.shape)}"
        )
    W = W.to(Lambda.dtype)
    return Lambda, W, step.to(Lambda.real.dtype).expand(Lambda.shape[:1])[:, None]  # (H 1)


def dss_kernel_reference(
    Lambda: torch.Tensor,
    W: torch.Tensor,
    dt: float | torch.Tensor,
    L: int,
    variant: str = "exp",
    *,
    eps: float = DSS_EPS,
) -> torch.Tensor:
    """DSS's kernels as the DSS paper writes them (arXiv:2203.14343v3, Proposition 1, §3.2).

    With ``P[i, k] = λ_i k Δ`` ``(N, L)``:

    - ``exp``:     ``K = W̃ · Λ⁻¹ (e^{ΛΔ} - I) · elementwise-exp(P)``;
    - ``softmax``: ``K = W · Λ⁻¹ · row-softmax(P)`` (:func:`complex_softmax`, corrected; ``Λ⁻¹``
      through :func:`reciprocal`).

    ``Λ`` holds one eigenvalue of each conjugate pair, so the real kernel is twice the real part.
    Materializes ``P`` ``(H, N, L)``; :func:`dss_kernel` is the same through the Vandermonde
    product. Chapter *DSS*.

    Args:
        Lambda: ``(H, N)`` complex eigenvalues ``λ_i`` (for ``exp`` the layer keeps them in the
            left half-plane, ``Λ = -exp(Λ_re) + i Λ_im``).
        W: ``(H, N)`` complex weights (``W̃`` for ``exp``).
        dt: ``Δ > 0``, a float or ``(H,)``.
        L: kernel length.
        variant: ``"exp"`` or ``"softmax"``.
        eps: the correction of :func:`reciprocal` (``0`` gives the exact formulas).

    Returns:
        The real kernel ``(H, L)``.
    """
    Lambda, W, dt = dss_inputs(Lambda, W, dt, L, variant)
    k = torch.arange(L, dtype=dt.dtype, device=dt.device)  # (L)
    P = (Lambda * dt)[..., None] * k  # (H N L): λ_i k Δ
    if variant == "exp":
        S = (W * expm1_over_x(Lambda * dt) * dt)[..., None] * torch.exp(P)  # (H N L)
    else:
        S = (W * reciprocal(Lambda, eps))[..., None] * complex_softmax(P, eps)  # (H N L)
    return 2 * S.sum(-2).real  # (H L)


def dss_kernel(
    Lambda: torch.Tensor,
    W: torch.Tensor,
    dt: float | torch.Tensor,
    L: int,
    variant: str = "exp",
    *,
    eps: float = DSS_EPS,
) -> torch.Tensor:
    """DSS's kernels by the Vandermonde product: :func:`dss_kernel_reference` in ``O(N + L)``
    memory per channel, on the fused Triton kernel of :func:`ssm.vandermonde` on a GPU.

    Both are the ZOH kernel of a diagonal SSM, ``K_k = 2 Re Σ_i W_i B̄_i e^{λ_i k Δ}``:

    - ``exp``: ``B̄_i = (e^{λ_i Δ} - 1)/λ_i`` (``B = 1``), one product with ``x = ΛΔ``;
    - ``softmax``: ``B̄_i = (e^{λ_i Δ} - 1)/(λ_i (e^{λ_i Δ L} - 1))``. Where ``Re λ > 0`` the
      powers ``e^{λ k Δ}`` overflow, so those states run backwards: with
      ``x_i = ±λ_i Δ`` (the sign that makes ``Re x ≤ 0``), ``softmax(P)_{i,k} = e^{x_i k'} / S_i``
      with ``k' = k`` (``Re λ ≤ 0``) or ``L-1-k`` (``Re λ > 0``) and
      ``S_i = Σ_{j<L} e^{x_i j} = L · E(x_i L) / E(x_i)``, ``E(z) = (e^z - 1)/z``: two products,
      the second reversed in time. Nothing overflows for any ``Re λ``.

    Arguments and result as :func:`dss_kernel_reference`. Chapter *DSS*.
    """
    Lambda, W, dt = dss_inputs(Lambda, W, dt, L, variant)
    dL = Lambda * dt  # (H N)
    if variant == "exp":
        return vandermonde(W * expm1_over_x(dL) * dt, dL, L)  # (H L)
    backward, x, S = softmax_normalizer(dL, L)  # (H N) each
    v = W * reciprocal(Lambda, eps) * reciprocal(S, eps)  # (H N)
    zero = torch.zeros_like(v)
    forward_part = vandermonde(torch.where(backward, zero, v), x, L)  # (H L)
    backward_part = vandermonde(torch.where(backward, v, zero), x, L)  # (H L), k' = L-1-k
    return forward_part + backward_part.flip(-1)


def ema_inputs(alpha, delta, beta, eta):
    """Checked EMA parameters: four real ``(H, N)`` tensors in one dtype (float32 at least),
    ``α ∈ (0, 1]`` and ``δ ∈ [0, 1]``, so that ``φ = 1 - α ⊙ δ ∈ [0, 1)``."""
    named = {"alpha": alpha, "delta": delta, "beta": beta, "eta": eta}
    named = {n: _checks.tensor(n, t, complex_ok=False) for n, t in named.items()}
    _checks.one_device(**named)
    if named["alpha"].ndim != 2:
        raise ValueError(f"alpha must have shape (H, N), got {tuple(named['alpha'].shape)}")
    for name, t in named.items():
        if t.shape != named["alpha"].shape:
            raise ValueError(
                f"{name} must have the shape of alpha {tuple(named['alpha'].shape)}, got "
                f"{tuple(t.shape)}"
            )
    alpha, delta = named["alpha"], named["delta"]
    if not bool(((alpha > 0) & (alpha <= 1)).all()):
        raise ValueError(f"alpha must lie in (0, 1], got values in [{_span(alpha)}]")
    if not bool(((delta >= 0) & (delta <= 1)).all()):
        raise ValueError(f"delta must lie in [0, 1], got values in [{_span(delta)}]")
    dtype = torch.promote_types(_checks.common_dtype(*named.values()), torch.float32)
    return tuple(t.to(dtype) for t in named.values())


def _span(x: torch.Tensor) -> str:
    return f"{float(x.min()):.3g}, {float(x.max()):.3g}"


def ema_kernel(
    alpha: torch.Tensor, delta: torch.Tensor, beta: torch.Tensor, eta: torch.Tensor, L: int
) -> torch.Tensor:
    """Kernel of Mega's multi-dimensional damped EMA, ``K_t = Σ_n η_n α_n β_n φ_n^t``.

    Mega (Ma et al., arXiv:2209.10655v3, Section 3.1): per channel, the input ``x_t`` is
    expanded to ``N`` dimensions by ``β`` and smoothed by a damped EMA,

        h_t = α ⊙ β x_t + (1 - α ⊙ δ) ⊙ h_{t-1},    y_t = ηᵀ h_t,

    so with ``φ = 1 - α ⊙ δ`` unrolling from ``h_{-1} = 0`` gives ``y = K * x`` with
    ``K_t = ηᵀ (φ^t ⊙ α ⊙ β)``, ``t = 0 .. L-1``. This is the kernel of a real diagonal SSM
    (:func:`ssm_kernel` with ``Ā = φ``, ``B̄ = α ⊙ β``, ``C = η``); as a discretized continuous
    one under ZOH with step ``Δ``, ``A = log φ / Δ`` (real, ``≤ 0``), ``B̄ = (e^{ΔA} - 1)/A · B``
    gives ``B = -β log φ / (Δ δ)``, and with ``C = η/2`` it is :func:`s4d_kernel` (whose ``2 Re``
    counts a real eigenvalue twice): S4D restricted to real eigenvalues, the link the Mega
    authors draw with S4. Computed like S4D's, by the Vandermonde product
    (:func:`ssm.ops.vandermonde.vandermonde`) with ``x = log φ`` (``LOG_ZERO`` where ``φ = 0``)
    and ``v = η α β / 2``. The step-by-step view is :func:`ema_recurrence`. Chapter *Mega*.

    Args:
        alpha: ``α`` ``(H, N)`` in ``(0, 1]`` (the layer passes ``sigmoid`` of its parameter).
        delta: damping ``δ`` ``(H, N)`` in ``[0, 1]`` (likewise).
        beta: expansion ``β`` ``(H, N)``.
        eta: projection ``η`` ``(H, N)``.
        L: kernel length.

    Returns:
        The real kernel ``(H, L)``.
    """
    alpha, delta, beta, eta = ema_inputs(alpha, delta, beta, eta)
    _checks.positive_int("L", L)
    phi = 1 - alpha * delta  # (H N) in [0, 1)
    x = log_eigenvalues(phi.to(phi.dtype.to_complex()))  # (H N): log φ, real
    v = (eta * alpha * beta / 2).to(x.dtype)  # (H N): 2 Re v = η α β
    return vandermonde(v, x, L)  # (H L)


def ema_recurrence(
    alpha: torch.Tensor,
    delta: torch.Tensor,
    beta: torch.Tensor,
    eta: torch.Tensor,
    u: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mega's damped EMA step by step (Mega, arXiv:2209.10655v3, Section 3.1):

        h_t = α ⊙ β u_t + φ ⊙ h_{t-1},   φ = 1 - α ⊙ δ,   y_t = ηᵀ h_t,   t = 0 .. L-1,

    from ``h_{-1} = h0`` (zero by default), ``O(N L)`` per channel. The reference that
    :func:`ema_kernel` is tested against, and the layer's decoding step: kept beside the kernel
    because it checks the same parameters and is the EMA's, not a general SSM's, recurrence.
    Unrolled, ``y_t = (K * u)_t + ηᵀ (φ^{t+1} ⊙ h0)``: the power is ``t + 1`` with the first
    input at ``t = 0`` (``φ^t`` when the first input is ``x_1``, as some write it). Chapter
    *Mega*.

    Args:
        alpha, delta, beta, eta: ``(H, N)``, as for :func:`ema_kernel`.
        u: input ``(..., H, L)`` real.
        h0: initial state ``(..., H, N)``, batch dims as ``u``'s.
        return_state: also return the last state ``h_{L-1}`` ``(..., H, N)``.

    Returns:
        ``y`` ``(..., H, L)`` (and the last state) in the promoted dtype.
    """
    alpha, delta, beta, eta = ema_inputs(alpha, delta, beta, eta)
    u = _checks.tensor("u", u, complex_ok=False)
    H, N = alpha.shape
    if u.ndim < 2 or u.shape[-2] != H:
        raise ValueError(f"u must have shape (..., H, L) with H={H}, got {tuple(u.shape)}")
    dtype = torch.promote_types(alpha.dtype, u.dtype)
    h = torch.zeros((*u.shape[:-1], N), dtype=dtype, device=u.device)  # (... H N)
    if h0 is not None:
        h = h + _checks.real("h0", h0, (*u.shape[:-1], N), "(..., H, N)").to(dtype)
    phi, gain = 1 - alpha * delta, alpha * beta  # (H N) each
    ys = []
    for t in range(u.shape[-1]):
        h = gain * u[..., t, None].to(dtype) + phi * h  # (... H N)
        ys.append((eta * h).sum(-1))  # (... H)
    y = torch.stack(ys, -1) if ys else u.to(dtype)  # (... H L)
    return (y, h) if return_state else y
