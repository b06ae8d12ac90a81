"""Chapter 3's experiments: their configs, the properties the chapter claims of their results,
and their figures.

The kernels and recurrences themselves are tested in tests/test_dss.py; here each experiment is
run small (or its bookkeeping fed hand-made results) and its claims checked on the numbers:
round-off errors, where the naive recurrence overflows, where a kernel's mass lies, which model
ranks first.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ssm.experiments import (
    available,
    dss_discretization,
    dss_init,
    dss_interpretation,
    dss_overflow,
    dss_vs_s4,
    hippo_ablation,
    mini_lra,
)
from ssm.experiments._training import layer_config
from ssm.layers import BackboneConfig, DSSConfig, S4Config
from ssm.scan import dss_recurrence
from ssm.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CH3 = ["dss_discretization", "dss_init", "dss_interpretation", "dss_overflow", "dss_vs_s4"]


def test_registered():
    assert set(CH3) <= set(available())


# --- discretization -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def discretization():
    cfg = dss_discretization.config("ci") | {"eigenvalues": [[-0.5, 10.0], [-2.0, 3.0]]}
    return dss_discretization.run(cfg | {"length": 80})


def test_discretization_matches_the_closed_forms_to_round_off(discretization):
    assert dss_discretization.max_error(discretization) < dss_discretization.TOL
    for c in discretization["cases"]:
        for method in dss_discretization.METHODS:
            assert c[method]["abs_Ab"] < 1  # a stable λ stays stable under both methods


def test_bilinear_and_zoh_differ_and_converge_as_the_step_shrinks(discretization):
    by_lambda = {}
    for c in discretization["cases"]:
        by_lambda.setdefault(tuple(c["lambda"]), {})[c["dt"]] = c["gap"]
    for gaps in by_lambda.values():
        assert gaps[0.01] < gaps[0.1] / 10  # the gap shrinks faster than Δ
        assert gaps[0.01] > 0


def test_discretization_summary_and_plot(discretization):
    lines = dss_discretization.summary(discretization).splitlines()
    assert len(lines) == 2 + 2 * len(discretization["cases"])
    assert sum("< 1e-12" in line for line in lines) == 2 * len(discretization["cases"])
    fig = dss_discretization.plot(discretization)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # one panel per step of λ₀
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)


# --- overflow --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overflow():
    cfg = dss_overflow.config("ci") | {
        "length": 4096,
        "real_parts": [5.0, 10.0],
        "dt": 0.1,
        "check_length": 40,
        "every": 8,
    }
    return dss_overflow.run(cfg)


def test_recurrences_equal_the_convolution(overflow):
    assert {c["variant"] for c in overflow["check"]} == {"exp", "softmax"}
    assert any(c["real"][0] > 0 for c in overflow["check"])
    assert all(c["err"] < dss_overflow.TOL for c in overflow["check"])


def test_the_naive_recurrence_overflows_and_the_stable_one_does_not(overflow):
    for c in overflow["overflow"]["channels"]:
        assert c["state_overflow_step"] is not None
        assert abs(c["state_overflow_step"] - c["predicted_step"]) < 0.05 * c["predicted_step"]
        assert c["naive_nonfinite"] > 0
        assert c["stable_finite"] and c["stable_err"] < 1e-9


def test_the_naive_recurrence_is_right_where_re_lambda_is_negative():
    g = torch.Generator().manual_seed(1)
    Lambda, W, dt = dss_overflow.random_system(2, 3, (-1.0, -0.1), g)
    u = torch.randn(2, 30, generator=g, dtype=torch.float64)
    ys = [dss_overflow.naive_softmax_recurrence(Lambda[h : h + 1], W[h : h + 1],
                                                float(dt[h]), u[h : h + 1], 30)[0]
          for h in range(2)]  # fmt: skip
    stable = dss_recurrence(Lambda, W, dt, u, "softmax", eps=0)
    assert dss_overflow.rel_err(torch.cat(ys), stable) < 1e-10


def test_overflow_summary_and_plot(overflow):
    text = dss_overflow.summary(overflow)
    assert "L = 4,096" in text and text.count("True") == 2
    fig = dss_overflow.plot(overflow)
    lines = fig.axes[0].get_lines()
    crosses = [line for line in lines if line.get_marker() == "x"]
    assert len(crosses) == 2


# --- interpretation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interpretation():
    return dss_interpretation.run(dss_interpretation.config("ci"))


def test_a_smaller_forget_gate_keeps_less_history(interpretation):
    runs = sorted(interpretation["exp"], key=lambda r: -r["gate"])
    recent = [r["recent"] for r in runs]
    assert recent == sorted(recent) and recent[0] < 0.5 < recent[-1]
    assert all(math.isclose(r["gate"], math.exp(r["real_dt"])) for r in runs)


def test_the_softmax_looks_far_for_positive_and_near_for_negative_real_parts(interpretation):
    for r in interpretation["softmax"]:
        if r["real"] > 1e-2:
            assert r["distant"] > r["recent"] and r["mean_lag"] > 0.6
        elif r["real"] < -1e-2:
            assert r["recent"] > r["distant"] and r["mean_lag"] < 0.4
        else:
            assert abs(r["mean_lag"] - 0.5) < 0.01
            assert abs(r["recent"] - interpretation["edge"]) < 0.01


def test_interpretation_summary_and_plot(interpretation):
    lines = dss_interpretation.summary(interpretation).splitlines()
    assert len(lines) == 5 + len(interpretation["exp"]) + len(interpretation["softmax"])
    a, b = dss_interpretation.plot(interpretation).axes
    assert len(a.get_lines()) == len(interpretation["exp"])
    assert len(b.get_lines()) == len(interpretation["softmax"])


# --- initialization --------------------------------------------------------------------------


def test_init_is_legs_normal_part_gaussian_w_and_log_uniform_dt():
    results = dss_init.run(dss_init.config("ci") | {"d_state": 16, "d_model": 512})
    assert np.all(np.isclose(np.asarray(results["eigenvalues"]).real, -0.5))
    width = math.log(results["dt_max"]) - math.log(results["dt_min"])
    for r in results["layers"].values():
        assert r["lambda_err"] < 1e-6
        assert abs(r["W_re_std"] - 1) < 0.1 and abs(r["W_im_std"] - 1) < 0.1
        log_dt = np.asarray(r["log_dt"])
        assert log_dt.min() >= math.log(results["dt_min"]) - 1e-6
        assert log_dt.max() <= math.log(results["dt_max"]) + 1e-6
        assert abs(log_dt.std() - width / math.sqrt(12)) < 0.15
    assert len(dss_init.summary(results).splitlines()) == 4
    assert len(dss_init.plot(results).axes) == 2


# --- DSS vs S4 -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["ci", "full"])
def test_the_three_layers_share_data_backbone_and_budget(profile):
    cfg = dss_vs_s4.config(profile)
    assert cfg["models"] == list(dss_vs_s4.MODELS)
    assert cfg["tasks"]["long_range"]["data"] == hippo_ablation.config(profile)["data"]
    for name, spec in mini_lra.config(profile)["tasks"].items():
        assert cfg["tasks"][name]["data"] == spec["data"]
    for name, task in cfg["tasks"].items():
        train = TrainConfig(**task["train"])
        assert BackboneConfig(**task["backbone"]).d_model > 0
        assert train.progress is (profile == "full") and train.deterministic is (profile == "ci")
        if profile == "full" and name != "long_range":
            assert train.steps == dss_vs_s4.FULL_LRA_STEPS
        layers = [
            layer_config(dss_vs_s4.layer(m, task["d_state"], task["length"], task["bidirectional"]))
            for m in cfg["models"]
        ]
        assert isinstance(layers[0], S4Config) and layers[0].parameterization == "nplr"
        assert [lay.variant for lay in layers[1:]] == ["exp", "softmax"]
        assert all(isinstance(lay, DSSConfig) for lay in layers[1:])
        assert {(lay.d_state, lay.l_max, lay.bidirectional) for lay in layers} == {
            (task["d_state"], task["length"], task["bidirectional"])
        }
    assert cfg["threads"] == (1 if profile == "ci" else None)


def test_the_full_layers_build_at_their_sizes():
    cfg = dss_vs_s4.config("full")
    task = cfg["tasks"]["pathfinder"]
    for model in cfg["models"]:
        spec = dss_vs_s4.layer(model, task["d_state"], task["length"], task["bidirectional"])
        layer = layer_config(spec).build(8)
        y = layer(torch.randn(2, task["length"], 8))
        assert y.shape == (2, task["length"], 8) and torch.isfinite(y).all()


def fake_results(acc: dict[str, dict[str, float | None]]) -> dict:
    tasks = {}
    for name, scores in acc.items():
        runs = {}
        for model, a in scores.items():
            history = [{"step": s, "val_accuracy": (a or 0) * s / 100, "val_loss": 1.0,
                        "train_loss": 1.0} for s in (50, 100)]  # fmt: skip
            runs[model] = {"history": history, "final": history[-1],
                           "parameters": {"total": 1000}, "diverged": None}  # fmt: skip
            if a is None:
                runs[model]["diverged"] = {"step": 70, "message": "nan"}
        tasks[name] = {"data": name, "length": 64, "train": 100, "validation": 50,
                       "chance": 0.1, "runs": runs}  # fmt: skip
    return {"tasks": tasks}


ACC = {
    "long_range": {"s4": 0.9, "dss_exp": 0.7, "dss_softmax": 0.8},  # the paper's Image order
    "listops": {"s4": 0.6, "dss_exp": 0.5, "dss_softmax": 0.4},  # reversed
    "pathfinder": {"s4": 0.5, "dss_exp": 0.5, "dss_softmax": 0.5},  # a tie
}


def test_orderings_agree_disagree_or_tie():
    verdicts = {o["task"]: o["agrees"] for o in dss_vs_s4.orderings(fake_results(ACC))}
    assert verdicts == {"long_range": True, "listops": False, "pathfinder": None}
    swapped = ACC | {"long_range": {"s4": 0.7, "dss_exp": 0.9, "dss_softmax": 0.8}}
    assert not dss_vs_s4.orderings(fake_results(swapped))[0]["agrees"]
    text = dss_vs_s4.paper_comparison(fake_results(ACC))
    assert "DSS-softmax 60.6 > DSS-exp 59.7 > S4 57.6" in text
    assert "S4 60.0 > DSS-exp 50.0 > DSS-softmax 40.0" in text


def test_summary_and_plot_draw_every_run():
    results = fake_results(ACC | {"listops": {"s4": 0.6, "dss_exp": None, "dss_softmax": 0.4}})
    lines = dss_vs_s4.summary(results).splitlines()
    assert lines[1].split()[5:] == ["90.0", "70.0", "80.0", "10.0"]
    assert lines[2].split()[5] == "div"
    fig = dss_vs_s4.plot(results)
    assert len(fig.axes) == 3
    assert all(len([ln for ln in ax.get_lines() if ln.get_marker() != "x"]) == 4
               for ax in fig.axes)  # fmt: skip
    crosses = [ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "x"]
    assert len(crosses) == 1


def test_speech_commands_rows_come_from_the_paper_table():
    text = dss_vs_s4.speech_commands()
    assert "DSS-exp" in text and "98.20" in text and "arXiv:2203.14343" in text
