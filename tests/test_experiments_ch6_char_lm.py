"""Chapter 6's character-level language models: every model lands at the budget in both
profiles, a tiny run gives finite bits per character and a decoded sample for every model, every
summary line, sample and figure covers every model, and the claims hold on hand-made results."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from matplotlib.figure import Figure

from ssm.experiments import available, char_lm
from ssm.experiments._training import LAYERS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered_with_two_profiles():
    assert "char_lm" in available()
    assert char_lm.config("ci") != char_lm.config("full")
    with pytest.raises(ValueError, match="profile"):
        char_lm.config("huge")


@pytest.mark.parametrize("profile", ["ci", "full"])
def test_models_are_the_ones_compared(profile):
    cfg = char_lm.config(profile)
    layers = cfg["layers"]
    assert list(layers) == list(char_lm.MODELS)
    assert cfg["backbone"]["ff"] == "glu"
    assert layers["attention"]["positions"] == "rope"
    assert layers["mamba"]["selective"] == "all"
    hybrid = layers["hybrid"]
    assert hybrid["kind"] == "stripes" and hybrid["pattern"].count("A") == 1
    assert set(hybrid["layers"]) == {"M", "A"}
    assert char_lm.n_layers(cfg["backbone"], hybrid) == len(hybrid["pattern"])
    for kind, layer in layers.items():
        subs = layer["layers"].values() if layer["kind"] == "stripes" else [layer]
        assert all(sub["kind"] in LAYERS for sub in subs), kind
    longest = max(cfg["data"]["seq_len"], cfg["sample"]["prompt_len"] + cfg["sample"]["n_new"])
    assert layers["h3"]["l_max"] == layers["hyena"]["l_max"] == longest


@pytest.mark.parametrize("profile", ["ci", "full"])
def test_budget_lands_every_model_within_tolerance(profile):
    """The widths on a stand-in for the text data set (only its shape)."""
    cfg = char_lm.config(profile)
    data = SimpleNamespace(seq_len=cfg["data"]["seq_len"], n_classes=69, vocab_size=69,
                           d_input=None, per_step=True)  # fmt: skip
    for kind, layer in cfg["layers"].items():
        backbone = {**cfg["backbone"], "n_layers": char_lm.n_layers(cfg["backbone"], layer)}
        width, params = char_lm.width_for_budget(backbone, layer, cfg["budget"], data)
        assert width % char_lm.head_multiple(layer) == 0, kind
        assert abs(params - cfg["budget"]) <= char_lm.TOLERANCE * cfg["budget"], kind


def test_head_multiple_follows_the_attention_heads():
    cfg = char_lm.config("full")
    assert char_lm.head_multiple(cfg["layers"]["mamba"]) == 2
    assert char_lm.head_multiple(cfg["layers"]["attention"]) == 16
    assert char_lm.head_multiple(cfg["layers"]["hybrid"]) == 16


def test_bits_per_character_of_a_loss():
    assert char_lm.bpc(math.log(2)) == pytest.approx(1.0)
    assert char_lm.bpc(None) is None


@pytest.fixture(scope="module")
def tiny_run():
    cfg = char_lm.config("ci")
    cfg["data"] |= {"n_train": 64, "n_val": 16}
    cfg["train"] |= {"steps": 3, "warmup_steps": 0, "eval_every": 0}
    cfg["sample"] |= {"n_new": 12}
    return char_lm.run(cfg)


def test_tiny_run_has_a_finite_row_and_a_sample_per_model(tiny_run):
    assert json.loads(json.dumps(tiny_run)) == tiny_run
    runs = tiny_run["runs"]
    assert list(runs) == list(char_lm.MODELS)
    vocab_size = tiny_run["data"]["vocab_size"]
    assert len(tiny_run["prompt"]) == char_lm.config("ci")["sample"]["prompt_len"]
    budget = tiny_run["budget"]
    for kind, r in runs.items():
        assert r["diverged"] is None, kind
        assert 0 < r["bpc"] < 2 * math.log2(vocab_size), kind
        assert r["bpc"] == pytest.approx(r["history"][-1]["val_loss"] / math.log(2)), kind
        assert abs(r["parameters"] - budget) <= char_lm.TOLERANCE * budget, kind
        assert math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0, kind
        assert isinstance(r["sample"], str) and len(r["sample"]) == 12, kind
    assert runs["hybrid"]["n_layers"] == len(char_lm.config("ci")["layers"]["hybrid"]["pattern"])


def test_prompt_starts_a_word(tiny_run):
    assert tiny_run["prompt"][0] not in " \n"


def test_summary_samples_and_plot_cover_every_model(tiny_run):
    text = char_lm.summary(tiny_run)
    assert "ms/step" in text and "ms/step" not in char_lm.summary(tiny_run, timing=False)
    for kind, name in char_lm.MODELS.items():
        line = next(x for x in text.splitlines() if x.startswith(name + " "))
        assert f"{tiny_run['runs'][kind]['bpc']:.3f}" in line
    shown = char_lm.samples(tiny_run)
    assert tiny_run["prompt"] in shown
    for kind, name in char_lm.MODELS.items():
        assert f"--- {name} (" in shown and tiny_run["runs"][kind]["sample"] in shown
    fig = char_lm.plot(tiny_run)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert len(fig.axes[0].get_lines()) == len(char_lm.MODELS)
    assert len(char_lm.plot(tiny_run, timing=False).axes) == 2


def hand_made(bpcs: dict[str, float | None]) -> dict:
    runs = {
        kind: {"bpc": value, "parameters": 100, "d_model": 8, "n_layers": 2, "ms_per_step": 1.0,
               "history": [{"step": 1, "val_loss": 1.0}], "sample": None if value is None else "ab",
               "diverged": None if value is not None else {"step": 1, "message": "nan"}}
        for kind, value in bpcs.items()
    }  # fmt: skip
    return {"data": {"name": "text", "length": 8, "train": 1, "validation": 1, "vocab_size": 4},
            "budget": 100, "prompt": "x", "sample": {"n_new": 2, "temperature": 0.8},
            "runs": runs}  # fmt: skip


def test_ranking_orders_by_bits_per_character_and_drops_diverged_runs():
    results = hand_made({"attention": 2.0, "h3": 1.5, "hyena": None, "mamba": 1.2, "hybrid": 1.1})
    assert char_lm.ranking(results) == ["hybrid", "mamba", "h3", "attention"]
    assert "div" in char_lm.summary(results)
    assert "diverged" in char_lm.samples(results)
    assert isinstance(char_lm.plot(results), Figure)


def test_hybrid_claim():
    good = hand_made({"attention": 2.0, "mamba": 1.5, "hybrid": 1.505})
    bad = hand_made({"attention": 2.0, "mamba": 1.5, "hybrid": 1.6})
    missing = hand_made({"attention": 2.0, "mamba": None, "hybrid": 1.4})
    assert char_lm.hybrid_at_least_as_good(good) is True
    assert char_lm.hybrid_at_least_as_good(bad) is False
    assert char_lm.hybrid_at_least_as_good(missing) is None
    assert char_lm.hybrid_at_least_as_good(hand_made({"hybrid": 1.0})) is None
