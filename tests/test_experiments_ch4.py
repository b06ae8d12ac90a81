"""Chapter 4's experiments: the S4D ablations' configs and bookkeeping, the basis functions of the
S4D initializations, the S4/DSS/S4D table and kernel costs, and the GPU benchmark's smoke mode.

The layers are tested in tests/test_diagonal_layers.py; here the experiments' own logic is
checked on hand-made results (a wrong verdict, a missing arm or an undrawn run fails without
training anything), and the basis functions against an independent matrix exponential.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ssm import hippo
from ssm.experiments import (
    available,
    diagonal_cost,
    s4d_basis,
    s4d_discretization_ablation,
    s4d_init_ablation,
    s4d_kernel_ablation,
)
from ssm.experiments._training import layer_config, layer_dict
from ssm.layers import BackboneConfig, S4DConfig
from ssm.layers._diagonal import diagonal_init
from ssm.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
CH4 = [
    "s4d_basis",
    "diagonal_cost",
    "s4d_kernel_ablation",
    "s4d_discretization_ablation",
    "s4d_init_ablation",
]
ABLATIONS = [s4d_kernel_ablation, s4d_discretization_ablation, s4d_init_ablation]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered():
    assert set(CH4) <= set(available())


def arms(module, cfg) -> list[dict]:
    return list(cfg["arms"].values()) if isinstance(cfg["arms"], dict) else cfg["arms"]


@pytest.mark.parametrize("profile", ["ci", "full"])
@pytest.mark.parametrize("module", ABLATIONS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_ablation_configs_rebuild_the_dataclasses(module, profile):
    cfg = module.config(profile)
    assert BackboneConfig(**cfg["backbone"]).d_model > 0
    training = TrainConfig(**cfg["train"])
    assert training.progress is (profile == "full")
    assert training.deterministic is (profile == "ci")
    assert (cfg["threads"] == 1) is (profile == "ci")
    assert training.device == ("cpu" if profile == "ci" else "auto")
    layer = layer_config(cfg["layer"])
    assert isinstance(layer, S4DConfig)
    assert layer_dict("s4d", layer) == cfg["layer"]
    for arm in arms(module, cfg):  # every arm is a valid S4D config that builds
        layer_config({**cfg["layer"], **arm, "l_max": 8, "d_state": 4}).build(2)


def test_the_ablations_cover_every_arm_of_table_2_and_the_init_variants():
    k = {(a["kernel"], a["train_B"]) for a in s4d_kernel_ablation.config("ci")["arms"]}
    assert k == {(kern, b) for kern in ("softmax", "vandermonde") for b in (True, False)}
    d = {(a["discretization"], a["real_transform"])
         for a in s4d_discretization_ablation.config("ci")["arms"]}  # fmt: skip
    assert d == {(x, r) for x in ("zoh", "bilinear") for r in ("exp", "relu", "none")}
    inits = list(s4d_init_ablation.config("ci")["arms"].values())
    assert {a["init"] for a in inits} == {"legs", "inv", "lin"}
    assert {a.get("imag_scale") for a in inits} >= {0.1, 10.0}
    assert any(a.get("random_imag") and not a.get("random_real") for a in inits)
    assert any(a.get("random_real") and not a.get("random_imag") for a in inits)
    assert any(a.get("random_real") and a.get("random_imag") for a in inits)
    # every arm has its paper row, and no two arms share a label
    for module in (s4d_kernel_ablation, s4d_discretization_ablation):
        labels = [s4d_kernel_ablation.label(a) for a in module.ARMS]
        assert len(set(labels)) == len(labels)
        assert all(module._paper_row(a)["scifar"] > 80 for a in module.ARMS)


def fake_results(module, acc: dict[str, list[float | None]]) -> dict:
    """Runs of ``module``'s arms with the given final accuracies (fraction) per seed."""
    cfg = module.config("ci")
    items = list(cfg["arms"].items()) if isinstance(cfg["arms"], dict) else [
        (s4d_kernel_ablation.label(a), a) for a in cfg["arms"]
    ]  # fmt: skip
    runs = []
    for lab, arm in items:
        for seed, value in enumerate(acc[lab]):
            history = [{"step": s, "val_accuracy": (value or 0.1) * s / 100} for s in (50, 100)]
            runs.append({**arm, "label": lab, "seed": seed, "history": history,
                         "final": history[-1],
                         "diverged": {"step": 60} if value is None else None})  # fmt: skip
    return {"runs": runs}


KERNEL = {
    "softmax, B frozen": [0.80, 0.81],
    "vandermonde, B frozen": [0.80, 0.80],
    "softmax, B trained": [0.90, 0.90],
    "vandermonde, B trained": [0.90, 0.91],
}


