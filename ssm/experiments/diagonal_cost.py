"""Chapter 4: S4, DSS and S4D side by side (the S4D paper's Table 1), and what a kernel costs.

The S4D paper (arXiv:2206.11893v2, Table 1) compares the three layers by the parameterization
of their state matrix, their discretization and how their kernel is computed. :func:`table`
writes that comparison from this package's layer configs (:class:`ssm.layers.S4Config`,
:class:`ssm.layers.DSSConfig`, :class:`ssm.layers.S4DConfig`): the fields a layer offers are
read from its dataclass, so the table follows the code.

The cost: one layer's kernel, ``H`` channels of length ``L`` from a state of size ``N``, is
generated and back-propagated (forward + backward of ``K.sum()``), on the CPU here at small
sizes (``ci``: seconds, one thread, thread CPU time; :func:`ssm.experiments._common.
time_cases`); the GPU figure reads ``data/bench/diagonal_kernels.json``, written on a GPU by
``benchmarks/bench_diagonal_kernels.py``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch
from matplotlib import ticker

from .. import plotting
from ..kernels import DSS_VARIANTS
from ..layers import DSSConfig, S4Config, S4DConfig
from ..layers.s4d import KERNELS, REAL_TRANSFORMS
from ._common import check_profile, clock, describe, device, threads, time_cases
from ._results import data_path

#: The kernels compared, by name: the layer config that builds each (``l_max`` and ``d_state``
#: set per size).
LAYERS = {
    "S4": (S4Config, {}),
    "DSS-exp": (DSSConfig, {"variant": "exp"}),
    "DSS-softmax": (DSSConfig, {"variant": "softmax"}),
    "S4D": (S4DConfig, {}),
}
LAYER_COLORS = {"S4": "blue", "DSS-exp": "orange", "DSS-softmax": "vermillion", "S4D": "green"}
BENCH_FILE = "data/bench/diagonal_kernels.json"


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "H": 32 if ci else 256,
        "sizes": [16, 64] if ci else [64, 256],  # N
        "lengths": [256, 1024, 2048] if ci else [1024, 4096, 16384],
        "repeats": 2 if ci else 5,
        "seed": 0,
        "device": "cpu" if ci else "auto",
        "threads": 1 if ci else None,
        "file": BENCH_FILE,
    }


def _fields(cfg_class) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cfg_class)}


def rows() -> list[dict[str, str]]:
    """The S4D paper's Table 1 as this package builds the three layers: per layer, the
    parameterization of ``A``, the discretization and the kernel computation (with the config
    fields that choose among the options, and their defaults)."""
    s4, dss, s4d = _fields(S4Config), _fields(DSSConfig), _fields(S4DConfig)
    return [
        {
            "layer": "S4",
            "parameterization": f"A = Λ − P P* (NPLR), init {s4['init']!r} "
            f"(parameterization={s4['parameterization']!r})",
            "discretization": "bilinear",
            "kernel": "Cauchy product + Woodbury identity at the roots of unity, inverse FFT",
        },
        {
            "layer": "DSS",
            "parameterization": f"A = Λ diagonal, init {dss['init']!r}; variant "
            f"{' | '.join(DSS_VARIANTS)} (default {dss['variant']!r})",
            "discretization": "ZOH, folded into the kernel",
            "kernel": "W Λ⁻¹ (e^{ΛΔ} − 1) · exp(Λ Δ l) or softmax over l of Λ Δ l",
        },
        {
            "layer": "S4D",
            "parameterization": f"A = −f(A_re) + i A_im, f in {' | '.join(REAL_TRANSFORMS)} "
            f"(default {s4d['real_transform']!r}), init {s4d['init']!r}",
            "discretization": f"ZOH | bilinear (default {s4d['discretization']!r})",
            "kernel": f"2 Re((B̄ ∘ C) · V_L(Ā)), Vandermonde; kernel "
            f"{' | '.join(KERNELS)} (default {s4d['kernel']!r})",
        },
    ]


def table() -> str:
    """:func:`rows` as text, one block per layer (deterministic: no timing in it)."""
    lines = []
    for row in rows():
        lines.append(row["layer"])
        for key in ("parameterization", "discretization", "kernel"):
            lines.append(f"  {key + ':':<17} {row[key]}")
    return "\n".join(lines)


def kernel_module(name: str, H: int, N: int, L: int) -> torch.nn.Module:
    """The kernel module of layer ``name`` (``H`` channels, state ``N``, length ``L``):
    calling it returns the kernels ``(1, H, L)``."""
    cfg_class, kw = LAYERS[name]
    return cfg_class(d_state=N, l_max=L, **kw).build(H).kernel


def forward_backward(kernel: torch.nn.Module) -> None:
    """Generate the kernel and back-propagate ``K.sum()`` to its parameters."""
    kernel.zero_grad(set_to_none=True)
    kernel().sum().backward()


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Best time (ms) of one kernel's forward + backward per layer, ``N`` and ``L``."""
    dev = device(cfg)
    torch.manual_seed(cfg["seed"])
    with threads(cfg):
        cases = {}
        for name in LAYERS:
            for N in cfg["sizes"]:
                for L in cfg["lengths"]:
                    kernel = kernel_module(name, cfg["H"], N, L).to(dev)
                    cases[name, N, L] = (forward_backward, (kernel,), {})
        best = time_cases(cases, cfg, dev, desc="kernel costs", back_to_back=1)
        how, where = clock(dev), describe(dev)
    return {
        "config": cfg,
        "clock": how,
        "device": where,
        "ms": [{"layer": k[0], "N": k[1], "L": k[2], "ms": 1e3 * v} for k, v in best.items()],
    }


