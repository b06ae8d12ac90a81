"""Chapter 5: is GSS faster than DSS? One layer's forward + backward, timed at one width.

GSS (:class:`ssm.layers.GSSConfig`, arXiv:2206.13947v3) runs its DSS convolution at a reduced
width ``d_ssm`` (the paper: ``E = 1024``, ``H = 256``) and spends its parameters on dense
projections and a multiplicative gate instead; DSS (:class:`ssm.layers.DSSConfig`) runs the
convolution at the full width ``d_model``. Both layers are built at the same ``d_model`` and the
same state size, and one forward + backward of ``y.sum()`` on a batch ``(B, L, d_model)`` is
timed as ``L`` grows (:func:`ssm.experiments._common.time_cases`, the best of ``repeats``
rounds). The authors report a "2-3x speedup over vanilla DSS" on TPUs, second-hand (their
slides; the abstract says only "significantly faster"), at their sizes, not these. ``ci``: small
sizes on one CPU thread (thread CPU time, seconds); ``full``: one GPU, ``L`` up to 16K.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import plotting
from ..layers import DSSConfig, GSSConfig
from ._common import check_profile, clock, describe, device, seed_everything, threads, time_cases

NAMES = {"gss": "GSS", "dss": "DSS"}
COLORS = {"gss": plotting.PALETTE["vermillion"], "dss": plotting.PALETTE["orange"]}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "d_model": 64 if ci else 512,  # E
        "d_ssm": 16 if ci else 128,  # H of GSS: E / 4, as the paper's 256 of 1024
        "expansion": 4,  # F = 4 E
        "d_state": 32 if ci else 64,  # N of both DSS convolutions
        "batch": 2 if ci else 8,
        "lengths": [256, 512, 1024] if ci else [1024, 2048, 4096, 8192, 16384],
        "repeats": 2 if ci else 5,
        "seed": 0,
        "device": "cpu" if ci else "auto",
        "threads": 1 if ci else None,
    }


def build(name: str, cfg: dict[str, Any], L: int) -> torch.nn.Module:
    """The GSS or DSS layer of width ``d_model`` with kernels of length ``L``."""
    if name == "gss":
        gss = GSSConfig(d_ssm=cfg["d_ssm"], expansion=cfg["expansion"], d_state=cfg["d_state"],
                        l_max=L)  # fmt: skip
        return gss.build(cfg["d_model"])
    return DSSConfig(d_state=cfg["d_state"], l_max=L).build(cfg["d_model"])


def forward_backward(layer: torch.nn.Module, x: torch.Tensor) -> None:
    """``layer(x)`` for ``x`` ``(B, L, d_model)``, then back-propagate ``y.sum()``."""
    layer.zero_grad(set_to_none=True)
    layer(x).sum().backward()


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Best forward + backward time (ms) of each layer at each length, and their parameters."""
    dev = device(cfg)
    gen = seed_everything(cfg["seed"])
    with threads(cfg):
        cases, params = {}, {}
        for L in cfg["lengths"]:
            x = torch.randn(cfg["batch"], L, cfg["d_model"], generator=gen).to(dev)
            for name in NAMES:
                layer = build(name, cfg, L).to(dev)
                params[name] = sum(p.numel() for p in layer.parameters())
                cases[name, L] = (forward_backward, (layer, x), {})
        best = time_cases(cases, cfg, dev, desc="GSS vs DSS", back_to_back=1)
        how, where = clock(dev), describe(dev)
    return {
        "config": cfg,
        "clock": how,
        "device": where,
        "parameters": params,
        "ms": [{"layer": k[0], "L": k[1], "ms": 1e3 * v} for k, v in best.items()],
    }


def ratios(results: dict[str, Any]) -> dict[int, float]:
    """DSS's time over GSS's at each length: above 1 where GSS is faster."""
    ms = {(r["layer"], r["L"]): r["ms"] for r in results["ms"]}
    return {L: ms["dss", L] / ms["gss", L] for L in results["config"]["lengths"]}


def summary(results: dict[str, Any]) -> str:
    """Times (ms) per length and the measured speed ratio DSS / GSS, to two decimals."""
    cfg = results["config"]
    ms = {(r["layer"], r["L"]): r["ms"] for r in results["ms"]}
    p = results["parameters"]
    lines = [
        f"forward + backward, d_model = {cfg['d_model']}, GSS d_ssm = {cfg['d_ssm']}, "
        f"N = {cfg['d_state']}, batch {cfg['batch']}, {results['device']}, {results['clock']}",
        f"parameters: GSS {p['gss']:,}, DSS {p['dss']:,}",
        f"{'L':>7} {'GSS (ms)':>10} {'DSS (ms)':>10} {'DSS / GSS':>10}",
    ]
    for L, ratio in ratios(results).items():
        lines.append(f"{L:>7} {ms['gss', L]:>10.2f} {ms['dss', L]:>10.2f} {ratio:>9.2f}x")
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """Forward + backward time of each layer against ``L`` on log axes."""
    cfg = results["config"]
    fig, ax = plotting.subplots(1, 1, width=5.5, height=3.4)
    for name in NAMES:
        pts = sorted((r["L"], r["ms"]) for r in results["ms"] if r["layer"] == name)
        ax.loglog([q[0] for q in pts], [q[1] for q in pts], marker="o", ms=4, base=2,
                  color=COLORS[name], label=NAMES[name])  # fmt: skip
    ax.set_xticks(cfg["lengths"], [str(L) for L in cfg["lengths"]])
    ax.minorticks_off()
    title = f"fwd + bwd, d_model = {cfg['d_model']}, {results['device']}"
    plotting.label(ax, "L", "ms", title, legend="upper left")
    return fig
