"""Chapter 5: what Mega's attention costs against the sequence length, full and chunked.

One Mega layer (:class:`ssm.layers.MegaConfig`) of width ``D`` runs forward and backward (of
``y.square().mean()``) on a batch of length ``n``, with attention over the whole sequence
(``O(n²)`` time and memory) and with Mega-chunk's attention inside chunks of ``c`` steps
(``O(n c)``; the EMA, an FFT convolution, adds ``O(n log n)``). Time is the best of a few
repeats (:func:`ssm.experiments._common.time_cases`); memory is the peak allocated on a GPU
(``torch.cuda.max_memory_allocated``) and, on a CPU, the bytes autograd saves for the backward
pass (the activations, which dominate the peak). The ``ci`` profile runs on one CPU thread at
small ``n`` (seconds; live timings), the ``full`` profile on one GPU up to ``n = 16384``.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import plotting
from ..layers import MegaConfig
from ._common import check_profile, clock, describe, device, threads, time_cases

VARIANTS = {"full": "full attention", "chunk": "Mega-chunk"}
VARIANT_COLORS = {"full": plotting.PALETTE["vermillion"], "chunk": plotting.PALETTE["blue"]}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "d_model": 16 if ci else 128,
        "d_state": 8 if ci else 16,
        "d_qk": 16 if ci else 64,
        "batch": 1 if ci else 4,
        "chunk_size": 32 if ci else 128,
        "lengths": [64, 128, 256, 512] if ci else [512, 1024, 2048, 4096, 8192, 16384],
        "repeats": 2 if ci else 5,
        "seed": 0,
        "device": "cpu" if ci else "auto",
        "threads": 1 if ci else None,
    }


def layer(cfg: dict[str, Any], variant: str, n: int) -> torch.nn.Module:
    """The Mega layer of ``variant`` (``"full"`` or ``"chunk"``) for inputs of length ``n``."""
    chunk = cfg["chunk_size"] if variant == "chunk" else None
    spec = MegaConfig(d_state=cfg["d_state"], d_qk=cfg["d_qk"], l_max=n, chunk_size=chunk)
    return spec.build(cfg["d_model"])


def forward_backward(lay: torch.nn.Module, x: torch.Tensor) -> None:
    """``lay(x)`` ``(B, n, D)`` and the backward pass of ``y.square().mean()``."""
    lay.zero_grad(set_to_none=True)
    lay(x).square().mean().backward()


def saved_bytes(lay: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for the backward pass of ``lay(x)``."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = lay(x)
    del y
    return total


def peak_bytes(lay: torch.nn.Module, x: torch.Tensor, dev: torch.device) -> int:
    """Peak memory of one forward + backward: allocated on a GPU, saved for backward on a CPU."""
    if dev.type != "cuda":
        return saved_bytes(lay, x)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    forward_backward(lay, x)
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) - base


def measure(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant and length: best time (ms) and peak memory (MiB) of forward + backward."""
    dev = device(cfg)
    torch.manual_seed(cfg["seed"])
    cases, memory = {}, {}
    for variant in VARIANTS:
        for n in cfg["lengths"]:
            lay = layer(cfg, variant, n).to(dev)
            x = torch.randn(cfg["batch"], n, cfg["d_model"], device=dev, requires_grad=True)
            cases[variant, n] = (forward_backward, (lay, x), {})
            memory[variant, n] = peak_bytes(lay, x, dev) / 2**20
    best = time_cases(cases, cfg, dev, desc="Mega attention cost", back_to_back=1)
    return [{"variant": v, "n": n, "ms": 1e3 * best[v, n], "mib": memory[v, n]} for v, n in best]


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    with threads(cfg):
        rows = measure(cfg)
        dev = device(cfg)
        how, where = clock(dev), describe(dev)
    memory = "peak allocated" if dev.type == "cuda" else "saved for backward"
    return {"config": cfg, "clock": how, "device": where, "memory": memory, "rows": rows}


def summary(results: dict[str, Any]) -> str:
    """Time (ms) and memory (MiB) per variant and length, as a table."""
    cfg = results["config"]
    lines = [
        f"Mega layer forward + backward, D = {cfg['d_model']}, batch {cfg['batch']}, "
        f"c = {cfg['chunk_size']}, {results['device']}, {results['clock']}; "
        f"memory {results['memory']}",
        f"{'n':>7} " + " ".join(f"{VARIANTS[v] + ' ms':>20} {'MiB':>8}" for v in VARIANTS),
    ]
    rows = {(r["variant"], r["n"]): r for r in results["rows"]}
    for n in cfg["lengths"]:
        cells = " ".join(f"{rows[v, n]['ms']:>20.2f} {rows[v, n]['mib']:>8.2f}" for v in VARIANTS)
        lines.append(f"{n:>7} {cells}")
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """Time and memory against ``n`` on log axes, with ``O(n²)`` and ``O(n c)`` guide lines
    through the longest full-attention and chunked points."""
    cfg = results["config"]
    fig, axes = plotting.subplots(1, 2, height=3.2)
    for ax, key, unit in zip(axes, ("ms", "mib"), ("ms", "MiB"), strict=True):
        for v, name in VARIANTS.items():
            pts = sorted((r["n"], r[key]) for r in results["rows"] if r["variant"] == v)
            ns, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.loglog(ns, ys, marker="o", color=VARIANT_COLORS[v], label=name)
            order, ls = (2, ":") if v == "full" else (1, "--")
            guide = "O(n²)" if v == "full" else f"O(n·c), c = {cfg['chunk_size']}"
            plotting.slope_guide(ax, ns, order, (ns[-1], ys[-1]), label=guide, ls=ls)
        ax.set_xticks(cfg["lengths"], [str(n) for n in cfg["lengths"]])
        ax.minorticks_off()
        title = "time" if key == "ms" else f"memory ({results['memory']})"
        plotting.label(ax, "sequence length n", unit, title, legend="upper left")
    plotting.panel_letters(axes)
    return fig