def test_kernel_findings_follow_the_seed_spread():
    text = s4d_kernel_ablation.findings(fake_results(s4d_kernel_ablation, KERNEL))
    lines = text.splitlines()
    assert "1.0 points" in lines[0]
    assert "paper +0.13" in lines[1] and "agrees (no gap" in lines[1]  # 0 within spread 1
    assert "this run +10.0" in lines[2] and lines[2].endswith("-> agrees")
    frozen_better = KERNEL | {
        "softmax, B trained": [0.5, 0.5],
        "vandermonde, B trained": [0.5, 0.5],
    }
    text = s4d_kernel_ablation.findings(fake_results(s4d_kernel_ablation, frozen_better))
    assert text.splitlines()[2].endswith("-> disagrees")
    one_seed = {k: v[:1] for k, v in KERNEL.items()}
    text = s4d_kernel_ablation.findings(fake_results(s4d_kernel_ablation, one_seed))
    assert "cannot separate" in text.splitlines()[2]


def test_verdicts():
    v = s4d_kernel_ablation.verdict
    assert v(2.0, 0.5, "differ", 1.0) == "agrees"
    assert v(-2.0, 0.5, "differ", 1.0) == "disagrees"
    assert "not resolved" in v(0.5, 0.5, "differ", 1.0)
    assert v(3.0, 0.1, "same", 1.0) == "disagrees"
    assert "agrees" in v(0.3, 0.1, "same", 1.0)
    assert "diverged" in v(None, 0.1, "same", 1.0)


def test_discretization_findings_and_paper_rows():
    acc = {s4d_kernel_ablation.label(a): [0.7, 0.7] for a in s4d_discretization_ablation.ARMS}
    acc["bilinear, Re A free"] = [0.9, 0.9]
    acc["ZOH, Re A free"] = [0.9, 0.9]
    results = fake_results(s4d_discretization_ablation, acc)
    lines = s4d_discretization_ablation.findings(results).splitlines()
    assert "paper +0.15" in lines[1] and "this run +0.0" in lines[1]
    assert (
        "paper +0.14" in lines[2] and "this run +20.0" in lines[2] and lines[2].endswith("agrees")
    )
    table = s4d_discretization_ablation.summary(results).splitlines()
    row = next(line for line in table if line.startswith("bilinear, Re A free"))
    assert row.split()[-6:] == ["85.35", "90.58", "0.1102", "90.0", "90.0", "90.0"]


def test_init_summary_and_findings():
    acc = {lab: [0.8] for lab in s4d_init_ablation.ARMS}
    acc["Inv, Im A x 0.1"] = [0.5]
    acc["Inv, random Re A"] = [None]
    results = fake_results(s4d_init_ablation, acc)
    table = s4d_init_ablation.summary(results).splitlines()
    assert len(table) == 1 + len(s4d_init_ablation.ARMS)
    assert next(r for r in table if r.startswith("Inv, Im A x 0.1")).split()[-3:] == [
        "50.0", "-30.0", "50.0"
    ]  # fmt: skip
    findings = s4d_init_ablation.findings(results)
    assert findings.count("(5)") == 5
    assert "diverged" in next(r for r in findings.splitlines() if "random Re A -" in r)


