"""The residual backbone every sequence layer of the book is trained in.

One model for all layers, so that an ablation swaps one argument (the layer's config):

    encoder: embedding of tokens (B, L), or linear map of features (B, L, d_input) → (B, L, D)
    n_layers × block:  x ← x + Dropout(layer(Norm(x)))     (prenorm; postnorm: Norm(x + …))
                       x ← x + Dropout(FF(Norm(x)))        (optional position-wise sub-block)
    final Norm (prenorm)
    decoder: mean or last step, then Linear → (B, n_classes); or per step → (B, L, n_classes)

This is the model of the S4 authors' experiments (their standalone example and their LRA
configs): S4 puts a GLU output projection inside the layer and uses no separate MLP, which is
``ff="none"`` here; Mamba-style and Transformer-style stacks add one (``"glu"`` or ``"mlp"``).
The layer config may also be a list, one config per block: a hybrid stack (attention blocks
among Hyena or Mamba blocks, :func:`ssm.layers.hybrid.stripes`) or RWKV's alternation of time
and channel mixing. Explained in the book's Chapter 2, *S4 v2: how to train your HiPPO*, and
the list form in Chapter *2023*. Dimension letters: B batch, L length, D = d_model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import _checks
from ._params import is_ssm_parameter

__all__ = ["Backbone", "BackboneConfig", "Block", "FeedForward", "Norm", "parameter_count"]


@dataclass
class BackboneConfig:
    """Settings of the residual stack around a sequence layer. Every field is plain JSON."""

    d_model: int = 64  # D, the width of the residual stream and of every layer
    n_layers: int = 4  # number of residual blocks
    norm: str = "layer"  # "layer" (LayerNorm) or "batch" (BatchNorm over batch and length)
    prenorm: bool = True  # normalize each sub-block's input (True) or the residual sum (False)
    dropout: float = 0.0  # on each sub-block's output, before the residual sum
    ff: str = "none"  # position-wise sub-block after the layer: "glu", "mlp" or "none" (S4)
    ff_mult: int = 2  # hidden width of the feed-forward sub-block, in units of d_model
    pool: str = "mean"  # per-sequence targets read the "mean" over steps or the "last" step

    def __post_init__(self) -> None:
        _checks.positive_int("d_model", self.d_model)
        _checks.positive_int("n_layers", self.n_layers)
        _checks.choice("norm", self.norm, ("layer", "batch"))
        _checks.choice("ff", self.ff, ("glu", "mlp", "none"))
        _checks.positive_int("ff_mult", self.ff_mult)
        _checks.choice("pool", self.pool, ("mean", "last"))
        if not isinstance(self.prenorm, bool):
            raise ValueError(f"prenorm must be True or False, got {self.prenorm!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class Norm(nn.Module):
    """LayerNorm over ``D``, or BatchNorm over the batch and length, on ``(..., D)`` inputs.

    In step mode (``(B, D)`` inputs) batch norm uses its running statistics, so it needs
    ``eval()``: in training mode it would normalize over the one step of the batch.
    """

    def __init__(self, kind: str, d_model: int) -> None:
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(d_model) if kind == "layer" else nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, L, D)`` or ``(B, D)`` → same shape."""
        if self.kind == "layer" or x.ndim == 2:
            return self.norm(x)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B L D), normalized over B and L


