"""Chapter 5's Mega experiments: the EMA-as-convolution checks stay at round-off, the cost
measurement returns positive numbers for every length, chunked attention without the EMA cannot
see across chunks by construction, and every summary and figure covers every run."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from ssm.experiments import ema_convolution, mega_attention_cost, mega_chunk_ablation
from ssm.experiments._training import datasets, layer_config
from ssm.layers import Backbone, BackboneConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ema_identities_hold_to_round_off():
    cfg = {**ema_convolution.config("ci"), "L": 64}
    results = ema_convolution.run(cfg)
    assert len(results["errors"]) == 4
    assert all(error < 1e-12 for error in results["errors"].values())
    assert ema_convolution.summary(results).count("< 1e-12") == 4
    assert isinstance(ema_convolution.plot(results), Figure)


def test_cost_is_positive_for_every_length_and_variant():
    cfg = {**mega_attention_cost.config("ci"), "lengths": [32, 64], "repeats": 1}
    results = mega_attention_cost.run(cfg)
    assert {(r["variant"], r["n"]) for r in results["rows"]} == {
        (v, n) for v in mega_attention_cost.VARIANTS for n in (32, 64)
    }
    assert all(r["ms"] > 0 and r["mib"] > 0 for r in results["rows"])
    assert len(mega_attention_cost.summary(results).splitlines()) == 2 + 2
    assert isinstance(mega_attention_cost.plot(results), Figure)


def test_chunked_without_ema_cannot_see_the_first_chunk():
    """At init, the last step's logits have zero gradient w.r.t. the first chunk's embeddings
    without the EMA, and a nonzero one with it."""
    cfg = mega_chunk_ablation.config("ci")
    train_set, _ = datasets({**cfg["data"], "n_train": 4, "n_val": 4}, 0)
    chunk = cfg["layer"]["chunk_size"]
    grads = {}
    for arm in ("chunk_no_ema", "chunk_ema"):
        torch.manual_seed(0)
        layer = layer_config(mega_chunk_ablation.arm_layer(cfg, arm))
        model = Backbone.for_data(BackboneConfig(**cfg["backbone"]), layer, train_set)
        seen = {}

        def keep(module, args, out, seen=seen):
            out.retain_grad()
            seen["x"] = out

        model.encoder.register_forward_hook(keep)
        model(train_set.inputs[:2])[:, -1].sum().backward()  # (B L C): the scored step
        grads[arm] = float(seen["x"].grad[:, :chunk].abs().max())  # (B c D)
    assert grads["chunk_no_ema"] == 0.0
    assert grads["chunk_ema"] > 0.0


def hand_made(accuracies: dict[str, float]) -> dict:
    history = [{"step": s, "val_accuracy": a} for s in (0, 10) for a in (0.125,)]
    runs = {
        arm: {"history": history, "final": {"val_accuracy": acc}, "diverged": None}
        for arm, acc in accuracies.items()
    }
    cfg = mega_chunk_ablation.config("ci")
    return {"config": cfg, "length": 32, "chance": 0.125, "blind": 0.15, "runs": runs}


def test_ablation_summary_and_plot_cover_every_arm_and_give_the_verdict():
    good = hand_made({"chunk_ema": 0.9, "chunk_no_ema": 0.13, "full": 1.0})
    bad = hand_made({"chunk_ema": 0.14, "chunk_no_ema": 0.13, "full": 1.0})
    assert mega_chunk_ablation.ema_restores_context(good) is True
    assert mega_chunk_ablation.ema_restores_context(bad) is False
    text = mega_chunk_ablation.summary(good)
    assert all(label in text for label, _ in mega_chunk_ablation.ARMS.values())
    assert "restores" in text
    fig = mega_chunk_ablation.plot(good)
    assert len(fig.axes[0].get_lines()) == len(good["runs"]) + 1


def test_blind_accuracy_is_the_most_frequent_scored_target():
    targets = torch.full((4, 3), -100)
    targets[:, -1] = torch.tensor([2, 2, 5, 7])
    assert mega_chunk_ablation.blind_accuracy(targets) == 0.5
