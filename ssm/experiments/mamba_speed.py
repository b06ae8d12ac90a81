"""Chapter *2023*: the Mamba block's speed on a GPU, beside mamba_ssm's block and attention.

Nothing is timed here: the numbers come from ``data/bench/mamba_block.json``, written on a GPU
by ``benchmarks/bench_mamba_block.py``, which runs this package's :class:`ssm.layers.Mamba`,
mamba_ssm's ``Mamba`` module (``mamba_simple``, its CUDA selective scan built on the machine, and
without ``causal_conv1d``, so its unfused path) and :class:`ssm.layers.Attention` side by side in
one process, on the same inputs; ours with mamba_ssm's parameters. Training: forward and
forward + backward of one block at batch 8, ``d_model = 1024``, ``L`` up to 16K. Decoding: the
time of one ``step`` after a prefill, at batch 1 and 64; attention's grows with its context.

:func:`load` reads the stored record; :func:`summary` tabulates it and :func:`plot` draws it.
``config``/``run`` exist because every module of :mod:`ssm.experiments` has them: ``run`` only
loads the stored record (both profiles read the same file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import plotting
from ._common import check_profile
from ._results import data_path

OURS, THEIRS, ATTN = "ssm Mamba", "mamba_ssm Mamba", "ssm Attention"
FILE = "data/bench/mamba_block.json"
COLORS = {
    OURS: plotting.PALETTE["blue"],
    THEIRS: plotting.PALETTE["black"],
    ATTN: plotting.PALETTE["vermillion"],
}
LABELS = {OURS: "ours (ssm)", THEIRS: "mamba_ssm", ATTN: "attention (SDPA)"}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {"profile": profile, "file": FILE}


def load(path: Path | str = FILE) -> dict[str, Any]:
    """The stored benchmark record; ``FileNotFoundError`` says what to run where there is none."""
    path = data_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no stored Mamba block benchmark (data/bench/{path.name} does not exist); run "
            "`python3 benchmarks/bench_mamba_block.py` on a GPU (benchmarks/README.md)"
        )
    return json.loads(path.read_text())


def load_or_none(path: Path | str = FILE) -> dict[str, Any] | None:
    """:func:`load` with its provenance printed (:func:`describe`), or ``None`` with a line
    saying how to make the record where there is none: the page builds before the first run."""
    try:
        record = load(path)
    except FileNotFoundError as missing:
        print(missing)
        return None
    print(describe(record))
    return record


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """The stored record of ``cfg["file"]`` (:func:`load`): nothing is measured here."""
    return load(cfg["file"])


def describe(record: dict[str, Any]) -> str:
    """Where the numbers come from, in one line."""
    theirs = record.get("mamba_ssm", {})
    return (
        f"{record['device']}, torch {record['torch']}, Triton {record['triton']}, commit "
        f"{record['commit'][:10]}, {record['date'][:10]}; {theirs.get('version', 'mamba_ssm')}: "
        f"{theirs.get('status', 'unknown')}"
    )


def _ms(case: dict[str, Any], impl: str, key: str = "ms_fwd_bwd") -> float:
    """A time of the case, NaN where that layer failed or was skipped."""
    value = case.get("layer", {}).get(impl, {}).get(key)
    return math.nan if value is None else float(value)


def _cell(value: float | None, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{fmt}}"


def attention_keys(case: dict[str, Any]) -> list[str]:
    """The attention entries of a decoding case, one per context, in the stored order."""
    return [k for k in case.get("layer", {}) if k.startswith(ATTN)]


def summary(record: dict[str, Any]) -> str:
    """Training: per precision and ``L``, forward + backward ms of ours, mamba_ssm's and
    attention, ours over mamba_ssm's, and the relative difference of the outputs with equal
    parameters. Decoding: tokens per second of each method at each batch."""
    s = record["sizes"]
    lines = [
        f"one block, batch {s['batch']}, d_model {s['d_model']}, N {s['d_state']}, expand "
        f"{s['expand']}; forward + backward, ms",
        f"{'prec':<5} {'L':>6} {'ours':>9} {'mamba_ssm':>10} {'ratio':>6} {'attention':>10} "
        f"{'rel. diff':>9}",
    ]
    for case in record["training"]:
        ratio = case.get("time_ratio_ours_over_theirs", {}).get("fwd_bwd")
        lines.append(
            f"{case['precision']:<5} {case['L']:>6} {_cell(_ms(case, OURS), '.2f', 9)} "
            f"{_cell(_ms(case, THEIRS), '.2f', 10)} {_cell(ratio, '.2f', 6)} "
            f"{_cell(_ms(case, ATTN), '.2f', 10)} "
            f"{_cell(case.get('rel_error_ours_vs_theirs'), '.1e', 9)}"
        )
    lines += ["", f"decoding one token after a prefill of {s['prefill']} tokens; tokens / s"]
    for prec in dict.fromkeys(c["precision"] for c in record["decoding"]):
        cases = [c for c in record["decoding"] if c["precision"] == prec]
        methods = list(dict.fromkeys(k for c in cases for k in c.get("layer", {})))
        heads = "".join(f"{'batch ' + str(c['batch']):>12}" for c in cases)
        lines.append(f"{prec:<5} {'':<28}{heads}")
        for m in methods:
            rates = [c.get("layer", {}).get(m, {}).get("tokens_per_s") for c in cases]
            lines.append(f"{'':<5} {m:<28}" + "".join(_cell(r, ",.0f", 12) for r in rates))
    return "\n".join(lines)


def _method_label(key: str) -> str:
    """A decoding method's tick label: attention's with its context on a second line."""
    if key.startswith(f"{ATTN} (context "):
        return "attention\ncontext " + key.removeprefix(f"{ATTN} (context ").removesuffix(")")
    return LABELS.get(key, key)


def _precision(record: dict[str, Any], which: str | None) -> str:
    """The precision to draw: ``which``, else bf16 where there is any, else the first."""
    stored = [c["precision"] for c in record["training"] + record["decoding"]]
    if which is not None:
        return which
    return "bf16" if "bf16" in stored else (stored[0] if stored else "bf16")


@plotting.styled
def plot(record: dict[str, Any], precision: str | None = None):
    """(a) forward + backward time against ``L`` on log-log axes for ours, mamba_ssm's and
    attention; (b) decoding tokens per second of each method at each batch (log scale). One
    precision (bf16 by default)."""
    prec = _precision(record, precision)
    fig, (ax, bx) = plotting.subplots(1, 2, width=10.0, height=3.6)
    train = sorted((c for c in record["training"] if c["precision"] == prec), key=lambda c: c["L"])
    lengths = [c["L"] for c in train]
    for impl in (OURS, THEIRS, ATTN):
        pts = [(c["L"], _ms(c, impl)) for c in train if not math.isnan(_ms(c, impl))]
        if pts:
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, base=2,
                      color=COLORS[impl], label=LABELS[impl])  # fmt: skip
    if lengths:
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.minorticks_off()
    s = record["sizes"]
    plotting.label(ax, "L", "ms", f"fwd + bwd, batch {s['batch']}, d_model {s['d_model']}, {prec}",
                   legend="upper left")  # fmt: skip

    decode = [c for c in record["decoding"] if c["precision"] == prec]
    methods: list[str] = []
    for case in decode:
        methods += [k for k in case.get("layer", {}) if k not in methods]
    x = np.arange(len(methods))
    width = 0.8 / max(len(decode), 1)
    shades = [plotting.PALETTE[c] for c in ("sky", "blue", "green", "orange")]
    for i, case in enumerate(decode):
        rate = [case["layer"].get(m, {}).get("tokens_per_s") or np.nan for m in methods]
        bx.bar(x + (i - (len(decode) - 1) / 2) * width, rate, width=width,
               color=shades[i % len(shades)], label=f"batch {case['batch']}")  # fmt: skip
    bx.set_xticks(x, [_method_label(m) for m in methods], fontsize="small")
    bx.set_yscale("log")
    plotting.label(bx, None, "tokens / s", f"decoding, after {s['prefill']} tokens, {prec}",
                   legend="upper right")  # fmt: skip
    plotting.panel_letters([ax, bx])
    return fig
