"""Sequence layers and the one backbone they share.

Every layer here is an ``nn.Module`` built from its config dataclass and the model width
``d_model`` (``config.build(d_model)``), with

- ``forward(x) -> y``, both ``(batch, length, d_model)``, causal unless built bidirectional;
- ``init_state(batch) -> state`` and ``step(x_t, state) -> (y_t, state)``, ``x_t`` and ``y_t``
  of shape ``(batch, d_model)``, for layers that have a recurrent form: prefill then steps
  equals ``forward``;
- its SSM parameters marked through :func:`ssm.layers.register` (own learning rate, no weight
  decay in :func:`ssm.train.param_groups`).

The backbone (:class:`Backbone`) stacks residual blocks (norm, layer, dropout, feed-forward)
around any such layer, so an ablation swaps one argument.
"""

from ._params import SSM_MARK, is_ssm_parameter, register
from .attention import Attention, AttentionConfig
from .backbone import Backbone, BackboneConfig, parameter_count
from .dss import DSS, DSSConfig
from .gss import GSS, GSSConfig
from .h3 import H3, H3Config
from .hybrid import stripes
from .hyena import Hyena, HyenaConfig
from .liquid_s4 import LiquidS4, LiquidS4Config
from .mamba import Mamba, MambaConfig
from .mega import Mega, MegaConfig
from .rwkv import RWKVChannelMix, RWKVChannelMixConfig, RWKVTimeMix, RWKVTimeMixConfig
from .s4 import S4, S4Config
from .s4d import S4D, S4DConfig
from .s5 import S5, S5Config
from .sgconv import SGConv, SGConvConfig

__all__ = [
    "DSS",
    "GSS",
    "H3",
    "S4",
    "S4D",
    "S5",
    "SSM_MARK",
    "Attention",
    "AttentionConfig",
    "Backbone",
    "BackboneConfig",
    "DSSConfig",
    "GSSConfig",
    "H3Config",
    "Hyena",
    "HyenaConfig",
    "LiquidS4",
    "LiquidS4Config",
    "Mamba",
    "MambaConfig",
    "Mega",
    "MegaConfig",
    "RWKVChannelMix",
    "RWKVChannelMixConfig",
    "RWKVTimeMix",
    "RWKVTimeMixConfig",
    "S4Config",
    "S4DConfig",
    "S5Config",
    "SGConv",
    "SGConvConfig",
    "is_ssm_parameter",
    "parameter_count",
    "register",
    "stripes",
]