def summary(results: dict[str, Any]) -> str:
    """The times (ms) as a table: one row per layer and ``N``, one column per ``L``."""
    cfg = results["config"]
    head = "".join(f"{'L = ' + str(L):>12}" for L in cfg["lengths"])
    lines = [
        f"kernel forward + backward, H = {cfg['H']}, {results['device']}, {results['clock']}, ms",
        f"{'layer':<12} {'N':>4}{head}",
    ]
    ms = {(r["layer"], r["N"], r["L"]): r["ms"] for r in results["ms"]}
    for name in LAYERS:
        for N in cfg["sizes"]:
            cells = "".join(f"{ms[name, N, L]:>12.2f}" for L in cfg["lengths"])
            lines.append(f"{name:<12} {N:>4}{cells}")
    return "\n".join(lines)


def _plot_times(ax, series: dict[tuple[str, int], tuple[list[int], list[float]]], sizes) -> None:
    """Time against ``L`` on log axes, one line per ``(layer, N)``, ticks at the lengths."""
    styles = dict(zip(sizes, ("-", "--", ":"), strict=False))
    for (name, N), (lengths, ms) in series.items():
        if ms:
            color = plotting.PALETTE[LAYER_COLORS[name]]
            ax.loglog(lengths, ms, marker="o", ms=3, ls=styles[N], color=color,
                      label=f"{name}, N = {N}")  # fmt: skip
    ticks = sorted({L for xs, _ in series.values() for L in xs})
    ax.set_xticks(ticks, [str(L) for L in ticks])
    ax.minorticks_off()
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))  # labels within one decade too
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


@plotting.styled
def plot(results: dict[str, Any]):
    """Forward + backward time of one kernel against ``L``, per layer (colour) and ``N``
    (line style), from :func:`run` on this machine."""
    cfg = results["config"]
    fig, ax = plotting.subplots(1, 1, width=6.0, height=3.4)
    series = {}
    for name in LAYERS:
        for N in cfg["sizes"]:
            pts = sorted(
                (r["L"], r["ms"]) for r in results["ms"] if r["layer"] == name and r["N"] == N
            )
            series[name, N] = ([p[0] for p in pts], [p[1] for p in pts])
    _plot_times(ax, series, cfg["sizes"])
    plotting.label(ax, "L", "ms", f"kernel fwd + bwd, H = {cfg['H']}, {results['device']}")
    return fig


