"""HiPPO operators: the state matrices that make an SSM remember its input.

Conventions follow the S4 authors' reference code (``transition`` and ``rank_correction`` in their
``hippo`` module): ``A`` is ``(N, N)``, ``B`` is ``(N,)``, and for each measure there is a low-rank
``P`` (``(rank, N)``) such that ``A + Pᵀ P`` is normal. Explained in the book's chapter *From ODE
to S4*, section "HiPPO: a state matrix that remembers".

Gu et al., "HiPPO: Recurrent Memory with Optimal Polynomial Projections", NeurIPS 2020
(arXiv:2008.07669); Gu et al., "How to Train Your HiPPO", ICLR 2023 (arXiv:2206.12037).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from . import _checks

MEASURES = ("legs", "legt", "lagt", "fout")


def transition(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO matrices ``(A, B)`` of the ODE ``x'(t) = A x(t) + B u(t)``, in float64.

    - ``legs`` (scaled Legendre, HiPPO eq. (2) in S4):
      ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)`` for ``n > k``, ``-(n+1)`` for ``n = k``, 0 above;
      ``B[n] = sqrt(2n+1)``.
    - ``legt`` (translated Legendre, window of length 1, halved for timescale):
      ``A[n, k] = -½ sqrt(2n+1) sqrt(2k+1) · (1 if n >= k else (-1)^(n-k))``;
      ``B[n] = ½ sqrt(2n+1)``.
    - ``lagt`` (translated Laguerre): ``A = I/2 - tril(1)``, ``B = 1``.
    - ``fout`` (truncated Fourier, "How to Train Your HiPPO"): rotations at frequencies
      ``π·k`` on pairs of coordinates minus the rank-one term ``B Bᵀ``, with
      ``B = (1, 0, √2, 0, √2, 0, ...)`` (cosines weighted, sines not).

    Returns ``A`` of shape ``(N, N)`` and ``B`` of shape ``(N,)``.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _check_size(measure, N)
    q = np.arange(N, dtype=np.float64)
    row, col = np.meshgrid(q, q, indexing="ij")
    if measure == "legs":
        r = np.sqrt(2 * q + 1)
        A = -np.where(row > col, np.outer(r, r), 0.0) - np.diag(q + 1)
        B = r
    elif measure == "legt":
        r = np.sqrt(2 * q + 1)
        sign = np.where(row >= col, 1.0, (-1.0) ** (row - col))
        A = -0.5 * np.outer(r, r) * sign
        B = 0.5 * r
    elif measure == "lagt":
        A = np.eye(N) / 2 - np.tril(np.ones((N, N)))
        B = np.ones(N)
    else:
        freqs = np.arange(N // 2)
        d = np.stack([np.zeros(N // 2), freqs], axis=-1).reshape(-1)[1:]
        A = np.pi * (-np.diag(d, 1) + np.diag(d, -1))
        B = _fout_b(N)
        A = A - np.outer(B, B)
    return torch.from_numpy(np.ascontiguousarray(A)), torch.from_numpy(np.ascontiguousarray(B))


def _check_size(measure: str, N: int) -> None:
    _checks.choice("measure", measure, MEASURES)
    _checks.positive_int("N", N)
    if measure == "fout" and N % 2:
        raise ValueError(f"N must be even for measure 'fout' (cosine/sine pairs), got {N}")


def _fout_b(N: int) -> np.ndarray:
    B = np.zeros(N)
    B[0::2] = math.sqrt(2)
    B[0] = 1.0
    return B


def rank_correction(measure: str, N: int) -> torch.Tensor:
    """The low-rank ``P`` (``(rank, N)``, float64) that makes ``A + Pᵀ P`` normal.

    Rank 1 for ``legs``, ``lagt`` and ``fout``; rank 2 for ``legt``.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _check_size(measure, N)
    q = np.arange(N, dtype=np.float64)
    if measure == "legs":
        P = np.sqrt(q + 0.5)[None]
    elif measure == "legt":
        r = np.sqrt(2 * q + 1) / math.sqrt(2)
        P = np.stack([np.where(q % 2 == 1, r, 0.0), np.where(q % 2 == 0, r, 0.0)])
    elif measure == "lagt":
        P = np.full((1, N), math.sqrt(0.5))
    else:
        P = _fout_b(N)[None]
    return torch.from_numpy(P)


