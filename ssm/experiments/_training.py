"""What every training experiment shares: data sets named in a config, and one fit.

An experiment's config names its data as a plain dict (``{"source": "digits", "length": 1024}``)
and its model and training as the dicts of :class:`ssm.layers.BackboneConfig`, a layer config
and :class:`ssm.train.TrainConfig` (``dataclasses.asdict``), so that everything a run depends on
is in the config and hence in its hash. :func:`fit` turns one such triple into a trained model's
history through the shared backbone and :func:`ssm.train.train`: no experiment has a loop or a
model of its own.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from .. import data, tasks, train
from ..layers import (
    AttentionConfig,
    Backbone,
    BackboneConfig,
    DSSConfig,
    GSSConfig,
    H3Config,
    HyenaConfig,
    LiquidS4Config,
    MambaConfig,
    MegaConfig,
    RWKVChannelMixConfig,
    RWKVTimeMixConfig,
    S4Config,
    S4DConfig,
    S5Config,
    SGConvConfig,
    parameter_count,
)
from ..layers.hybrid import stripes

#: The layer configs an experiment can name, by the ``"kind"`` key of its layer dict.
LAYERS = {
    "s4": S4Config,
    "dss": DSSConfig,
    "s4d": S4DConfig,
    "gss": GSSConfig,
    "mega": MegaConfig,
    "s5": S5Config,
    "liquid_s4": LiquidS4Config,
    "sgconv": SGConvConfig,
    "h3": H3Config,
    "hyena": HyenaConfig,
    "rwkv_time": RWKVTimeMixConfig,
    "rwkv_channel": RWKVChannelMixConfig,
    "attention": AttentionConfig,
    "mamba": MambaConfig,
}


def _task(generator):
    """A source of :mod:`ssm.tasks`: ``n_train`` sequences drawn with ``seed``, ``n_val`` with
    ``seed + 1``."""

    def source(seed: int, n_train: int, n_val: int, **kw: Any):
        return generator(n_train, seed=seed, **kw), generator(n_val, seed=seed + 1, **kw)

    return source


#: Data sets by the ``"source"`` key of a data dict: each returns ``(train, validation)``.
SOURCES = {
    "digits": lambda seed, **kw: data.digits(seed=seed, **kw),
    "mnist1d": lambda seed, **kw: data.mnist1d(seed=seed, **kw),
    "text": lambda seed, **kw: data.text(seed=seed, **kw),
    "copying": _task(tasks.copying),
    "selective_copying": _task(tasks.selective_copying),
    "mqar": _task(tasks.mqar),
    "listops": _task(tasks.listops),
    "pathfinder": _task(tasks.pathfinder),
}


def train_config(profile: str, **fields: Any) -> train.TrainConfig:
    """An experiment's training settings: ``fields``, and what its profile decides unless
    ``fields`` says otherwise: ``ci`` trains on the CPU, deterministically and without a
    progress bar (the committed outputs); ``full`` on the GPU when there is one, with the bar,
    allowing the faster non-deterministic kernels. Seed 0."""
    ci = profile == "ci"
    profiled = {"seed": 0, "device": "cpu" if ci else "auto", "deterministic": ci,
                "progress": not ci}  # fmt: skip
    return train.TrainConfig(**{**profiled, **fields})


def datasets(spec: dict[str, Any], seed: int) -> tuple[data.SequenceDataset, data.SequenceDataset]:
    """``(train, validation)`` of the data dict ``spec`` (its ``"source"`` and arguments)."""
    spec = dict(spec)
    source = spec.pop("source")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; available: {', '.join(SOURCES)}")
    return SOURCES[source](seed, **spec)


def layer_config(spec: dict[str, Any]) -> Any:
    """The layer config dataclass of a layer dict (its ``"kind"`` and fields); for the kind
    ``"stripes"``, the list of configs of a mixed stack (:func:`ssm.layers.hybrid.stripes`):
    ``{"kind": "stripes", "pattern": "MMMA", "layers": {"M": {...}, "A": {...}}}``."""
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind == "stripes":
        layers = {letter: layer_config(sub) for letter, sub in spec["layers"].items()}
        return stripes(spec["pattern"], **layers)
    if kind not in LAYERS:
        raise ValueError(f"unknown layer kind {kind!r}; available: {', '.join(LAYERS)}")
    return LAYERS[kind](**spec)


def layer_dict(kind: str, cfg: Any) -> dict[str, Any]:
    """The layer dict of a config dataclass, for an experiment's config."""
    return {"kind": kind, **dataclasses.asdict(cfg)}


def fit(
    train_set: data.SequenceDataset,
    val_set: data.SequenceDataset,
    backbone: dict[str, Any],
    layer: dict[str, Any],
    training: dict[str, Any],
    *,
    return_model: bool = False,
) -> dict[str, Any]:
    """Train one model of the shared backbone on ``train_set``; return its history and size.

    Returns ``{"history": [records], "final": record, "parameters": {...}, "wall_s": seconds,
    "diverged": None}`` where a record is ``{"step", "train_loss", "val_loss", "val_accuracy",
    "lr", "elapsed_s"}``. A run whose loss or gradients stop being finite is a result too (an
    unstable parameterization is what some ablations show): it ends there, ``diverged`` holds
    the step and the message, and ``final`` is its last evaluation (chance level, ``None``
    accuracy, if there was none). With ``return_model``, the trained model is under ``"model"``
    too (for evaluations after training: pop it before storing the results).
    """
    cfg = train.TrainConfig(**training)
    torch.manual_seed(cfg.seed)  # the initialization too, whatever ran before in the process
    model = Backbone.for_data(BackboneConfig(**backbone), layer_config(layer), train_set)
    start = time.perf_counter()
    diverged = None
    try:
        history = train.train(model, train_set, val_set, cfg)
    except train.NonFiniteError as error:
        history, diverged = error.history, {"step": error.step, "message": str(error)}
    records = history.as_dict()["records"]
    out = {
        "history": records,
        "final": records[-1] if records else {"step": 0, "val_accuracy": None},
        "parameters": parameter_count(model),
        "wall_s": time.perf_counter() - start,
        "diverged": diverged,
    }
    if return_model:
        out["model"] = model
    return out
