"""The backbone shared by every sequence layer: shapes, options, step mode, gradients, configs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ssm.data import IGNORE, SequenceDataset
from ssm.layers import Backbone, BackboneConfig, S4Config, parameter_count

D, L, VOCAB, FEATURES, CLASSES = 8, 20, 5, 3, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def s4_config(**kw) -> S4Config:
    return S4Config(**{"d_state": 8, "l_max": L, **kw})


def backbone(*, tokens=True, per_step=False, layer=None, dtype=torch.float64, **kw) -> Backbone:
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return Backbone(
            BackboneConfig(**{"d_model": D, "n_layers": 2, **kw}),
            layer or s4_config(),
            n_classes=CLASSES,
            vocab_size=VOCAB if tokens else None,
            d_input=None if tokens else FEATURES,
            per_step=per_step,
        )
    finally:
        torch.set_default_dtype(default)


def inputs(tokens: bool, batch: int = 2, length: int = L) -> torch.Tensor:
    if tokens:
        return torch.randint(0, VOCAB, (batch, length))
    return torch.randn(batch, length, FEATURES, dtype=torch.float64)


@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "features"])
@pytest.mark.parametrize("per_step", [False, True], ids=["per-sequence", "per-step"])
def test_output_shapes(tokens, per_step):
    model = backbone(tokens=tokens, per_step=per_step)
    y = model(inputs(tokens, length=13))
    assert y.shape == ((2, 13, CLASSES) if per_step else (2, CLASSES))
    assert bool(torch.isfinite(y).all())


OPTIONS = [
    pytest.param(dict(norm=norm, prenorm=prenorm, ff=ff), id=f"{norm}-{pre}-{ff}")
    for norm in ("layer", "batch")
    for prenorm, pre in ((True, "prenorm"), (False, "postnorm"))
    for ff in ("none", "glu", "mlp")
]


@pytest.mark.parametrize("options", OPTIONS)
def test_every_option_runs_and_trains_every_parameter(options):
    model = backbone(per_step=True, dropout=0.1, **options)
    model(inputs(True)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    n_ff = sum(1 for name, _ in model.named_parameters() if ".ff." in name)
    assert (n_ff > 0) == (options["ff"] != "none")


@pytest.mark.parametrize("options", OPTIONS)
def test_steps_equal_forward(options):
    model = backbone(per_step=True, **options).eval()  # batch norm: running statistics
    x = inputs(True)
    y = model(x)  # (B L C)
    state = model.init_state(2)
    steps = []
    for t in range(L):
        y_t, state = model.step(x[:, t], state)
        steps.append(y_t)
    assert torch.allclose(torch.stack(steps, dim=1), y, rtol=1e-10, atol=1e-10)


def test_steps_equal_forward_for_features_in_float32():
    model = backbone(tokens=False, per_step=True, dtype=torch.float32, ff="glu")
    x = inputs(False).float()
    y = model(x)
    state = model.init_state(2)
    steps = []
    for t in range(L):
        y_t, state = model.step(x[:, t], state)
        steps.append(y_t)
    assert torch.allclose(torch.stack(steps, dim=1), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_pooling_reads_the_per_step_logits(pool):
    """The decoder is affine: mean pooling gives the mean of the per-step logits, last pooling
    the last step's."""
    per_seq = backbone(pool=pool)
    per_step = backbone(pool=pool, per_step=True)
    per_step.load_state_dict(per_seq.state_dict())
    x = inputs(True)
    steps = per_step(x)  # (B L C)
    expected = steps.mean(1) if pool == "mean" else steps[:, -1]
    assert torch.allclose(per_seq(x), expected, rtol=1e-10, atol=1e-12)


def test_causal_per_step_model():
    model = backbone(per_step=True, ff="mlp")
    x = inputs(True)
    x2 = x.clone()
    x2[:, 12:] = (x2[:, 12:] + 1) % VOCAB
    y, y2 = model(x), model(x2)
    assert torch.allclose(y[:, :12], y2[:, :12], rtol=0, atol=1e-12)
    assert not torch.allclose(y[:, 12:], y2[:, 12:])


