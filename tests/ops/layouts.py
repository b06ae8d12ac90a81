"""Layouts of one tensor that hold the same values: the kernels read their inputs through raw
pointers, so each op must make what it is given into what its kernel expects. Every op's tests
run its arguments through these (``LAYOUTS[name](t)``), against the reference on dense copies."""

from __future__ import annotations

import math

import torch


def strided(t: torch.Tensor) -> torch.Tensor:
    """Every other element of a larger tensor whose gaps hold NaN (stride 2)."""
    big = torch.full((*t.shape, 2), math.nan, dtype=t.dtype, device=t.device)
    big[..., 0] = t
    return big[..., 0]


def transposed(t: torch.Tensor) -> torch.Tensor:
    """The last two dimensions stored the other way round (column-major); a vector as one
    column of a row-major matrix whose other column holds NaN."""
    if t.ndim == 1:
        return torch.stack([t, torch.full_like(t, math.nan)], dim=1)[:, 0]
    return t.mT.contiguous().mT


def expanded(t: torch.Tensor) -> torch.Tensor:
    """Stride 0 along the last dimension: the values of the first column, repeated."""
    return t[..., :1].expand_as(t)


def lazy_bit(t: torch.Tensor) -> torch.Tensor:
    """The same values behind PyTorch's lazy conjugate bit (complex) or negation bit (real)."""
    if t.is_complex():
        return t.conj().resolve_conj().conj()
    return torch.complex(torch.zeros_like(t), -t).conj().imag


LAYOUTS = {"strided": strided, "transposed": transposed, "expanded": expanded, "conj": lazy_bit}
