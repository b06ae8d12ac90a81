"""The short causal depthwise convolution of H3, Hyena and Mamba, with its decoding state.

Each channel ``d`` of ``x`` ``(B, L, D)`` is convolved with its own filter ``w_d`` of
``k`` taps over the current and the ``k - 1`` previous steps (zeros before the start):

    y_t[d] = b[d] + Σ_{j=0}^{k-1} w[d, j] · x_{t-j}[d].

(``w`` is stored as ``nn.Conv1d`` stores it, oldest tap first: ``weight[d, 0, k-1-j]`` is
``w[d, j]``.) Decoding keeps the last ``k - 1`` inputs as the state. H3 reads its shift SSM as
such a filter, Hyena filters its projections with one, Mamba runs one before the selective scan.
Chapter *2023*. Dimension letters: B batch, L length, D channels, k taps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .. import _checks

__all__ = ["ShortConv"]


class ShortConv(nn.Module):
    """Depthwise causal convolution of ``k`` taps: ``(B, L, D)`` → ``(B, L, D)``.

    ``init_state(batch)`` is the ``(B, D, k - 1)`` window of past inputs (zeros);
    ``step(x_t, state)`` maps ``x_t`` ``(B, D)`` to ``(y_t, state)``: steps equal ``forward``.
    """

    def __init__(self, channels: int, taps: int, bias: bool = True) -> None:
        super().__init__()
        _checks.positive_int("channels", channels)
        _checks.positive_int("taps", taps)
        self.channels, self.taps = channels, taps
        self.conv = nn.Conv1d(channels, channels, taps, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, L, D)`` → ``(B, L, D)``: ``y_t`` reads ``x_t, …, x_{t-k+1}`` only."""
        u = F.pad(x.transpose(1, 2), (self.taps - 1, 0))  # (B D L+k-1), zeros before t = 0
        return self.conv(u).transpose(1, 2)  # (B L D)

    def init_state(self, batch: int) -> torch.Tensor:
        """The window of the last ``k - 1`` inputs, zeros: ``(batch, D, k - 1)``."""
        w = self.conv.weight
        return torch.zeros(batch, self.channels, self.taps - 1, dtype=w.dtype, device=w.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t`` ``(B, D)`` and the window ``(B, D, k - 1)`` → ``y_t`` ``(B, D)``, new window."""
        window = torch.cat([state, x_t.unsqueeze(-1)], dim=-1)  # (B D k), oldest first
        y = (window * self.conv.weight[:, 0]).sum(-1)  # (B D)
        if self.conv.bias is not None:
            y = y + self.conv.bias
        return y, window[..., 1:]
