"""The recall-scaling experiment (MQAR against the length and the vocabulary): a reduced ci run
covers every model and setting with accuracies in [0, 1], the full profile's models build on the
shared backbone (RWKV as its time/channel stripes), the claims read constructed results right,
and every summary line and figure covers every run."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from ssm import tasks
from ssm.experiments import recall_scaling
from ssm.experiments._training import layer_config
from ssm.layers import Backbone, BackboneConfig, parameter_count

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ci_results():
    cfg = recall_scaling.config("ci")
    cfg["data"] = {**cfg["data"], "n_train": 32, "n_val": 16}
    cfg["train"] = {**cfg["train"], "steps": 3, "batch_size": 8, "warmup_steps": 1}
    return recall_scaling.run(cfg)


def test_ci_run_covers_every_model_and_setting(ci_results):
    cfg = recall_scaling.config("ci")
    keys = {s["key"] for s in recall_scaling.settings(cfg)}
    assert set(ci_results["runs"]) == set(recall_scaling.CI_MODELS)
    for runs in ci_results["runs"].values():
        assert set(runs) == keys
        for r in runs.values():
            assert r["diverged"] is None
            assert 0.0 <= r["accuracy"] <= 1.0
            assert r["parameters"] > 0
    assert ci_results["chance"] == {s["key"]: 1 / 16 if s["vocab_size"] == 32 else 1 / 32
                                    for s in recall_scaling.settings(cfg)}  # fmt: skip


def test_ci_summary_and_plot_cover_every_run(ci_results):
    text = recall_scaling.summary(ci_results)
    names = [recall_scaling.MODELS[m] for m in recall_scaling.CI_MODELS]
    rows = [line for line in text.splitlines() if line.split(" ")[0] in names]
    assert len(rows) == 2 * len(names)  # one row per model in each sweep's table
    assert "single-query" in text
    fig = recall_scaling.plot(ci_results)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.get_lines()) == len(names) + 1  # the models and chance


def test_full_profile_settings_and_models_build():
    cfg = recall_scaling.config("full")
    assert set(cfg["layers"]) == set(recall_scaling.MODELS)
    assert all(s["n_pairs"] == s["length"] // 16 for s in cfg["length_sweep"])
    assert len(recall_scaling.settings(cfg)) == 5  # L = 256, V = 256 is in both sweeps
    for s in recall_scaling.settings(cfg):
        tasks.mqar(2, length=s["length"], n_pairs=s["n_pairs"], vocab_size=s["vocab_size"])
    data = tasks.mqar(2, length=64, n_pairs=4, vocab_size=256)
    counts = {}
    for model, layer in cfg["layers"].items():
        backbone = recall_scaling.model_backbone(cfg, model)
        net = Backbone.for_data(BackboneConfig(**backbone), layer_config(layer), data)
        counts[model] = parameter_count(net)["total"]
        assert net(data.inputs).shape == (2, 64, 256)
    rwkv = recall_scaling.model_backbone(cfg, "rwkv")
    assert rwkv["n_layers"] == 2 * cfg["backbone"]["n_layers"] and rwkv["ff"] == "none"
    assert all(n > 0 for n in counts.values())


def hand_made(accuracies: dict[str, list[float | None]]) -> dict:
    """Results of the full profile's settings with the given accuracy per model: the length
    sweep's values, then the vocabulary sweep's (the shared setting takes the length sweep's)."""
    cfg = recall_scaling.config("full")
    lengths, vocabs = cfg["length_sweep"], cfg["vocab_sweep"]
    runs = {}
    for model, acc in accuracies.items():
        runs[model] = {}
        for s, a in zip(lengths + vocabs, acc, strict=True):
            run = {"accuracy": a, "parameters": 1000, "diverged": None if a is not None else {}}
            runs[model].setdefault(s["key"], run)
    return {
        "length_sweep": lengths,
        "vocab_sweep": vocabs,
        "chance": {s["key"]: recall_scaling.chance(s) for s in recall_scaling.settings(cfg)},
        "runs": runs,
    }


def test_claims_on_constructed_results():
    good = hand_made({
        "attention": [1.0, 0.99, 0.95, 1.0, 0.99, 0.9],
        "s4d": [0.8, 0.4, 0.1, 0.5, 0.4, 0.3],
    })  # fmt: skip
    assert recall_scaling.attention_recalls(good) is True
    assert recall_scaling.lti_fails_to_recall(good) is True
    bad = hand_made({
        "attention": [1.0, 0.99, 0.6, 1.0, 0.99, 0.9],
        "s4d": [1.0, 0.9, 0.5, 0.9, 0.9, 0.9],
    })  # fmt: skip
    assert recall_scaling.attention_recalls(bad) is False
    assert recall_scaling.lti_fails_to_recall(bad) is False
    diverged = hand_made({"attention": [1.0, None, 1.0, 1.0, 1.0, 1.0]})
    assert recall_scaling.attention_recalls(diverged) is None
    assert recall_scaling.lti_fails_to_recall(diverged) is None  # no S4D run


def test_summary_and_plot_cover_every_model_with_the_papers_numbers():
    acc = [0.9, 0.8, 0.7, 0.85, 0.8, 0.6]
    results = hand_made({m: acc for m in recall_scaling.MODELS})
    results["runs"]["rwkv"]["L1024_P64_V256"]["accuracy"] = None  # a diverged run
    text = recall_scaling.summary(results)
    for model, name in recall_scaling.MODELS.items():
        rows = [line for line in text.splitlines() if line.startswith(f"{name} ")]
        assert len(rows) == 2, model
    assert "97.2" in text and "99.8" in text and "86.0" in text  # Hyena, H3, S4D in H3's table
    assert "div" in text
    fig = recall_scaling.plot(results)
    for ax in fig.axes:
        assert len(ax.get_lines()) == len(recall_scaling.MODELS) + 1