class FeedForward(nn.Module):
    """Position-wise ``D → mult·D → D``: ``"mlp"`` with GELU, ``"glu"`` with a gated linear
    unit (``W₂ (W_a x ⊙ σ(W_b x))``, Dauphin et al. 2017; Shazeer 2020). ``(..., D)`` → same."""

    def __init__(self, kind: str, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        hidden = mult * d_model
        gate = [nn.Linear(d_model, 2 * hidden), nn.GLU(dim=-1)]
        mlp = [nn.Linear(d_model, hidden), nn.GELU()]
        self.net = nn.Sequential(
            *(gate if kind == "glu" else mlp), nn.Dropout(dropout), nn.Linear(hidden, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """One residual block: the sequence layer, then the optional feed-forward sub-block, each
    with its own norm and residual (pre- or post-norm). ``(B, L, D)`` → ``(B, L, D)``."""

    def __init__(self, cfg: BackboneConfig, layer_cfg: Any) -> None:
        super().__init__()
        self.prenorm = cfg.prenorm
        self.norm = Norm(cfg.norm, cfg.d_model)
        self.layer = layer_cfg.build(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.ff = None
        if cfg.ff != "none":
            self.ff = FeedForward(cfg.ff, cfg.d_model, cfg.ff_mult, cfg.dropout)
            self.ff_norm = Norm(cfg.norm, cfg.d_model)

    def _residual(self, x: torch.Tensor, norm: Norm, f) -> torch.Tensor:
        if self.prenorm:
            return x + self.dropout(f(norm(x)))
        return norm(x + self.dropout(f(x)))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.ff is None else self._residual(x, self.ff_norm, self.ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._feed_forward(self._residual(x, self.norm, self.layer))

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """``x_t`` ``(B, D)`` and the layer's state → ``(B, D)`` and its next state."""
        if self.prenorm:
            y, state = self.layer.step(self.norm(x_t), state)  # (B D)
            h = x_t + self.dropout(y)
        else:
            y, state = self.layer.step(x_t, state)  # (B D)
            h = self.norm(x_t + self.dropout(y))
        return self._feed_forward(h), state


class Backbone(nn.Module):
    """Encoder, ``n_layers`` residual blocks around any sequence layer, decoder.

    Args:
        cfg: the stack's settings (:class:`BackboneConfig`).
        layer_cfg: the sequence layer's config; ``layer_cfg.build(d_model)`` makes each block's
            layer (the protocol of :mod:`ssm.layers`). Or a list of ``cfg.n_layers`` configs,
            block ``i`` built from the ``i``-th.
        n_classes: width of the decoder.
        vocab_size: number of tokens of integer inputs ``(B, L)`` (an embedding encoder), or
        d_input: features per step of real inputs ``(B, L, d_input)`` (a linear encoder); give
            exactly one of the two.
        per_step: one prediction per step ``(B, L, n_classes)`` instead of one per sequence
            ``(B, n_classes)`` (pooled by ``cfg.pool``).

    ``init_state(batch)`` and ``step(x_t, state)`` run a per-step model one token at a time
    (causal layers only): the steps over a sequence equal ``forward``. With ``norm="batch"``
    stepping needs ``eval()`` (running statistics). Chapter 2, *S4 v2: how to train your HiPPO*.
    """

    def __init__(
        self,
        cfg: BackboneConfig,
        layer_cfg: Any,
        *,
        n_classes: int,
        vocab_size: int | None = None,
        d_input: int | None = None,
        per_step: bool = False,
    ) -> None:
        super().__init__()
        _checks.positive_int("n_classes", n_classes)
        if (vocab_size is None) == (d_input is None):
            raise ValueError(
                "give exactly one of vocab_size (token inputs) and d_input (real features), got "
                f"vocab_size={vocab_size} and d_input={d_input}"
            )
        layer_cfgs = _per_block(layer_cfg, cfg.n_layers)
        self.cfg, self.layer_cfg, self.per_step = cfg, layer_cfg, per_step
        self.vocab_size, self.d_input = vocab_size, d_input
        D = cfg.d_model
        if vocab_size is not None:
            self.encoder = nn.Embedding(_checks.positive_int("vocab_size", vocab_size), D)
        else:
            self.encoder = nn.Linear(_checks.positive_int("d_input", d_input), D)
        self.blocks = nn.ModuleList(Block(cfg, c) for c in layer_cfgs)
        self.norm = Norm(cfg.norm, D) if cfg.prenorm else nn.Identity()
        self.decoder = nn.Linear(D, n_classes)

    @classmethod
    def for_data(cls, cfg: BackboneConfig, layer_cfg: Any, dataset: Any) -> Backbone:
        """The backbone sized for ``dataset`` (an :class:`ssm.data.SequenceDataset`): its
        ``n_classes``, ``vocab_size``, ``d_input`` and ``per_step``. A layer config with an
        ``l_max`` of ``None`` gets the data set's ``seq_len``; a shorter one is refused."""
        if isinstance(layer_cfg, (list, tuple)):
            layer_cfg = [_sized(c, dataset.seq_len) for c in layer_cfg]
        else:
            layer_cfg = _sized(layer_cfg, dataset.seq_len)
        return cls(
            cfg,
            layer_cfg,
            n_classes=dataset.n_classes,
            vocab_size=dataset.vocab_size,
            d_input=dataset.d_input,
            per_step=dataset.per_step,
        )

    def _encode(self, x: torch.Tensor, step: bool) -> torch.Tensor:
        """Tokens ``(B, L)`` or features ``(B, L, d_input)`` (``(B,)`` or ``(B, d_input)`` for
        a step) → ``(B, L, D)`` (``(B, D)``)."""
        dims, ndim = ("batch", 1) if step else ("batch, length", 2)
        if self.vocab_size is not None:
            if x.ndim != ndim or x.is_floating_point() or x.is_complex():
                raise ValueError(
                    f"x must hold integer tokens of shape ({dims}), got {x.dtype} of shape "
                    f"{tuple(x.shape)}"
                )
        elif x.ndim != ndim + 1 or x.shape[-1] != self.d_input or not x.is_floating_point():
            raise ValueError(
                f"x must hold real features of shape ({dims}, d_input) with "
                f"d_input={self.d_input}, got {x.dtype} of shape {tuple(x.shape)}"
            )
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, L)`` tokens or ``(B, L, d_input)`` features → logits ``(B, n_classes)``,
        or ``(B, L, n_classes)`` for a per-step model."""
        h = self._encode(x, step=False)  # (B L D)
        for block in self.blocks:
            h = block(h)  # (B L D)
        h = self.norm(h)  # (B L D)
        if not self.per_step:
            h = h.mean(1) if self.cfg.pool == "mean" else h[:, -1]  # (B D)
        return self.decoder(h)  # (B n_classes) or (B L n_classes)

    def _check_step(self) -> None:
        if not self.per_step:
            raise ValueError(
                "step needs a per-step model (per_step=True): a per-sequence model predicts "
                "once, from the whole sequence"
            )
        if self.cfg.norm == "batch" and self.training:
            raise ValueError(
                "with norm='batch' stepping needs model.eval() (batch norm's running "
                "statistics; in training mode it would normalize over one step)"
            )

    def init_state(self, batch: int) -> list[Any]:
        """The recurrent state of every block's layer for ``batch`` sequences."""
        self._check_step()
        return [block.layer.init_state(batch) for block in self.blocks]

    def step(self, x_t: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """One step: ``x_t`` ``(B,)`` tokens or ``(B, d_input)`` → logits ``(B, n_classes)``,
        and the next state."""
        self._check_step()
        if not isinstance(state, list) or len(state) != len(self.blocks):
            raise ValueError(
                f"state must be the list of init_state (one entry per block, {len(self.blocks)})"
            )
        h = self._encode(x_t, step=True)  # (B D)
        new_state = []
        for block, s in zip(self.blocks, state, strict=True):
            h, s = block.step(h, s)  # (B D)
            new_state.append(s)
        return self.decoder(self.norm(h)), new_state  # (B n_classes)


def _per_block(layer_cfg: Any, n_layers: int) -> list[Any]:
    """One layer config per block: ``layer_cfg`` repeated, or the list itself."""
    if not isinstance(layer_cfg, (list, tuple)):
        return [layer_cfg] * n_layers
    if len(layer_cfg) != n_layers:
        raise ValueError(
            f"a list of layer configs needs one per block: n_layers={n_layers}, got "
            f"{len(layer_cfg)} configs"
        )
    return list(layer_cfg)


def _sized(layer_cfg: Any, seq_len: int) -> Any:
    """``layer_cfg`` with ``l_max = seq_len`` where it has an unset ``l_max``; refused when its
    ``l_max`` is shorter than ``seq_len``."""
    l_max = getattr(layer_cfg, "l_max", None)
    if dataclasses.is_dataclass(layer_cfg) and hasattr(layer_cfg, "l_max") and l_max is None:
        return dataclasses.replace(layer_cfg, l_max=seq_len)
    if l_max is not None and l_max < seq_len:
        raise ValueError(
            f"layer_cfg.l_max={l_max} is shorter than the data set's sequences "
            f"(seq_len={seq_len}); set l_max >= {seq_len} or None"
        )
    return layer_cfg


def parameter_count(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts of ``model``: ``{"total": …, "ssm": …}``, ``"ssm"`` those
    marked by :func:`ssm.layers.register` (frozen ones are buffers and not counted)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return {
        "total": sum(p.numel() for p in params),
        "ssm": sum(p.numel() for p in params if is_ssm_parameter(p)),
    }
