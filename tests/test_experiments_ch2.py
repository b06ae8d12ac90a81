"""Chapter 2's training experiments: their configs, their bookkeeping and their figures.

The training itself is tested in tests/test_train.py and the layers in tests/test_s4_layer.py;
here the experiments' own logic is checked on hand-made results, so that a wrong ordering, a
missing run or a mislabelled curve fails without training anything.
"""

from __future__ import annotations

import dataclasses

import pytest
from matplotlib.figure import Figure

from ssm.experiments import available, hippo_ablation, mini_lra
from ssm.experiments._training import datasets, layer_config, layer_dict
from ssm.layers import BackboneConfig, S4Config
from ssm.train import TrainConfig

CH2 = ["hippo_ablation", "mini_lra"]


def test_registered():
    assert set(CH2) <= set(available())


@pytest.mark.parametrize("profile", ["ci", "full"])
def test_ablation_configs_rebuild_the_dataclasses(profile):
    cfg = hippo_ablation.config(profile)
    assert BackboneConfig(**cfg["backbone"]).d_model > 0
    assert TrainConfig(**cfg["train"]).steps > 0
    layer = layer_config(cfg["layer"])
    assert isinstance(layer, S4Config)
    assert layer_dict("s4", layer) == cfg["layer"]
    assert TrainConfig(**cfg["train"]).progress is (profile == "full")


def test_the_ablation_runs_every_initialization_trained_and_frozen():
    runs = hippo_ablation.variants(hippo_ablation.config("ci"))
    keys = {(r["parameterization"], r["init"], r["train_A"]) for r in runs}
    assert len(runs) == len(keys) == 10
    assert {(p, i) for p, i, _ in keys} == set(hippo_ablation.INITS)
    for r in runs:  # every variant builds
        S4Config(
            parameterization=r["parameterization"], init=r["init"], train_A=r["train_A"], l_max=8
        ).build(4)


def fake_results(accuracies: dict[tuple[str, str, bool], float]) -> dict:
    runs = []
    for (param, init, train_A), acc in accuracies.items():
        history = [
            {"step": s, "val_accuracy": acc * s / 100, "val_loss": 1.0, "train_loss": 1.0}
            for s in (50, 100)
        ]
        runs.append(
            {
                "parameterization": param,
                "init": init,
                "train_A": train_A,
                "label": hippo_ablation.INITS[(param, init)],
                "history": history,
                "final": history[-1],
                "parameters": {"total": 1000 + int(1000 * acc), "ssm": 10},
            }
        )
    return {"runs": runs}


ACC = {
    ("dense", "legs", True): 0.76,
    ("dense", "legs", False): 0.745,
    ("dense", "random_diagonal", True): 0.66,
    ("dense", "random_diagonal", False): 0.61,
    ("dense", "random_dense", True): 0.59,
    ("dense", "random_dense", False): 0.45,
    ("nplr", "legs", True): 0.80,
    ("nplr", "legs", False): 0.775,
    ("nplr", "random", True): 0.667,
    ("nplr", "random", False): 0.595,
}


def test_ordering_sorts_each_panel_by_final_accuracy():
    results = fake_results(ACC)
    assert hippo_ablation.ordering(results, "dense", True) == [
        "HiPPO-LegS",
        "random diagonal",
        "random dense",
    ]
    swapped = fake_results(ACC | {("dense", "random_dense", False): 0.9})
    assert hippo_ablation.ordering(swapped, "dense", False)[0] == "random dense"
    assert hippo_ablation.ordering(results, "nplr", False) == [
        "NPLR, HiPPO init",
        "NPLR, random init",
    ]


def test_summary_has_one_row_per_initialization_with_both_accuracies():
    lines = hippo_ablation.summary(fake_results(ACC)).splitlines()
    assert len(lines) == 2 + len(hippo_ablation.INITS)
    row = next(line for line in lines if line.startswith("random dense"))
    assert row.split()[2:] == ["59.0", "45.0", "1,590", "1,450"]


def test_ablation_plot_draws_every_run_in_its_panel():
    fig = hippo_ablation.plot(fake_results(ACC))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    dense, nplr = fig.axes
    assert len(dense.get_lines()) == 6 and len(nplr.get_lines()) == 4
    styles = {line.get_label(): line.get_linestyle() for line in dense.get_lines()}
    assert styles["HiPPO-LegS, A trained"] == "-" and styles["HiPPO-LegS, A frozen"] == "--"


@pytest.mark.parametrize("profile", ["ci", "full"])
def test_mini_lra_kernels_cover_each_task_length(profile):
    for name, spec in mini_lra.config(profile)["tasks"].items():
        data = spec["data"]
        length = data["max_length"] if name == "listops" else data["size"] ** 2
        assert spec["layer"]["l_max"] == length
        assert spec["layer"]["bidirectional"]


def test_mini_lra_summary_and_plot():
    record = {"step": 10, "val_accuracy": 0.5, "val_loss": 1.0, "train_loss": 1.0}
    task = {"history": [record], "final": record, "length": 64, "train": 100, "chance": 0.25}
    results = {"tasks": {"listops": task, "pathfinder": task | {"chance": 0.5}}}
    lines = mini_lra.summary(results).splitlines()
    assert lines[1].split() == ["ListOps", "64", "100", "50.0", "25.0"]
    assert len(mini_lra.plot(results).axes) == 2


def test_unknown_data_source_and_layer_kind_are_refused():
    with pytest.raises(ValueError, match="unknown data source"):
        datasets({"source": "imagenet"}, 0)
    with pytest.raises(ValueError, match="unknown layer kind"):
        layer_config({"kind": "lstm"})
    assert dataclasses.asdict(layer_config(layer_dict("s4", S4Config(l_max=4)))) == (
        dataclasses.asdict(S4Config(l_max=4))
    )


def test_a_diverged_run_is_reported_last_and_marked():
    results = fake_results(ACC)
    run = next(r for r in results["runs"] if r["init"] == "legs" and r["train_A"])
    run["diverged"] = {"step": 70, "message": "step 70: the loss itself is nan"}
    assert hippo_ablation.ordering(results, "dense", True)[-1] == "HiPPO-LegS"
    row = next(line for line in hippo_ablation.summary(results).splitlines() if "LegS" in line)
    assert row.split()[1] == "div"
    fig = hippo_ablation.plot(results)
    crosses = [line for line in fig.axes[0].get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [70]
