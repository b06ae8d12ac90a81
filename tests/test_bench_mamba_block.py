"""The Mamba block benchmark: its CPU smoke mode writes the JSON the chapter reads, the copy of
mamba_ssm's parameters into ours is one to one, and the chapter's table and figure are drawn
from a stored record (a constructed one with every method, failures included).

Nothing is measured here: the numbers come from the GPU (benchmarks/bench_mamba_block.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from ssm.experiments import available, mamba_speed
from ssm.layers import MambaConfig

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_mamba_block.py"
OURS, THEIRS, ATTN = mamba_speed.OURS, mamba_speed.THEIRS, mamba_speed.ATTN


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_mamba_block", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--lengths", "16,32", "--decode-batches",
           "1,2", "--prefill", "8", "--contexts", "8,16", "--steps", "3",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout and "decoding, one block" in proc.stdout
    return json.loads((out / "mamba_block.json").read_text())


def test_smoke_records_provenance_and_sizes(smoke):
    for key in ("commit", "device", "torch", "triton", "date", "timer", "decode_timer"):
        assert key in smoke
    assert smoke["smoke"] is True and smoke["tf32"] is False
    assert smoke["sizes"]["L"] == [16, 32] and smoke["sizes"]["precisions"] == ["bf16", "fp32"]
    assert smoke["ours_config"]["MambaConfig"]["d_state"] == 16
    assert smoke["theirs_config"]["Mamba"] == {"d_model": 32, "d_state": 16, "d_conv": 4,
                                               "expand": 2}  # fmt: skip
    assert smoke["attention_config"]["AttentionConfig"]["positions"] == "rope"
    assert smoke["mamba_ssm"]["status"].startswith("not run")  # no CUDA: theirs unavailable
    assert set(smoke["params"]) == {OURS, ATTN}


def test_smoke_times_ours_and_attention_in_training(smoke):
    cases = smoke["training"]
    assert [(c["precision"], c["L"]) for c in cases] == [
        ("bf16", 16), ("bf16", 32), ("fp32", 16), ("fp32", 32)
    ]  # fmt: skip
    for c in cases:
        for impl in (OURS, ATTN):
            rec = c["layer"][impl]
            assert "error" not in rec, rec
            assert rec["ms_fwd"] > 0 and rec["ms_fwd_bwd"] > 0 and rec["tokens_per_s"] > 0
        assert c["layer"][OURS]["output_dtype"] == ("bfloat16" if c["precision"] == "bf16"
                                                    else "float32")  # fmt: skip
        assert "not run" in c["layer"][THEIRS]["error"]
        assert c["time_ratio_ours_over_theirs"] == {"fwd": None, "fwd_bwd": None}
        ratio = c["time_ratio_ours_over_attention"]["fwd_bwd"]
        assert ratio == pytest.approx(
            c["layer"][OURS]["ms_fwd_bwd"] / c["layer"][ATTN]["ms_fwd_bwd"], rel=1e-2
        )
        assert "rel_error_ours_vs_theirs" not in c
        assert c["sdpa"]["backend"] != "unknown" and c["sdpa"]["ops"]


def test_smoke_times_decoding_steps(smoke):
    cases = smoke["decoding"]
    assert [(c["precision"], c["batch"]) for c in cases] == [
        ("bf16", 1), ("bf16", 2), ("fp32", 1), ("fp32", 2)
    ]  # fmt: skip
    for c in cases:
        assert c["prefill"] == 8 and c["steps"] == 3 and c["cuda_graphs"] is False
        assert set(c["layer"]) == {OURS, THEIRS, f"{ATTN} (context 8)", f"{ATTN} (context 16)"}
        assert "not run" in c["layer"][THEIRS]["error"]
        for key in (OURS, f"{ATTN} (context 8)", f"{ATTN} (context 16)"):
            rec = c["layer"][key]
            assert "error" not in rec, rec
            assert rec["tokens_per_s"] == round(c["batch"] / (rec["ms_per_step_median"] * 1e-3))
            assert rec["state_MiB"] > 0
        attn = c["layer"][f"{ATTN} (context 16)"]
        assert attn["context"] == 16 and attn["context_at_end"] == 16 + c["warmup_steps"] + 3
        assert set(c["time_ratio_ours_over_attention"]) == {"8", "16"}
        assert c["time_ratio_ours_over_theirs"] is None


def test_smoke_record_gives_the_chapter_table_and_figure(smoke):
    text = mamba_speed.summary(smoke)
    assert "mamba_ssm" in text and "tokens / s" in text
    fig = mamba_speed.plot(smoke)
    assert isinstance(fig, Figure) and len(fig.axes) == 2


class _TheirLayout(nn.Module):
    """mamba_ssm's mamba_simple.Mamba parameters (names and shapes), without its code."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        E, R = expand * d_model, math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E)
        self.A_log = nn.Parameter(torch.randn(E, d_state))
        self.D = nn.Parameter(torch.randn(E))
        self.out_proj = nn.Linear(E, d_model, bias=False)


def test_their_parameters_map_one_to_one_onto_ours():
    bench = bench_module()
    torch.manual_seed(0)
    theirs, ours = _TheirLayout(32), MambaConfig().build(32)
    mapping = bench.copy_theirs_into_ours(theirs, ours)
    tp, op = dict(theirs.named_parameters()), dict(ours.named_parameters())
    assert set(mapping) == set(tp) and set(mapping.values()) == set(op)
    for t, o in mapping.items():
        assert torch.equal(tp[t], op[o]), (t, o)
    with pytest.raises(ValueError, match="shapes differ"):
        bench.copy_theirs_into_ours(_TheirLayout(32, d_state=8), MambaConfig().build(32))
    theirs.extra = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="one to one"):
        bench.copy_theirs_into_ours(theirs, ours)


