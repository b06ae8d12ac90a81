"""What S4, DSS and S4D share: a bank of ``H`` SSM kernels applied as one long convolution.

Each channel ``h`` of ``u`` ``(B, L, H)`` is convolved with its kernel ``K̄_h`` (causal FFT
convolution, :func:`ssm.ops.fftconv.fftconv`), a skip ``D_h u_h`` is added, and then

    y = Linear_GLU( Dropout( GELU( K̄ * u + D u ) ) ),

S4's layer (S4 paper, Section 3.4; kept by DSS and S4D). Bidirectional: a second kernel reads
the reversed sequence, over strictly later steps. The kernel and the convolution run in float32
(float64 for a float64 layer) with autocast off: the FFT and the complex arithmetic need it.
A layer gives its kernel module (``kernel() -> (c, H, L)``, ``c = 2`` when bidirectional) and its
own recurrent step. Chapters *From ODE to S4*, *S4 v2*, *DSS* and *S4D*.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from ..ops.fftconv import fftconv


def check_config(cfg, *, even_state: str | None = "") -> None:
    """The checks every convolutional layer's config shares: ``d_state``, ``l_max``, the
    range of ``Δ`` at init and ``dropout``. ``even_state`` (``None`` when any size will do) is
    put after "d_state must be even" in the error: the layer stores one eigenvalue of each
    conjugate pair."""
    _checks.positive_int("d_state", cfg.d_state)
    if even_state is not None and cfg.d_state % 2:
        raise ValueError(
            f"d_state must be even {even_state}(one eigenvalue of each conjugate pair is "
            f"stored), got {cfg.d_state}"
        )
    if cfg.l_max is not None:
        _checks.positive_int("l_max", cfg.l_max)
    if not 0 < cfg.dt_min <= cfg.dt_max:
        raise ValueError(
            f"dt_min and dt_max must satisfy 0 < dt_min <= dt_max, got {cfg.dt_min} and "
            f"{cfg.dt_max}"
        )
    if not 0 <= cfg.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")


class ConvolutionalLayer(nn.Module):
    """The layer around a kernel module: skip ``D`` ``(H,)``, GELU, dropout, GLU projection.

    ``forward`` maps ``(batch, length, d_model)`` to the same shape, ``length <= l_max``.
    Subclasses set ``self.kernel`` and implement ``init_state`` and ``step`` (the SSM part of a
    step; :meth:`_output` applies the rest).
    """

    def __init__(self, cfg, d_model: int, kernel: nn.Module) -> None:
        super().__init__()
        _checks.positive_int("d_model", d_model)
        if cfg.l_max is None:
            raise ValueError(
                f"{type(cfg).__name__}.l_max must be set (the kernel length, at least the input "
                "length); Backbone.for_data sets it from the data set"
            )
        self.cfg, self.d_model = cfg, d_model
        self.kernel = kernel
        self.D = nn.Parameter(torch.randn(d_model))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))

    def _work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.D.dtype, torch.float32)

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        _checks.layer_input(x, self.d_model, ndim, shape)

    def _check_step(self, x_t: torch.Tensor, state: object, state_type: type) -> None:
        self._check_input(x_t, 2, "(batch, d_model)")
        if not isinstance(state, state_type) or state.x.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"state must be the {state_type.__name__} of init_state({x_t.shape[0]}) (one row "
                "per sequence of x_t)"
            )

    def _check_unidirectional(self) -> None:
        if self.cfg.bidirectional:
            raise ValueError(
                f"a bidirectional {type(self).__name__} layer has no recurrent step (its second "
                "kernel reads the future); build it with bidirectional=False to step"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, length, d_model)`` → ``y`` of the same shape."""
        self._check_input(x, 3, "(batch, length, d_model)")
        L = x.shape[1]
        if L > self.cfg.l_max:
            raise ValueError(
                f"x has length {L}, longer than the kernel length l_max={self.cfg.l_max}; "
                f"build the layer with a larger {type(self.cfg).__name__}.l_max"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = x.transpose(1, 2).to(self._work_dtype())  # (B H L)
            K = self.kernel()[..., :L].to(u.dtype)  # (c H L)
            y = fftconv(u, K[0], self.D.to(u.dtype))  # (B H L)
            if self.cfg.bidirectional:
                back = fftconv(u.flip(-1), K[1]).flip(-1)  # (B H L): Σ_j K1[j] u[l + j]
                y = y + nn.functional.pad(back[..., 1:], (0, 1))  # (B H L): Σ_j K1[j] u[l+1+j]
            y = self.dropout(self.activation(y)).transpose(1, 2)  # (B L H)
        return self.output(y)  # (B L H)

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """The position-wise part of a step: ``y`` ``(B, H)`` of the SSM → the layer's output."""
        with torch.autocast(device_type=y.device.type, enabled=False):
            y = self.dropout(self.activation(y))  # (B H)
        return self.output(y)
