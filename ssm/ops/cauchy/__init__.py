"""The symmetric Cauchy product of S4: ``Σ_n v/(z - w) + conj(v)/(z - conj(w))``.

:func:`cauchy` picks the Triton kernel on CUDA tensors and the PyTorch reference otherwise
(:mod:`ssm.ops.dispatch`). Derivation of the fused form and of the gradients: ``README.md`` in
this folder; explained in the book's chapter *Making SSMs fast*, section "Diagonal kernels: the
Vandermonde and Cauchy products" (and its use by S4 in *From ODE to S4*). Dimension letters:
H rows, N poles (one of each conjugate pair), L points.
"""

from __future__ import annotations

import torch

from ... import _checks
from ..dispatch import choose
from .reference import cauchy_ref

__all__ = ["cauchy", "cauchy_ref"]


def cauchy(
    v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, *, backend: str | None = None
) -> torch.Tensor:
    """``out[h, l] = Σ_n v[h,n]/(z[l] - w[h,n]) + conj(v[h,n])/(z[l] - conj(w[h,n]))``.

    ``v`` and ``w`` hold one of each conjugate pair of a real system. Empty dimensions give
    empty (``H = 0``) or zero (``N = 0``) results on both paths.

    Args:
        v: ``(H, N)`` complex numerators.
        z: ``(L,)`` complex evaluation points.
        w: ``(H, N)`` complex poles.
        backend: ``"auto"``, ``"reference"`` or ``"triton"`` (see :mod:`ssm.ops.dispatch`).
            The Triton kernel computes in complex64; complex128 inputs use the reference under
            ``"auto"`` and raise ``ValueError`` under ``"triton"``.

    Returns:
        ``(H, L)`` complex (the promoted dtype of the inputs), differentiable in ``v``, ``z``
        and ``w``.

    Explained in the chapter *Making SSMs fast*, section "Diagonal kernels: the Vandermonde and
    Cauchy products".
    """
    v, z, w = (_checks.tensor(n, t) for n, t in (("v", v), ("z", z), ("w", w)))
    for name, t, ndim, shape in (("v", v, 2, "(H, N)"), ("w", w, 2, "(H, N)"), ("z", z, 1, "(L,)")):
        if not t.is_complex() or t.ndim != ndim:
            raise ValueError(
                f"{name} must be a complex tensor of shape {shape}, "
                f"got {t.dtype} of shape {tuple(t.shape)}"
            )
    if v.shape != w.shape:
        raise ValueError(
            f"v and w must have the same shape (H, N), got {tuple(v.shape)} and {tuple(w.shape)}"
        )
    if z.shape[0] < 1:
        raise ValueError("z must hold at least one point, got shape (0,)")
    _checks.one_device(v=v, z=z, w=w)
    dtype = _checks.common_dtype(v, z, w)
    if choose("cauchy", (v, z, w), backend, _probe) == "triton":
        from .triton import cauchy_triton

        return cauchy_triton(v, z, w)
    return cauchy_ref(v.to(dtype), z.to(dtype), w.to(dtype))


def _probe(device: torch.device) -> None:
    from .triton import cauchy_triton

    gen = torch.Generator().manual_seed(0)
    v = torch.randn(2, 8, dtype=torch.complex128, generator=gen)
    w = torch.complex(
        -torch.rand(2, 8, dtype=torch.float64, generator=gen),
        torch.randn(2, 8, dtype=torch.float64, generator=gen),
    )
    z = torch.exp(2j * torch.pi * torch.arange(37, dtype=torch.float64) / 37)
    v, z, w = v.to(device), z.to(device), w.to(device)
    out = cauchy_triton(v.to(torch.complex64), z.to(torch.complex64), w.to(torch.complex64))
    if not torch.allclose(out.to(torch.complex128), cauchy_ref(v, z, w), rtol=1e-4, atol=1e-4):
        raise RuntimeError("cauchy: the Triton kernel disagrees with the reference")
