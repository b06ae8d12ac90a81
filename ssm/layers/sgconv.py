"""The SGConv layer: S4's layer around a structured global convolution kernel.

Li, Cai, Zhang, Chen & Dey, "What Makes Convolutional Models Great on Long Sequence Modeling?"
(SGConv), arXiv:2210.09298v1, Section 3.1 and its kernel's pseudo-code. The kernel of each of
the ``H`` channels is built from ``S = ⌈log2(L / d)⌉ + 1`` sub-kernels ``k_i`` of ``d``
(``kernel_dim``) trained parameters each:

    K = (1/Z) · Concat( α^0 Up_{2^0}(k_0), α^1 Up_{2^0}(k_1), α^2 Up_{2^1}(k_2), …,
                        α^{S-1} Up_{2^{S-2}}(k_{S-1}) )[:L],

``Up_r`` the linear interpolation to ``r`` times the length: piece ``i`` covers
``d · 2^{max(i-1, 0)}`` steps, so the pieces tile ``d · 2^{S-1} ≥ L`` steps, each twice as long
and (by ``α = 1/2``) half as large as the previous one: the two principles of the paper, a
parameter count growing with ``log L`` and a decaying kernel. ``Z`` is each kernel's norm at
initialization, kept fixed (a buffer). The rest of the layer is S4's
(:class:`ssm.layers._conv.ConvolutionalLayer`: ``D`` skip, GELU, GLU output). There is no
recurrent view: the kernel is not an SSM's, so the layer has no ``step``. Chapter *SGConv*.

Dimension letters: B batch, L length, H channels, d sub-kernel size, c kernels per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import _checks
from ._conv import ConvolutionalLayer

__all__ = ["SGConv", "SGConvConfig", "SGConvKernel", "num_scales"]

INTERPOLATIONS = ("linear", "nearest")


def num_scales(L: int, kernel_dim: int) -> int:
    """``S = ⌈log2(L / d)⌉ + 1`` sub-kernels (at least 1): enough for ``d · 2^{S-1} ≥ L``."""
    return max(math.ceil(math.log2(L / kernel_dim)), 0) + 1


def upsampling(i: int) -> int:
    """The factor ``2^{max(i-1, 0)}`` sub-kernel ``i`` is stretched by."""
    return 2 ** max(i - 1, 0)


@dataclass
class SGConvConfig:
    """Settings of an SGConv layer; ``build(d_model)`` makes one. Every field is plain JSON."""

    kernel_dim: int = 64  # d: parameters per sub-kernel
    l_max: int | None = None  # kernel length; None until Backbone.for_data sets it
    decay: float = 0.5  # α: sub-kernel i is scaled by α^i
    interpolation: str = "linear"  # how a sub-kernel is upsampled: "linear" or "nearest"
    bidirectional: bool = False  # a second kernel run backwards over the sequence
    dropout: float = 0.0  # after the GELU, before the GLU output projection

    def __post_init__(self) -> None:
        _checks.positive_int("kernel_dim", self.kernel_dim)
        if self.l_max is not None:
            _checks.positive_int("l_max", self.l_max)
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1] (the kernel decays), got {self.decay}")
        _checks.choice("interpolation", self.interpolation, INTERPOLATIONS)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def build(self, d_model: int) -> SGConv:
        """The SGConv layer of width ``d_model`` with these settings."""
        return SGConv(self, d_model)


class SGConvKernel(nn.Module):
    """``H`` SGConv kernels ``(c, H, L)``. Parameters: ``subkernels``, ``S`` tensors
    ``(c, H, d)`` (standard normal at init); buffer ``norm`` ``(c, H, 1)``, ``Z``."""

    def __init__(self, cfg: SGConvConfig, H: int, channels: int) -> None:
        super().__init__()
        self.cfg, self.L = cfg, cfg.l_max
        S = num_scales(cfg.l_max, cfg.kernel_dim)
        self.subkernels = nn.ParameterList(
            nn.Parameter(torch.randn(channels, H, cfg.kernel_dim)) for _ in range(S)
        )
        self.register_buffer("norm", torch.ones(channels, H, 1))
        with torch.no_grad():
            self.norm.copy_(torch.linalg.vector_norm(self.pieces(), dim=-1, keepdim=True))

    def pieces(self) -> torch.Tensor:
        """The concatenated, decayed, upsampled sub-kernels ``(c, H, d · 2^{S-1})``, before
        ``1/Z`` and the truncation to ``L``."""
        pieces = [
            self.cfg.decay**i * self.upsample(k, upsampling(i))  # (c H d·2^{max(i-1,0)})
            for i, k in enumerate(self.subkernels)
        ]
        return torch.cat(pieces, dim=-1)

    def upsample(self, k: torch.Tensor, factor: int) -> torch.Tensor:
        """``k`` ``(c, H, d)`` interpolated to ``(c, H, factor · d)``."""
        if factor == 1:
            return k
        mode = self.cfg.interpolation
        return nn.functional.interpolate(k, scale_factor=factor, mode=mode)

    def forward(self) -> torch.Tensor:
        """The kernels ``(c, H, L)``."""
        return (self.pieces() / self.norm)[..., : self.L]


class SGConv(ConvolutionalLayer):
    """The SGConv layer: ``forward`` ``(batch, length, d_model)`` → same shape. No recurrent
    step (``init_state`` and ``step`` raise). Chapter *SGConv*."""

    def __init__(self, cfg: SGConvConfig, d_model: int) -> None:
        if cfg.l_max is None:
            raise ValueError(
                "SGConvConfig.l_max must be set (the kernel length, at least the input length); "
                "Backbone.for_data sets it from the data set"
            )
        kernel = SGConvKernel(cfg, d_model, 2 if cfg.bidirectional else 1)
        super().__init__(cfg, d_model, kernel)

    def init_state(self, batch: int) -> None:
        """Raises: a global convolution kernel has no recurrent view."""
        raise ValueError(
            "SGConv has no recurrent step: its kernel is a free multi-scale convolution, not an "
            "SSM's impulse response; run forward on the whole sequence"
        )

    def step(self, x_t: torch.Tensor, state: object) -> None:
        """Raises, as :meth:`init_state`."""
        self.init_state(x_t.shape[0])