@pytest.mark.parametrize("module", ABLATIONS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_ablation_plots_draw_every_run(module):
    cfg = module.config("ci")
    labels = list(cfg["arms"]) if isinstance(cfg["arms"], dict) else [
        s4d_kernel_ablation.label(a) for a in cfg["arms"]
    ]  # fmt: skip
    acc = {lab: [0.5 + 0.01 * i, 0.6] for i, lab in enumerate(labels)}
    acc[labels[-1]] = [None, 0.6]  # a diverged run gets a cross
    fig = module.plot(fake_results(module, acc))
    assert isinstance(fig, Figure)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 * len(labels) + 1
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == labels


@pytest.mark.parametrize("init", ["legs", "inv", "lin"])
def test_diagonal_basis_is_the_matrix_exponential(init):
    N, t = 16, np.linspace(0.0, 2.0, 7)
    A, B = diagonal_init(init, N, 1)
    expected = torch.stack(
        [torch.linalg.matrix_exp(s * torch.diag(A[0])) @ B[0] for s in t.tolist()], dim=-1
    )  # (N2 T)
    np.testing.assert_allclose(s4d_basis.diagonal_basis(init, N, t), expected.numpy(), atol=1e-10)


def test_basis_run_draws_the_right_functions():
    cfg = s4d_basis.config("ci") | {"points": 41, "spectrum_sizes": [8, 16]}
    results = s4d_basis.run(cfg)
    t = results["t"]
    for init in s4d_basis.INITS:
        idx = results["indices"][init]
        full = s4d_basis.diagonal_basis(init, cfg["N"], t)
        np.testing.assert_allclose(results["diagonal"][init], full[idx].real)
        A, _ = diagonal_init(init, cfg["N"], 1)
        frequencies = A[0].imag.abs().numpy()
        assert frequencies[idx].max() <= np.delete(frequencies, idx).min()  # the slowest
    np.testing.assert_allclose(results["s4"]["legs"], hippo.basis("legs", cfg["N"], t)[:4])
    gaps = results["gaps"]["16"]
    assert gaps["lin_vs_fout_abs"] < 1e-9 and gaps["legs_real_parts"] < 1e-9
    assert 0.05 < gaps["inv_vs_legs_median_rel"] < 0.3
    fig = s4d_basis.plot(results)
    assert len(fig.axes) == 6
    assert all(len(ax.get_lines()) == 4 for ax in fig.axes[:5])
    assert len(fig.axes[5].get_lines()) == 4


def test_the_comparison_table_follows_the_configs(monkeypatch):
    text = diagonal_cost.table()
    assert text == diagonal_cost.table()
    assert [r["layer"] for r in diagonal_cost.rows()] == ["S4", "DSS", "S4D"]
    assert "exp | relu | none" in text and "ZOH | bilinear (default 'zoh')" in text
    assert "init 'inv'" in text and "Vandermonde" in text
    monkeypatch.setattr(
        diagonal_cost, "S4DConfig", dataclasses.make_dataclass(
            "S4DConfig", [("init", str, "lin"), ("real_transform", str, "exp"),
                          ("discretization", str, "bilinear"), ("kernel", str, "vandermonde")]
        ),
    )  # fmt: skip
    changed = diagonal_cost.table()
    assert "init 'lin'" in changed and "(default 'bilinear')" in changed


def test_kernel_costs_cover_every_layer_and_size():
    cfg = diagonal_cost.config("ci") | {"H": 4, "sizes": [4, 8], "lengths": [16, 32],
                                        "repeats": 1}  # fmt: skip
    results = diagonal_cost.run(cfg)
    keys = {(r["layer"], r["N"], r["L"]) for r in results["ms"]}
    assert keys == {(n, N, L) for n in diagonal_cost.LAYERS for N in (4, 8) for L in (16, 32)}
    assert all(r["ms"] > 0 for r in results["ms"])
    assert len(diagonal_cost.summary(results).splitlines()) == 2 + 4 * 2
    fig = diagonal_cost.plot(results)
    assert len(fig.axes[0].get_lines()) == 8


def test_step_decoding_equals_the_convolution():
    for options in ({}, {"discretization": "bilinear"}, {"kernel": "softmax"}):
        error = diagonal_cost.step_error(S4DConfig(d_state=8, l_max=24, **options), 4, 2)
        assert error < 1e-10
        assert diagonal_cost.error_bound(error) == "< 1e-12"
    assert diagonal_cost.error_bound(3e-3) == "< 1e0"


def fake_benchmark() -> dict:
    cases = [
        {"layer": n, "N": N, "L": L, "ms_fwd": 0.1 * L / 1024, "ms_fwd_bwd": 0.3 * L / 1024}
        for n in diagonal_cost.LAYERS for N in (64, 256) for L in (1024, 4096)
    ]  # fmt: skip
    cases[-1] = {"layer": "S4D", "N": 256, "L": 4096, "error": "skipped: out of memory"}
    return {
        "benchmark": "diagonal kernels", "device": "GPU X", "torch": "2", "triton": "3",
        "commit": "0123456789abcdef", "date": "2026-01-01T00:00:00", "timer": "do_bench",
        "sizes": {"H": 256, "N": [64, 256], "L": [1024, 4096]},
        "layers": list(diagonal_cost.LAYERS), "cases": cases,
    }  # fmt: skip


def test_benchmark_summary_and_plot_leave_out_failed_cases(tmp_path):
    bench = fake_benchmark()
    text = diagonal_cost.benchmark_summary(bench)
    assert "failed" in text.splitlines()[-1] and "0.100 / 0.300" in text
    assert "GPU X" in diagonal_cost.describe_benchmark(bench)
    fig = diagonal_cost.plot_benchmark(bench)
    lengths = [len(line.get_xdata()) for line in fig.axes[0].get_lines()]
    assert sorted(lengths) == [1] + [2] * 7
    missing = diagonal_cost.config("ci") | {"file": str(tmp_path / "none.json")}
    assert diagonal_cost.stored_benchmark(missing) is None
    assert "not measured yet" in diagonal_cost.describe_benchmark(None)


def test_benchmark_smoke_writes_a_valid_json(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_diagonal_kernels.py"), "--smoke",
           "--H", "2", "--sizes", "4", "--lengths", "8", "--out", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, timeout=300)
    bench = json.loads((tmp_path / "diagonal_kernels.json").read_text())
    assert bench["smoke"] is True and bench["layers"] == list(diagonal_cost.LAYERS)
    assert {c["layer"] for c in bench["cases"]} == set(diagonal_cost.LAYERS)
    assert all("error" not in c and c["ms_fwd_bwd"] > 0 for c in bench["cases"])
    assert diagonal_cost.benchmark_summary(bench)
    for key in ("commit", "device", "torch", "triton", "date", "timer"):
        assert key in bench
