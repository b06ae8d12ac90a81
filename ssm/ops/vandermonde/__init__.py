"""The Vandermonde product of diagonal SSMs: ``K[h, l] = 2 Re(Σ_n v[h,n] exp(x[h,n] l))``.

The kernel of S4D (``x = ΔA``, ``v = C ∘ B̄``), DSS and Mega's EMA. :func:`vandermonde` picks the
Triton kernel on CUDA tensors and the PyTorch reference otherwise (:mod:`ssm.ops.dispatch`);
:func:`vandermonde_blocked` is the two-level matmul formulation in PyTorch. Derivation of the
kernel and its gradients: ``README.md`` in this folder; explained in the book's chapter *Making
SSMs fast*, section "Diagonal kernels: the Vandermonde and Cauchy products". Dimension letters:
H channels, N state size (one of each conjugate pair), L length.
"""

from __future__ import annotations

import torch

from ... import _checks
from ..dispatch import choose
from .reference import (
    log_eigenvalues,
    vandermonde_blocked,
    vandermonde_ref,
    vandermonde_transpose_ref,
)

__all__ = [
    "log_eigenvalues",
    "vandermonde",
    "vandermonde_blocked",
    "vandermonde_ref",
    "vandermonde_transpose",
]


def vandermonde(v: torch.Tensor, x: torch.Tensor, L: int, *, backend: str | None = None):
    """``K[h, l] = 2 Re(Σ_n v[h, n] exp(x[h, n] l))`` for ``l = 0 .. L-1``.

    Args:
        v: ``(H, N)`` complex, e.g. ``C ∘ B̄``.
        x: ``(H, N)`` complex, e.g. ``log Ā = ΔA`` (:func:`log_eigenvalues` of ``Ā``).
        L: kernel length.
        backend: ``"auto"``, ``"reference"`` or ``"triton"`` (see :mod:`ssm.ops.dispatch`).
            The Triton kernel computes in float32; complex128 inputs use the reference under
            ``"auto"`` and raise ``ValueError`` under ``"triton"``.

    Returns:
        ``K`` ``(H, L)`` real (float32 from the Triton kernel), differentiable in ``v`` and
        ``x``; zero for ``N = 0``.

    Explained in the chapter *Making SSMs fast*, section "Diagonal kernels: the Vandermonde and
    Cauchy products".
    """
    v, x = _checks.tensor("v", v), _checks.tensor("x", x)
    for name, t in (("v", v), ("x", x)):
        if not t.is_complex() or t.ndim != 2:
            raise ValueError(
                f"{name} must be a complex tensor of shape (H, N), "
                f"got {t.dtype} of shape {tuple(t.shape)}"
            )
    if v.shape != x.shape:
        raise ValueError(
            f"v and x must have the same shape (H, N), got {tuple(v.shape)} and {tuple(x.shape)}"
        )
    _checks.one_device(v=v, x=x)
    _checks.positive_int("L", L)
    if choose("vandermonde", (v, x), backend, _probe) == "triton":
        from .triton import vandermonde_triton

        return vandermonde_triton(v, x, L)
    dtype = _checks.common_dtype(v, x)
    return vandermonde_ref(v.to(dtype), x.to(dtype), L)


def vandermonde_transpose(
    g: torch.Tensor, x: torch.Tensor, weighted: bool = False, *, backend: str | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``S[..., h, n] = Σ_l g[..., h, l] exp(x[h, n] l)`` (and ``Σ_l g l exp(x l)`` if weighted).

    The transposed product: the gradient of :func:`vandermonde`, and the state of a diagonal SSM
    after ``L`` steps (``g`` the input reversed in time). ``g`` ``(..., H, L)`` real, ``x``
    ``(H, N)`` complex; returns ``(..., H, N)`` complex in the promoted dtype (complex64 from the
    Triton kernel). Not differentiable on the Triton path.

    Explained in the chapter *Making SSMs fast*, section "Diagonal kernels: the Vandermonde and
    Cauchy products".
    """
    g, x = _checks.tensor("g", g, complex_ok=False), _checks.tensor("x", x)
    if not x.is_complex() or x.ndim != 2:
        raise ValueError(
            f"x must be a complex tensor of shape (H, N), got {x.dtype} of shape {tuple(x.shape)}"
        )
    if g.ndim < 2 or g.shape[-2] != x.shape[0] or g.shape[-1] < 1:
        raise ValueError(
            f"g must have shape (..., H, L) with H={x.shape[0]} (the rows of x) and L >= 1, "
            f"got {tuple(g.shape)}"
        )
    _checks.one_device(g=g, x=x)
    if choose("vandermonde_transpose", (g, x), backend, _probe_transpose) == "triton":
        from .triton import vandermonde_transpose_triton

        return vandermonde_transpose_triton(g, x, weighted)
    dtype = _checks.common_dtype(g, x)
    return vandermonde_transpose_ref(g.to(dtype.to_real()), x.to(dtype), weighted)


def _probe_inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(2, 8, dtype=torch.complex128, generator=gen)
    x = torch.complex(
        -torch.rand(2, 8, dtype=torch.float64, generator=gen),
        torch.randn(2, 8, dtype=torch.float64, generator=gen),
    )
    return v.to(device), x.to(device)


def _probe(device: torch.device) -> None:
    from .triton import vandermonde_triton

    v, x = _probe_inputs(device)
    K = vandermonde_triton(v.to(torch.complex64), x.to(torch.complex64), 37).double()
    if not torch.allclose(K, vandermonde_ref(v, x, 37), rtol=1e-4, atol=1e-4):
        raise RuntimeError("vandermonde: the Triton kernel disagrees with the reference")


def _probe_transpose(device: torch.device) -> None:
    from .triton import vandermonde_transpose_triton

    _, x = _probe_inputs(device)
    g = torch.linspace(-1, 1, 37, device=device).expand(2, 37)
    S = vandermonde_transpose_triton(g, x.to(torch.complex64)).to(torch.complex128)
    if not torch.allclose(S, vandermonde_transpose_ref(g.double(), x), rtol=1e-4, atol=1e-4):
        raise RuntimeError("vandermonde_transpose: the Triton kernel disagrees with the reference")