def constructed() -> dict:
    """A record as the GPU run writes it: every method, one out-of-memory case."""
    training = []
    for prec in ("bf16", "fp32"):
        for L in (512, 2048, 8192, 16384):
            scale = 1 if prec == "bf16" else 3
            layer = {
                OURS: {"ms_fwd": 0.3 * scale * L / 512, "ms_fwd_bwd": scale * L / 512},
                THEIRS: {"ms_fwd": 0.4 * scale * L / 512, "ms_fwd_bwd": 1.5 * scale * L / 512},
                ATTN: {"ms_fwd": 0.2 * scale * (L / 512) ** 2,
                       "ms_fwd_bwd": 0.6 * scale * (L / 512) ** 2},
            }  # fmt: skip
            if prec == "fp32" and L == 16384:
                layer[ATTN] = {"error": "skipped: out of memory"}
            training.append({
                "L": L, "batch": 8, "precision": prec, "layer": layer,
                "rel_error_ours_vs_theirs": 1e-6 if prec == "fp32" else 4e-3,
                "time_ratio_ours_over_theirs": {"fwd": 0.75, "fwd_bwd": 0.667},
            })  # fmt: skip
    decoding = []
    for prec in ("bf16", "fp32"):
        for batch in (1, 64):
            decoding.append({
                "batch": batch, "precision": prec, "layer": {
                    OURS: {"tokens_per_s": 4000 * batch},
                    THEIRS: {"tokens_per_s": 3000 * batch},
                    f"{ATTN} (context 1024)": {"tokens_per_s": 5000 * batch},
                    f"{ATTN} (context 8192)": {"tokens_per_s": 1000 * batch},
                },
            })  # fmt: skip
    sizes = {"batch": 8, "d_model": 1024, "d_state": 16, "expand": 2, "prefill": 1024}
    return {"device": "GPU X", "torch": "2", "triton": "3", "commit": "0123456789abcdef",
            "date": "2026-01-01T00:00:00", "mamba_ssm": {"version": "mamba_ssm 2.3.2.post1",
            "status": "imported"}, "sizes": sizes, "training": training,
            "decoding": decoding}  # fmt: skip


def test_summary_of_a_constructed_record():
    record = constructed()
    lines = mamba_speed.summary(record).splitlines()
    row = next(line for line in lines if line.split()[:2] == ["bf16", "2048"])
    assert row.split() == ["bf16", "2048", "4.00", "6.00", "0.67", "9.60", "4.0e-03"]
    oom = next(line for line in lines if line.split()[:2] == ["fp32", "16384"])
    assert oom.split()[5] == "-"
    ours = [line for line in lines if line.strip().startswith(OURS)]
    assert [line.split()[-2:] for line in ours] == [["4,000", "256,000"]] * 2
    assert "GPU X" in mamba_speed.describe(record)


@pytest.mark.parametrize("precision", [None, "fp32"])
def test_plot_of_a_constructed_record(precision):
    fig = mamba_speed.plot(constructed(), precision)
    train, decode = fig.axes
    assert train.get_xscale() == "log" and train.get_yscale() == "log"
    lines = {line.get_label(): line for line in train.get_lines()}
    assert set(lines) == {"ours (ssm)", "mamba_ssm", "attention (SDPA)"}
    expected = 3 if precision == "fp32" else 4  # the out-of-memory point is left out
    assert len(lines["attention (SDPA)"].get_xdata()) == expected
    assert list(lines["ours (ssm)"].get_xdata()) == [512, 2048, 8192, 16384]
    scale = 3 if precision == "fp32" else 1
    assert list(lines["ours (ssm)"].get_ydata()) == pytest.approx(
        [scale * k for k in (1, 4, 16, 32)]
    )
    assert decode.get_yscale() == "log"
    heights = sorted(p.get_height() for p in decode.patches)
    assert len(heights) == 8 and heights[0] == 1000 and heights[-1] == 5000 * 64
    ticks = [t.get_text() for t in decode.get_xticklabels()]
    assert ticks == [
        "ours (ssm)",
        "mamba_ssm",
        "attention\ncontext 1024",
        "attention\ncontext 8192",
    ]
    assert train.get_xlabel() == "L"


def test_run_reads_the_stored_record_or_says_what_to_run(tmp_path):
    assert "mamba_speed" in available()
    assert mamba_speed.config("ci")["file"] == "data/bench/mamba_block.json"
    path = tmp_path / "mamba_block.json"
    path.write_text(json.dumps(constructed()))
    assert mamba_speed.run(mamba_speed.config("ci") | {"file": str(path)}) == constructed()
    with pytest.raises(FileNotFoundError, match=r"bench_mamba_block\.py"):
        mamba_speed.load(tmp_path / "none.json")


def test_load_or_none_says_how_to_make_a_missing_record(tmp_path, capsys):
    from ssm.experiments import mamba_speed

    assert mamba_speed.load_or_none(tmp_path / "mamba_block.json") is None
    out = capsys.readouterr().out
    assert "benchmarks/bench_mamba_block.py" in out and str(tmp_path) not in out
