"""How a layer marks its SSM parameters for the optimizer (the S4 convention).

S4 and its successors train the state-space parameters (``Δ``, ``A``, ``B``, and ``P`` where
there is one) with their own, usually smaller, learning rate and no weight decay. The layer
says which they are when it registers them, through :func:`register`; the training loop
(:func:`ssm.train.param_groups`) only reads the mark, it never matches names.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SSM_MARK", "is_ssm_parameter", "register"]

#: Attribute set on every parameter registered by :func:`register` with ``ssm=True``.
SSM_MARK = "_ssm_parameter"


def register(
    module: nn.Module, name: str, value: torch.Tensor, *, trainable: bool = True, ssm: bool = True
) -> None:
    """Register ``value`` on ``module`` as ``name``: a parameter, or a buffer when frozen.

    With ``trainable=False`` the tensor is a buffer (moved with the module, saved in its state,
    never trained): how an ablation freezes ``A``. With ``ssm=True`` the parameter is marked as
    one of the SSM's own, for the optimizer group with its own learning rate and no weight decay.
    """
    if not trainable:
        module.register_buffer(name, value)
        return
    param = nn.Parameter(value)
    if ssm:
        setattr(param, SSM_MARK, True)
    module.register_parameter(name, param)


def is_ssm_parameter(param: torch.Tensor) -> bool:
    """Whether ``param`` was registered by :func:`register` as an SSM parameter."""
    return bool(getattr(param, SSM_MARK, False))
