"""The selective copying experiment (Mamba Table 1 at a reduced scale): a few steps of every
model give complete results, the second figure's data sits where the sequence puts it (data
tokens in the prefix, a kernel per block for the LTI model, a positive Δ_t per block and step for
the S6 one, Δ_t moving with the input while the kernel cannot), the verdict on selection reads
the accuracies, and every summary line and figure covers every model."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from ssm.experiments import selective_copying
from ssm.experiments._training import datasets, layer_config
from ssm.layers import Backbone, BackboneConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config() -> dict:
    cfg = selective_copying.config("ci")
    cfg["data"] = {**cfg["data"], "n_train": 64, "n_val": 16, "length": 16, "n_tokens": 2}
    cfg["train"] = {**cfg["train"], "steps": 4, "eval_every": 2, "warmup_steps": 1}
    return cfg


@pytest.fixture(scope="module")
def results() -> dict:
    return selective_copying.run(tiny_config())


def test_every_model_trains_and_is_recorded(results):
    assert list(results["runs"]) == list(selective_copying.MODELS)
    for r in results["runs"].values():
        assert r["diverged"] is None
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["parameters"] > 0
        assert [h["step"] for h in r["history"]] == [2, 4]
    assert results["chance"] == 1 / (8 - 2)
    assert results["data"]["length"] == 16


def test_kernel_figure_data_follow_the_sequence(results):
    v = results["kernels"]
    L, K = v["length"], results["data"]["n_tokens"]
    assert v["marker"] == L - K
    assert len(v["positions"]) == K and all(0 <= p < L - K for p in v["positions"])
    assert len(v["other_positions"]) == K
    n_layers = tiny_config()["backbone"]["n_layers"]
    assert len(v["kernel"]) == n_layers and all(len(k) == L for k in v["kernel"])
    assert len(v["delta"]) == n_layers
    for d in v["delta"]:
        assert len(d["mean"]) == L and len(d["channel_values"]) == L
        assert min(d["mean"]) > 0 and d["token_ratio"] > 0


def test_delta_moves_with_the_input_the_kernel_does_not():
    """The hook reads Δ_t = softplus(W_Δ(…) + b_Δ) > 0 of the S6 block, which changes when the
    data tokens move; the S4D kernel is a function of the layer's parameters alone."""
    cfg = tiny_config()
    train_set, _ = datasets(cfg["data"], 0)
    backbone = BackboneConfig(**cfg["backbone"])
    torch.manual_seed(0)
    s6 = Backbone.for_data(backbone, layer_config(cfg["layers"]["mamba_s6"]), train_set)
    a, b = (selective_copying.deltas(s6, train_set.inputs[i])[0] for i in (0, 1))
    assert a.shape == (16, s6.blocks[0].layer.d_inner) and (a > 0).all()
    assert not torch.allclose(a, b)
    s4d = Backbone.for_data(backbone, layer_config(cfg["layers"]["s4d"]), train_set)
    kernel = selective_copying.lti_kernels(s4d)
    s4d(train_set.inputs[:2])
    assert selective_copying.lti_kernels(s4d) == kernel


def test_token_positions_are_the_non_blank_prefix_steps():
    x = torch.tensor([0, 3, 0, 0, 5, 0, 7, 7])
    assert selective_copying.token_positions(x, 2) == [1, 4]


def hand_made(accuracies: dict[str, float | None]) -> dict:
    history = [{"step": s, "val_accuracy": 0.2} for s in (10, 20)]
    runs = {
        key: {"accuracy": acc, "parameters": 1000, "history": history, "wall_s": 1.0,
              "diverged": None if acc is not None else {"step": 5, "message": "nan"}}
        for key, acc in accuracies.items()
    }  # fmt: skip
    delta = {"mean": [0.1, 0.9, 0.1, 0.1, 0.8, 0.1, 0.2, 0.2], "channel": 3,
             "channel_values": [0.05, 2.0] + [0.05] * 6, "token_ratio": 8.5}  # fmt: skip
    kernel = [1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.0]
    views = {"index": 0, "length": 8, "marker": 6, "positions": [1, 4],
             "other_positions": [2, 3], "kernel": [kernel], "delta": [delta]}  # fmt: skip
    data = {"length": 8, "n_tokens": 2, "vocab_size": 8, "train": 10, "validation": 4}
    return {"data": data, "chance": 1 / 6, "runs": runs, "kernels": views}


LTI_LOW = {"mamba_lti": 0.4, "h3": 0.5, "hyena": 0.3, "s4d": 0.3}


def test_selection_wins_reads_the_margin_over_every_lti_model():
    good = hand_made({"mamba_s6": 0.99, "nogate_s6": 0.2, **LTI_LOW})
    close = hand_made({"mamba_s6": 0.6, "nogate_s6": 0.95, **LTI_LOW})
    diverged = hand_made({"mamba_s6": 0.99, **{**LTI_LOW, "h3": None}})
    assert selective_copying.selection_wins(good) is True
    assert selective_copying.selection_wins(close) is False
    assert selective_copying.selection_wins(diverged) is None
    assert selective_copying.selection_wins(hand_made({"mamba_s6": 0.99})) is None


def test_summary_and_figures_cover_every_model():
    results = hand_made({"mamba_s6": 0.99, "nogate_s6": 0.9, **LTI_LOW})
    text = selective_copying.summary(results)
    lines = text.splitlines()
    for key, (label, _, _) in selective_copying.MODELS.items():
        (line,) = [x for x in lines if x.startswith(label + " ")]
        paper = selective_copying.paper_accuracy(key)
        assert ("n/a" if paper is None else f"{paper:.1f}") in line
    assert "8.50" in text and "beats every time-invariant" in text
    fig = selective_copying.plot(results)
    assert isinstance(fig, Figure)
    ax, bx = fig.axes
    assert len(ax.patches) == len(results["runs"])
    labels = {label for label, _, _ in selective_copying.MODELS.values()}
    curves = [line for line in bx.get_lines() if line.get_label() in labels]
    assert len(curves) == len(results["runs"])
    assert isinstance(selective_copying.plot_kernels(results), Figure)


def test_kernel_figure_draws_without_the_kernel_or_delta_models():
    results = hand_made({"h3": 0.5})
    results["kernels"] = {**results["kernels"], "kernel": None, "delta": None}
    assert isinstance(selective_copying.plot_kernels(results), Figure)
    assert "Δ at data tokens" not in selective_copying.summary(results)


def test_paper_rows_are_table_1():
    assert selective_copying.PAPER[("Mamba", "S6")] == 99.8
    assert set(selective_copying.PAPER_ROWS.values()) <= set(selective_copying.PAPER)
