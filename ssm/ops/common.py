"""What the public functions of every accelerated op share, in PyTorch: the step size
``Δ = softplus(δ + bias)`` (why it is spelled ``delta`` in some ops and ``dt`` in others:
:mod:`ssm.ops`) and the contiguity the kernels' raw pointers need."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# softplus(x) = x above this, as torch.nn.functional.softplus and mamba_ssm's kernels; the
# Triton kernels use the same constant (ssm.ops.triton_common.softplus).
SOFTPLUS_THRESHOLD = 20.0


def step_size(dt: torch.Tensor, bias: torch.Tensor | None, softplus: bool) -> torch.Tensor:
    """``Δ = softplus(dt + bias)`` (each optional); ``bias`` already broadcastable to ``dt``."""
    if bias is not None:
        dt = dt + bias
    return F.softplus(dt, threshold=SOFTPLUS_THRESHOLD) if softplus else dt


def softplus_grad(x: torch.Tensor) -> torch.Tensor:
    """``d softplus(x) / dx = sigmoid(x)``, exactly 1 above the threshold, as :func:`step_size`."""
    return torch.where(x <= SOFTPLUS_THRESHOLD, torch.sigmoid(x), torch.ones_like(x))


def contiguous(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Each tensor dense and row-major, its lazy conjugate and negation bits applied, as the
    kernels read them through raw pointers (a strided, expanded or ``conj()`` view would be read
    wrong); ``None`` stays ``None``."""
    return tuple(
        None if t is None else t.resolve_conj().resolve_neg().contiguous() for t in tensors
    )