def nplr(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal-plus-low-rank form of a HiPPO matrix (S4 paper, Theorem 1), complex128.

    ``A = V (diag(w) - Σ_r p_r p_rᴴ) Vᴴ`` with ``V`` unitary. ``A + Pᵀ P`` is normal and equal to
    ``c·I + S`` with ``S`` skew-symmetric, so its eigenvalues are ``c + iμ`` where ``μ`` are the
    eigenvalues of the Hermitian ``-iS`` (computed by ``eigh``, hence ``V`` exactly unitary).

    Returns ``w`` ``(N,)``, ``P`` ``(rank, N)`` and ``B`` ``(N,)`` expressed in the eigenbasis
    (``P ← Vᴴ P``, ``B ← Vᴴ B``), and ``V`` ``(N, N)``. Chapter *From ODE to S4*, sections
    "HiPPO: a state matrix that remembers" and "Computing the kernel fast: the S4 algorithm".
    """
    A, B = transition(measure, N)
    P = rank_correction(measure, N)
    normal = A + P.T @ P  # (N N)
    c = torch.diagonal(normal).mean()
    skew = normal - c * torch.eye(N, dtype=normal.dtype)
    if not torch.allclose(skew, -skew.T, atol=1e-8 * max(1.0, float(skew.abs().max()))):
        raise RuntimeError(f"A + PᵀP is not identity plus skew-symmetric for measure {measure!r}")
    mu, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # (N) (N N)
    w = c + 1j * mu  # (N) complex
    Vh = V.conj().T
    return w, (Vh @ P.to(V.dtype).T).T, Vh @ B.to(V.dtype), V


def legs_memory(u: torch.Tensor, N: int) -> torch.Tensor:
    """Online LegS projection of a sampled signal: the HiPPO state after each sample.

    The scaled-Legendre ODE ``x'(t) = (1/t)(A x + B u)`` (HiPPO eq. (19)) is discretized with the
    bilinear method at step ``1/k`` at sample ``k = 1..L`` (time and step scale together, so the
    sampling period drops out):
    ``(I - A/(2k)) x_k = (I + A/(2k)) x_{k-1} + (B/k) u_k``, a triangular solve since LegS's
    ``A`` is lower triangular. ``u``: ``(L,)`` real. Returns the states ``(L, N)``, float64, on
    ``u``'s device.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _checks.tensor("u", u, complex_ok=False)
    _checks.one_device(u=u)
    if u.ndim != 1 or u.shape[0] < 1:
        raise ValueError(
            f"u must be a 1-D signal (L,) of at least one sample, got shape {tuple(u.shape)}"
        )
    A, B = transition("legs", N)
    eye = torch.eye(N, dtype=torch.float64)
    A, B, eye = A.to(u.device), B.to(u.device), eye.to(u.device)
    u = u.to(torch.float64)
    x = torch.zeros(N, 1, dtype=torch.float64, device=u.device)
    states = []
    for k in range(1, u.shape[0] + 1):
        rhs = x + (A @ x) / (2 * k) + (B[:, None] / k) * u[k - 1]  # (N 1)
        x = torch.linalg.solve_triangular(eye - A / (2 * k), rhs, upper=False)  # (N 1)
        states.append(x[:, 0])
    return torch.stack(states)


def legs_reconstruct(x: torch.Tensor, num: int) -> torch.Tensor:
    """Evaluate the signal a LegS state remembers on ``num`` evenly spaced points of ``[0, t]``.

    ``f(s·t) ≈ Σ_n x_n sqrt(2n+1) P_n(2s - 1)`` for ``s ∈ [0, 1]`` (``s = 1`` is the present).
    ``x``: ``(..., N)``. Returns ``(..., num)``, float64.
    Chapter *From ODE to S4*, section "HiPPO: a state matrix that remembers".
    """
    _checks.tensor("x", x, complex_ok=False)
    _checks.one_device(x=x)
    if x.ndim < 1:
        raise ValueError("x must have shape (..., N), got a scalar")
    _checks.positive_int("num", num)
    N = x.shape[-1]
    s = np.linspace(0.0, 1.0, num)
    basis = special.eval_legendre(np.arange(N)[:, None], 2 * s[None] - 1)  # (N num)
    basis = basis * np.sqrt(2 * np.arange(N) + 1)[:, None]
    return x.to(torch.float64) @ torch.from_numpy(basis).to(x.device)


# Basis functions of the time-invariant SSMs ("How to Train Your HiPPO", arXiv:2206.12037v2).
#
# An LTI SSM x'(t) = A x(t) + B u(t) started at rest has x(t) = ∫ K(s) u(t - s) ds with the
# basis functions K_n(t) = e_nᵀ exp(tA) B: coordinate n of the state is the input convolved with
# K_n. HTTYH writes each as K_n(t) = p_n(t) ω(t) with p_n orthonormal under the weight ω, so that
# x_n(t) = ⟨u(t - ·), p_n⟩_ω are the coefficients of the projection of the recent past onto
# span{p_n}. The operators of `transition` follow the S4 authors' code, in which LegT and FouT are
# at half the time scale of the paper's figure: their window is [0, 2], and `scale=2` (the SSM
# (2A, 2B)) gives the paper's window [0, 1].

BASIS_MEASURES = ("legs", "legt", "lagt", "fout")
WINDOWED = ("legt", "fout")


def basis(measure: str, N: int, t: object, *, scale: float = 1.0) -> torch.Tensor:
    """Basis functions ``K_n(t) = e_nᵀ exp(t·cA) (cB)`` of the SSM ``(cA, cB)``, ``c = scale``.

    HTTYH (arXiv:2206.12037v2), Definition 1: the impulse responses of the coordinates of the
    state, computed from :func:`transition` with matrix exponentials (``torch.linalg.matrix_exp``
    at each time). Scaling the SSM by ``c`` gives ``c·K_n(c·t)``: ``scale=2`` puts LegT and FouT
    on the window ``[0, 1]`` of the paper's figure (the S4 code's matrices span ``[0, 2]``). On a
    uniform grid ``t_k = t₀ + kΔ`` (longer than 16) the exponentials are shared instead:
    ``exp(t_{jb+i} A) B = exp(iΔA) · exp(bΔA)^j · exp(t₀A) B`` with ``b ≈ √len(t)``: about
    ``√len(t)`` exponentials of short times (cheap: few squarings) and as many matrix-vector
    products replace one exponential per time.

    Args:
        measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"``.
        N: state size (even for ``"fout"``).
        t: times ``(T,)``, finite and ``>= 0`` (array-like or tensor).
        scale: the factor ``c > 0``.

    Returns:
        ``K`` ``(N, T)``, float64. Chapter *S4 v2: how to train your HiPPO*.
    """
    times = _times(t)
    c = _scale(scale)
    A, B = transition(measure, N)
    A, B = c * A, c * B
    T = times.shape[0]
    step = _uniform_step(times)
    if T > 16 and step is not None and step > 0:
        b = math.isqrt(T - 1) + 1
        offsets = step * torch.arange(b, dtype=A.dtype)  # (b)
        inner = torch.linalg.matrix_exp(offsets[:, None, None] * A)  # exp(iΔA), i < b: (b N N)
        jump = torch.linalg.matrix_exp(step * b * A)  # (N N)
        outer = [torch.linalg.matrix_exp(times[0] * A) @ B]  # exp((t₀ + jbΔ)A) B: (N)
        for _ in range(-(-T // b) - 1):
            outer.append(jump @ outer[-1])
        K = torch.einsum("inm,jm->jin", inner, torch.stack(outer)).reshape(-1, N)[:T]  # (T N)
    else:
        K = torch.linalg.matrix_exp(times[:, None, None] * A) @ B  # (T N)
    return K.T.contiguous()


def basis_closed_form(measure: str, N: int, t: object, *, scale: float = 1.0) -> torch.Tensor:
    """The closed forms of the basis functions (HTTYH, arXiv:2206.12037v2, Table 1, Thms 3–5).

    With ``c = scale`` and the conventions of :func:`transition` (signs and normalizations
    derived from its matrices, checked against :func:`basis` in the tests):

    - ``legs``: ``K_n(t) = c·√(2n+1)·P_n(2e^{-ct} - 1)·e^{-ct}`` (exponentially warped Legendre
      polynomials; exact for every ``N``);
    - ``legt``: ``K_n(t) = (c/2)·√(2n+1)·P_n(1 - ct)`` on the window ``[0, 2/c)``, 0 after;
    - ``fout``: ``K_0 = c/2``, ``K_1 = 0`` (a sine of frequency 0: a state that never moves),
      ``K_{2k} = (c/2)·√2·cos(πkct)``, ``K_{2k+1} = (c/2)·√2·sin(πkct)`` on ``[0, 2/c)``, 0 after
      (the S4 code puts each cosine before its sine; the paper orders them differently);
    - ``lagt``: ``K_n(t) = c·L_n(ct)·e^{-ct/2}`` (Laguerre polynomials; exact for every ``N``).

    ``P_n`` are the Legendre polynomials on ``[-1, 1]``, ``L_n`` the Laguerre polynomials. For
    LegT and FouT the window is the limit ``N → ∞``: a finite SSM has analytic impulse
    responses, which cannot vanish on an interval, so :func:`basis` approaches these away from
    the window's edges as ``N`` grows, with tails after the window and ringing near its edges.
    ``t``: ``(T,)`` with ``t >= 0``. Returns ``(N, T)``, float64.
    Chapter *S4 v2: how to train your HiPPO*.
    """
    _check_size(measure, N)
    c = _scale(scale)
    times = _times(t).numpy()
    if measure == "lagt":
        n = np.arange(N)[:, None]
        K = c * special.eval_laguerre(n, c * times) * np.exp(-c * times / 2)
    else:
        K = (
            orthonormal_functions(measure, N, times, scale=c).numpy()
            * weight(measure, times, scale=c).numpy()
        )
    return torch.from_numpy(np.ascontiguousarray(K))


def weight(measure: str, t: object, *, scale: float = 1.0) -> torch.Tensor:
    """The weight ``ω(t)`` of ``K_n = p_n ω`` (HTTYH, arXiv:2206.12037v2, Table 1), a density.

    ``legs``: ``ω(t) = c·e^{-ct}`` (all of the past, the older the lighter); ``legt`` and
    ``fout``: ``ω(t) = c/2`` on the window ``[0, 2/c)``, 0 after (``c = scale``).
    ``t``: ``(T,)``, ``>= 0``. Returns ``(T,)``, float64. Chapter *S4 v2: how to train your HiPPO*.
    """
    _checks.choice("measure", measure, ("legs", *WINDOWED))
    c = _scale(scale)
    times = _times(t).numpy()
    if measure == "legs":
        w = c * np.exp(-c * times)
    else:
        w = np.where(times < 2 / c, c / 2, 0.0)
    return torch.from_numpy(w)


def orthonormal_functions(measure: str, N: int, t: object, *, scale: float = 1.0) -> torch.Tensor:
    """The functions ``p_n = K_n / ω``, orthonormal under :func:`weight`: ``∫ p_n p_m ω = δ_nm``.

    ``legs``: ``p_n(t) = √(2n+1)·P_n(2e^{-ct} - 1)``; ``legt``: ``√(2n+1)·P_n(1 - ct)``;
    ``fout``: ``1, 0, √2 cos(πct), √2 sin(πct), √2 cos(2πct), ...`` (``c = scale``; FouT's
    ``p_1 = 0`` has norm 0). They decode a state: the projection of the past ``u(t - s)`` onto
    their span is ``Σ_n x_n(t) p_n(s)`` (HTTYH, Section 3). ``t``: ``(T,)``, ``>= 0``; returns
    ``(N, T)``, float64 (for LegT and FouT, defined on the window only: use them there).
    Chapter *S4 v2: how to train your HiPPO*.
    """
    _checks.choice("measure", measure, ("legs", *WINDOWED))
    _check_size(measure, N)
    c = _scale(scale)
    times = _times(t).numpy()
    n = np.arange(N)[:, None]
    if measure == "legs":
        p = np.sqrt(2 * n + 1) * special.eval_legendre(n, 2 * np.exp(-c * times) - 1)
    elif measure == "legt":
        p = np.sqrt(2 * n + 1) * special.eval_legendre(n, 1 - c * times)
    else:
        phase = np.pi * (n // 2) * c * times  # (N T)
        p = math.sqrt(2) * np.where(n % 2 == 0, np.cos(phase), np.sin(phase))
        p[0] = 1.0
    return torch.from_numpy(np.ascontiguousarray(p))


def _times(t: object) -> torch.Tensor:
    """A 1-D grid of finite lags ``>= 0`` as a float64 CPU tensor."""
    if isinstance(t, torch.Tensor):
        if t.is_complex():
            raise ValueError(f"t must hold real times, got dtype {t.dtype}")
        times = t.detach().to("cpu", torch.float64)
    else:
        arr = np.asarray(t)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"t must hold real times, got dtype {arr.dtype}")
        times = torch.from_numpy(arr.astype(np.float64))
    if times.ndim != 1 or times.shape[0] < 1:
        raise ValueError(f"t must be a 1-D grid of times (T,), got shape {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()) or bool((times < 0).any()):
        raise ValueError(
            f"t must be finite and >= 0 (lags since the input), got min {float(times.min()):.3g}"
        )
    return times


def _uniform_step(times: torch.Tensor) -> float | None:
    """The step ``Δ`` where ``times[k] = times[0] + kΔ`` (to rounding), else ``None``."""
    T = times.shape[0]
    step = float(times[-1] - times[0]) / max(T - 1, 1)
    grid = times[0] + step * torch.arange(T, dtype=times.dtype)
    tol = 1e-12 * max(1.0, float(times.abs().max()))
    return step if bool(((grid - times).abs() <= tol).all()) else None


def _scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a number > 0, got {scale!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale!r}")
    return float(scale)
