"""Stacks of different layers in one backbone: one config per block, built, sized and stepped."""

from __future__ import annotations

import pytest
import torch

from ssm.data import IGNORE, SequenceDataset
from ssm.layers import Backbone, BackboneConfig, S4Config, S4DConfig
from ssm.layers.hybrid import stripes
from ssm.layers.s4 import S4
from ssm.layers.s4d import S4D

pytestmark = pytest.mark.usefixtures("one_thread")

D, L, VOCAB = 8, 12, 5


def mixed(n_layers=3, pattern="SDS"):
    cfgs = stripes(pattern, S=S4Config(d_state=4, l_max=L), D=S4DConfig(d_state=4, l_max=L))
    return Backbone(
        BackboneConfig(d_model=D, n_layers=n_layers), cfgs, n_classes=VOCAB, vocab_size=VOCAB,
        per_step=True,
    )  # fmt: skip


def test_stripes_spells_one_config_per_letter():
    s4, s4d = S4Config(d_state=4), S4DConfig(d_state=4)
    assert stripes("ABBA", A=s4, B=s4d) == [s4, s4d, s4d, s4]


def test_each_block_is_built_from_its_config():
    model = mixed()
    assert [type(b.layer) for b in model.blocks] == [S4, S4D, S4]


def test_steps_of_a_mixed_stack_equal_its_forward():
    torch.manual_seed(0)
    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            model = mixed().eval()
        finally:
            torch.set_default_dtype(torch.float32)
    x = torch.randint(VOCAB, (2, L))
    full = model(x)  # (B L C)
    state = model.init_state(2)
    steps = []
    for t in range(L):
        y, state = model.step(x[:, t], state)
        steps.append(y)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-10)


def test_for_data_sizes_every_config_of_the_list():
    x = torch.zeros(4, L, dtype=torch.long)
    data = SequenceDataset(x, torch.full((4, L), IGNORE), n_classes=VOCAB, vocab_size=VOCAB)
    cfgs = stripes("SD", S=S4Config(d_state=4), D=S4DConfig(d_state=4, l_max=2 * L))
    model = Backbone.for_data(BackboneConfig(d_model=D, n_layers=2), cfgs, data)
    assert [b.layer.cfg.l_max for b in model.blocks] == [L, 2 * L]


def test_bad_stacks_are_refused():
    with pytest.raises(ValueError, match="one per block: n_layers=4, got 3"):
        mixed(n_layers=4)
    with pytest.raises(ValueError, match=r"letters \['X'\] that name no layer"):
        stripes("SX", S=S4Config())
    with pytest.raises(ValueError, match="non-empty string"):
        stripes("", S=S4Config())


def test_a_stripes_layer_dict_names_a_stack():
    from ssm.experiments._training import layer_config

    layers = {"D": {"kind": "s4d", "d_state": 4}, "S": {"kind": "s4", "d_state": 6}}
    spec = {"kind": "stripes", "pattern": "DSD", "layers": layers}
    cfgs = layer_config(spec)
    assert [type(c).__name__ for c in cfgs] == ["S4DConfig", "S4Config", "S4DConfig"]
    assert cfgs[1].d_state == 6
