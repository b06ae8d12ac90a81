"""Induction heads trained short and tested long (Mamba, Table 2): the long-kernel layers are
built for the longest test length, a reduced ci run gives every model an accuracy at every
length, the results are plain JSON, every summary line and figure covers every model, and the
claim reads constructed results as the chapter states it."""

from __future__ import annotations

import json

import pytest
from matplotlib.figure import Figure

from ssm.experiments import induction_extrapolation as ie
from ssm.experiments._training import LAYERS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("profile", ["ci", "full"])
def test_config_names_the_models_and_sizes_the_long_kernels(profile):
    cfg = ie.config(profile)
    longest = cfg["data"]["length"] * cfg["ratios"][-1]
    assert cfg["ratios"] == [2**k for k in range(len(cfg["ratios"]))]
    assert longest == (512 if profile == "ci" else 16384)
    assert list(cfg["models"]) == list(ie.MODELS)
    for key, spec in cfg["models"].items():
        layer = spec["layer"]
        assert layer["kind"] == ie.MODELS[key][1] and layer["kind"] in LAYERS
        assert spec["backbone"]["n_layers"] == 2
        if "l_max" in layer:
            assert layer["l_max"] == longest, key
    layers = {key: spec["layer"] for key, spec in cfg["models"].items()}
    assert layers["attention_abs"]["positions"] == "absolute"
    assert layers["attention_rope"]["positions"] == "rope"
    assert layers["mamba"]["selective"] == "all"
    assert cfg["models"]["mamba"]["backbone"]["ff"] == "none"
    json.dumps(cfg)


@pytest.fixture(scope="module")
def small_run():
    cfg = ie.config("ci")
    cfg["data"] = {**cfg["data"], "n_train": 64, "n_val": 16, "n_test": 16}
    cfg["ratios"] = [1, 2]
    cfg["train"] = {**cfg["train"], "steps": 3, "eval_every": 3, "warmup_steps": 1}
    return ie.run(cfg)


def test_every_model_is_scored_at_every_length(small_run):
    results = small_run
    assert results["lengths"] == [32, 64] and results["length"] == 32
    assert results["chance"] == pytest.approx(1 / 15)
    assert list(results["runs"]) == list(ie.MODELS)
    for key, r in results["runs"].items():
        assert r["diverged"] is None, key
        assert len(r["accuracy"]) == 2
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"]), key
        assert r["parameters"] > 0
        assert r["history"] and r["history"][-1]["step"] == 3
    json.dumps(results)  # no model left in the results


def test_summary_and_figures_cover_every_model(small_run):
    text = ie.summary(small_run)
    n = len(ie.MODELS)
    assert len(text.splitlines()) == 2 + 2 * n + 2
    assert all(label in text for label, *_ in ie.MODELS.values())
    fig = ie.plot(small_run)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].get_lines()) == n + 2  # a line per model, training length, chance
    assert fig.axes[0].get_xscale() == "log"
    assert len(ie.plot_training(small_run).axes[0].get_lines()) == n + 1


def hand_made(mamba, absolute, ratios=(1, 2, 4)) -> dict:
    runs = {key: {"accuracy": [0.5] * len(ratios), "parameters": 1000, "diverged": None,
                  "history": [{"step": 10, "val_accuracy": 0.5}]} for key in ie.MODELS}  # fmt: skip
    runs["mamba"]["accuracy"] = mamba
    runs["attention_abs"]["accuracy"] = absolute
    return {"length": 256, "lengths": [256 * r for r in ratios], "ratios": list(ratios),
            "chance": 1 / 15, "runs": runs}  # fmt: skip


def test_claim_on_constructed_results():
    assert ie.mamba_extrapolates(hand_made([1.0, 0.99, 0.95], [1.0, 0.5, 0.08])) is True
    assert ie.mamba_extrapolates(hand_made([1.0, 0.99, 0.6], [1.0, 0.5, 0.08])) is False
    assert ie.mamba_extrapolates(hand_made([1.0, 0.99, 0.95], [1.0, 0.9, 0.6])) is False
    assert ie.mamba_extrapolates(hand_made([1.0, None, None], [1.0, 0.5, 0.08])) is None
    only_training = hand_made([1.0], [1.0], ratios=(1,))
    assert ie.mamba_extrapolates(only_training) is None
    missing = hand_made([1.0, 1.0, 1.0], [1.0, 0.5, 0.08])
    del missing["runs"]["attention_abs"]
    assert ie.mamba_extrapolates(missing) is None


def test_a_diverged_model_is_shown_as_such():
    results = hand_made([None, None, None], [1.0, 0.5, 0.08])
    results["runs"]["mamba"]["diverged"] = {"step": 3, "message": "nan"}
    text = ie.summary(results)
    mamba_line = next(line for line in text.splitlines() if line.startswith("Mamba"))
    assert mamba_line.split()[-3:] == ["div"] * 3
    assert "no verdict" in text
    assert len(ie.plot(results).axes[0].get_lines()) == len(ie.MODELS) - 1 + 2


def test_paper_numbers_are_beside_ours():
    """The paper's MHA-Abs at x2 (58.6) sits under our x2 column; its x64 (7.8) is past the
    ci lengths and is named at the end of the line."""
    text = ie.summary(hand_made([1.0, 1.0, 1.0], [1.0, 0.5, 0.08]))
    lines = text.splitlines()
    paper = lines[lines.index(next(x for x in lines if x.startswith("MHA-Abs"))) + 1]
    assert paper.split()[:4] == ["paper", "·", "58.6", "26.6"]
    assert "x64: 7.8" in paper
