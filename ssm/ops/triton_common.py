"""What the Triton kernels of every accelerated op share (imported only where Triton runs)."""

from __future__ import annotations

import triton
import triton.language as tl

from .common import SOFTPLUS_THRESHOLD

THRESHOLD = tl.constexpr(SOFTPLUS_THRESHOLD)


@triton.jit
def softplus(x):
    """``log(1 + exp(x))`` without overflow, ``x`` above the threshold (as ``F.softplus``)."""
    return tl.where(x <= THRESHOLD, tl.log(1.0 + tl.exp(tl.minimum(x, THRESHOLD))), x)


@triton.jit
def softplus_grad(x):
    """``d softplus(x) / dx = sigmoid(x)``, exactly 1 above the threshold (as :func:`softplus`)."""
    return tl.where(x <= THRESHOLD, tl.sigmoid(x), 1.0)
