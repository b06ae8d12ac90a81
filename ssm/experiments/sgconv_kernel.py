"""Chapter 5: the SGConv kernel at initialization, against S4D-Inv's, and what each costs in L.

SGConv (:class:`ssm.layers.SGConvConfig`, arXiv:2210.09298v1, Section 3.1) builds each kernel
from ``S = ⌈log2(L / d)⌉ + 1`` sub-kernels of ``d`` parameters, piece ``i`` stretched to
``d · 2^{max(i-1, 0)}`` steps and scaled by ``α^i``: a kernel that decays by pieces, each twice
as long and half as large as the one before. The figure draws ``|K|`` against the lag on a log
scale with the piece boundaries marked, beside an S4D-Inv kernel
(:class:`ssm.layers.S4DConfig`) of the same length, whose decay is a sum of damped
oscillations; then the trained parameters of one channel's kernel as ``L`` grows: ``S · d``,
growing with ``log L``, for SGConv, a constant for S4D. Seconds on a CPU in both profiles; the
``full`` profile draws longer kernels and more lengths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import plotting
from ..layers import S4DConfig, SGConvConfig, parameter_count
from ..layers.sgconv import num_scales, upsampling
from ._common import check_profile, seed_everything

COLORS = {"sgconv": plotting.PALETTE["black"], "s4d": plotting.PALETTE["green"]}
NAMES = {"sgconv": "SGConv", "s4d": "S4D-Inv"}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "L": 1024 if ci else 4096,
        "kernel_dim": 32 if ci else 64,  # d
        "d_state": 64,  # N of the S4D-Inv kernel
        "lengths": [2**k for k in range(8, 15 if ci else 18)],
        "seed": 0,
    }


def boundaries(L: int, kernel_dim: int) -> list[int]:
    """The lags where SGConv's pieces end, cut at ``L``: piece ``i`` spans
    ``d · 2^{max(i-1, 0)}`` steps (:func:`ssm.layers.sgconv.upsampling`); ``S`` entries
    (:func:`ssm.layers.sgconv.num_scales`), the last ``L``."""
    ends = np.cumsum([kernel_dim * upsampling(i) for i in range(num_scales(L, kernel_dim))])
    return [int(min(e, L)) for e in ends]


def sgconv_kernel(L: int, kernel_dim: int) -> torch.nn.Module:
    """One channel's SGConv kernel module; calling it returns ``(1, 1, L)``."""
    return SGConvConfig(kernel_dim=kernel_dim, l_max=L).build(1).kernel


def s4d_kernel(L: int, d_state: int) -> torch.nn.Module:
    """One channel's S4D-Inv kernel module; calling it returns ``(1, 1, L)``."""
    return S4DConfig(d_state=d_state, l_max=L, init="inv").build(1).kernel


def kernel_parameters(cfg: dict[str, Any], L: int) -> dict[str, int]:
    """Trained parameters of one channel's kernel of each layer at length ``L``."""
    return {
        "sgconv": parameter_count(sgconv_kernel(L, cfg["kernel_dim"]))["total"],
        "s4d": parameter_count(s4d_kernel(L, cfg["d_state"]))["total"],
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """The two kernels ``(L,)`` at init, SGConv's piece boundaries and the largest ``|K|`` of
    each piece, and the parameter counts per length."""
    seed_everything(cfg["seed"])
    L, d = cfg["L"], cfg["kernel_dim"]
    with torch.no_grad():
        sg = sgconv_kernel(L, d)()[0, 0].numpy()  # (L,)
        s4d = s4d_kernel(L, cfg["d_state"])()[0, 0].numpy()  # (L,)
    ends = boundaries(L, d)
    starts = [0, *ends[:-1]]
    return {
        "config": cfg,
        "kernels": {"sgconv": sg, "s4d": s4d},
        "boundaries": ends,
        "piece_max": [float(np.abs(sg[a:b]).max()) for a, b in zip(starts, ends, strict=True)],
        "parameters": [{"L": n, **kernel_parameters(cfg, n)} for n in cfg["lengths"]],
    }


def summary(results: dict[str, Any]) -> str:
    """The pieces (end lag and largest ``|K|``, 3 significant digits), then the kernel
    parameters per length."""
    cfg = results["config"]
    lines = [f"SGConv kernel, L = {cfg['L']}, d = {cfg['kernel_dim']}: piece, end lag, max |K|"]
    for i, (end, peak) in enumerate(zip(results["boundaries"], results["piece_max"], strict=True)):
        lines.append(f"  {i:>2} {end:>6} {peak:>9.3g}")
    lines.append(f"{'L':>7} {'SGConv params':>14} {'S4D-Inv params':>15}")
    for r in results["parameters"]:
        lines.append(f"{r['L']:>7} {r['sgconv']:>14,} {r['s4d']:>15,}")
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) ``|K|`` against the lag (log scale) of SGConv and S4D-Inv at init, SGConv's piece
    boundaries dotted; (b) trained parameters of one kernel against ``L``."""
    fig, (ax, bx) = plotting.subplots(1, 2, height=3.4)
    for name, K in results["kernels"].items():
        ax.semilogy(np.abs(K) + 1e-12, color=COLORS[name], lw=0.9, label=NAMES[name])
    for end in results["boundaries"][:-1]:
        ax.axvline(end, color=plotting.PALETTE["black"], ls=":", lw=0.9)
    cfg = results["config"]
    plotting.label(ax, "lag", "|K|", f"kernels at init, L = {cfg['L']}", legend="lower left")
    lengths = [r["L"] for r in results["parameters"]]
    for name in NAMES:
        bx.semilogx([r["L"] for r in results["parameters"]],
                    [r[name] for r in results["parameters"]], marker="o", ms=4, base=2,
                    color=COLORS[name], label=NAMES[name])  # fmt: skip
    bx.set_xticks(lengths, [str(n) for n in lengths], rotation=45)
    bx.minorticks_off()
    plotting.label(bx, "L", "parameters per channel", "kernel parameters", legend="upper left")
    plotting.panel_letters([ax, bx])
    return fig