def stored_benchmark(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The GPU benchmark of ``cfg["file"]``, or ``None`` where it has not been run yet."""
    path = data_path(cfg["file"])
    return json.loads(path.read_text()) if path.is_file() else None


def describe_benchmark(bench: dict[str, Any] | None) -> str:
    """Where the GPU numbers come from, in one line (or that they are not measured yet)."""
    if bench is None:
        return (
            "GPU benchmark not measured yet: run benchmarks/bench_diagonal_kernels.py on a GPU "
            f"(it writes {BENCH_FILE})"
        )
    return (
        f"{bench['benchmark']}: {bench['device']}, torch {bench['torch']}, Triton "
        f"{bench['triton']}, commit {bench['commit'][:10]}, {bench['date'][:10]}; {bench['timer']}"
    )


def benchmark_summary(bench: dict[str, Any]) -> str:
    """The GPU times (ms), forward and forward + backward, one row per layer and ``N``."""
    lengths = bench["sizes"]["L"]
    head = "".join(f"{'L = ' + str(L):>18}" for L in lengths)
    lines = [
        f"kernel generation, H = {bench['sizes']['H']}, ms (forward / forward + backward)",
        f"{'layer':<12} {'N':>4}{head}",
    ]
    cases = {(c["layer"], c["N"], c["L"]): c for c in bench["cases"]}
    for name in bench["layers"]:
        for N in bench["sizes"]["N"]:
            cells = []
            for L in lengths:
                c = cases.get((name, N, L), {})
                cell = "failed" if "error" in c else f"{c['ms_fwd']:.3f} / {c['ms_fwd_bwd']:.3f}"
                cells.append(f"{cell:>18}")
            lines.append(f"{name:<12} {N:>4}{''.join(cells)}")
    return "\n".join(lines)


@plotting.styled
def plot_benchmark(bench: dict[str, Any]):
    """The GPU benchmark: forward + backward time of one kernel against ``L`` (failed cases
    left out), per layer and ``N``."""
    fig, ax = plotting.subplots(1, 1, width=6.0, height=3.4)
    series = {}
    for name in bench["layers"]:
        for N in bench["sizes"]["N"]:
            pts = sorted((c["L"], c["ms_fwd_bwd"]) for c in bench["cases"]
                         if c["layer"] == name and c["N"] == N and "error" not in c)  # fmt: skip
            series[name, N] = ([p[0] for p in pts], [p[1] for p in pts])
    _plot_times(ax, series, bench["sizes"]["N"])
    plotting.label(ax, "L", "ms", f"kernel fwd + bwd, H = {bench['sizes']['H']}, {bench['device']}")
    return fig


def step_error(cfg: S4DConfig, d_model: int, batch: int, seed: int = 0) -> float:
    """Largest ``|step − forward|`` of an S4D layer (float64) over ``batch`` random sequences
    of length ``cfg.l_max``: the recurrent view, one token at a time through :meth:`step`
    (:func:`ssm.s4d_step`), against the convolution."""
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer = cfg.build(d_model).eval()
        x = torch.randn(batch, cfg.l_max, d_model)  # (B L H)
        with torch.no_grad():
            y = layer(x)  # (B L H)
        state, steps = layer.init_state(batch), []
        for k in range(cfg.l_max):
            y_k, state = layer.step(x[:, k], state)  # (B H)
            steps.append(y_k)
        return float((torch.stack(steps, 1) - y).abs().max())  # (B L H) compared
    finally:
        torch.set_default_dtype(default)


def error_bound(error: float) -> str:
    """``error`` as a bound a decade above round-off's usual spread: ``< 1e-10`` and so on."""
    for exponent in range(-12, 1):
        if error < 10.0**exponent / 100:
            return f"< 1e{exponent}"
    return f"{error:.1e}"
