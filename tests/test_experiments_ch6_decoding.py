"""Chapter 6's decoding-state table: the counts are those of the states' tensors, fixed for the
recurrent layers and growing by one entry per token for attention's cache and Hyena's."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from ssm.experiments import decoding_state as ds

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def results():
    return ds.run({**ds.config("ci"), "checkpoints": [1, 3, 8]})


def test_state_numbers_counts_nested_tensors_and_complex_twice():
    state = {"a": torch.zeros(2, 3), "b": [torch.zeros(4, dtype=torch.complex64), None]}
    assert ds.state_numbers(state) == 6 + 8


def test_recurrent_layers_keep_a_fixed_state_and_caches_grow(results):
    fixed = ds.fixed_state(results)
    assert fixed == {"attention": False, "hyena": False, "h3": True, "s4d": True,
                     "rwkv": True, "mamba": True}  # fmt: skip
    D = results["config"]["d_model"]
    assert ds.per_token(results, "attention") == 2 * D  # a key and a value per token
    assert ds.per_token(results, "hyena") == 2 * D  # the inputs of its order-2 convolutions


def test_the_state_sizes_follow_from_the_configs(results):
    D = results["config"]["d_model"]
    mamba = ds.layers(8)["mamba"][0]
    E = mamba.expand * D
    assert results["state"]["mamba"][0] == E * (mamba.d_conv - 1) + E * mamba.d_state
    s4d = ds.layers(8)["s4d"][0]
    assert results["state"]["s4d"][0] == D * s4d.d_state  # N/2 complex numbers per channel


def test_summary_and_plot_cover_every_model(results):
    text = ds.summary(results)
    assert all(name in text for name in ds.NAMES.values())
    assert len(text.splitlines()) == 2 + len(ds.NAMES)
    assert isinstance(ds.plot(results), Figure)