def test_step_refusals():
    with pytest.raises(ValueError, match="per_step=True"):
        backbone().init_state(2)
    with pytest.raises(ValueError, match="eval"):
        backbone(per_step=True, norm="batch").train().init_state(2)
    with pytest.raises(ValueError, match="bidirectional"):
        backbone(per_step=True, layer=s4_config(bidirectional=True)).init_state(2)


def test_for_data_reads_the_data_set():
    n = 6
    tokens = SequenceDataset(
        torch.randint(0, VOCAB, (n, L)),
        torch.full((n, L), IGNORE).index_fill_(1, torch.tensor([L - 1]), 1),
        n_classes=CLASSES,
        vocab_size=VOCAB,
    )
    features = SequenceDataset(
        torch.randn(n, L, FEATURES), torch.randint(0, CLASSES, (n,)), n_classes=CLASSES
    )
    cfg = BackboneConfig(d_model=D, n_layers=1)
    model = Backbone.for_data(cfg, S4Config(d_state=8), tokens)
    assert model.blocks[0].layer.cfg.l_max == L
    assert isinstance(model.encoder, torch.nn.Embedding) and model.encoder.num_embeddings == VOCAB
    assert model(tokens.inputs[:2]).shape == (2, L, CLASSES)
    model = Backbone.for_data(cfg, S4Config(d_state=8, l_max=2 * L), features)
    assert model.blocks[0].layer.cfg.l_max == 2 * L
    assert isinstance(model.encoder, torch.nn.Linear) and model.encoder.in_features == FEATURES
    assert model(features.inputs[:2]).shape == (2, CLASSES)
    with pytest.raises(ValueError, match="seq_len=20"):
        Backbone.for_data(cfg, S4Config(d_state=8, l_max=L - 1), features)


def test_parameter_count():
    """``ssm`` counts the S4 layers' own parameters, ``total`` loses the frozen ones."""
    H, N2, n_layers = D, 4, 2
    trained, frozen = backbone(), backbone(layer=s4_config(train_A=False))
    counts, frozen_counts = parameter_count(trained), parameter_count(frozen)
    w_and_P = H * N2 * (1 + 1 + 2)  # log_w_real, w_imag, P (a real view)
    B_and_dt = H * N2 * 2 + H
    assert counts["ssm"] == n_layers * (w_and_P + B_and_dt)
    assert frozen_counts["ssm"] == n_layers * B_and_dt
    assert counts["total"] - frozen_counts["total"] == n_layers * w_and_P
    assert counts["total"] == sum(p.numel() for p in trained.parameters())


def test_configs_are_json():
    for cfg in (BackboneConfig(norm="batch", ff="glu"), s4_config(parameterization="dense")):
        data = json.loads(json.dumps(dataclasses.asdict(cfg)))
        assert type(cfg)(**data) == cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "rms"}, "norm"),
        ({"ff": "swiglu"}, "ff"),
        ({"pool": "max"}, "pool"),
        ({"n_layers": 0}, "n_layers"),
        ({"dropout": -0.1}, "dropout"),
        ({"prenorm": 1}, "prenorm"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BackboneConfig(**kwargs)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="exactly one"):
        Backbone(BackboneConfig(d_model=D), s4_config(), n_classes=2)
    with pytest.raises(ValueError, match="exactly one"):
        Backbone(BackboneConfig(d_model=D), s4_config(), n_classes=2, vocab_size=3, d_input=3)
    with pytest.raises(ValueError, match="integer tokens"):
        backbone()(inputs(False))
    with pytest.raises(ValueError, match="d_input=3"):
        backbone(tokens=False)(torch.randn(2, L, FEATURES + 1, dtype=torch.float64))
