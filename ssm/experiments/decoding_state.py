"""Chapter 6: what decoding one more token costs each 2023 layer, read from its state.

Every layer of :mod:`ssm.layers` decodes through ``init_state(batch)`` and ``step(x_t, state)``.
What the state holds after ``t`` tokens is what the layer must keep, and read, to produce token
``t + 1``: a fixed number of numbers for an SSM or a linear RNN (S4D, H3, Mamba, RWKV), a cache
that grows by one entry per token for attention (keys and values) and for Hyena (the past
inputs of its long convolutions, which have no state-space form). Each layer of width
``d_model`` is stepped over random inputs and its state is measured, as the count of real
numbers it holds (a complex number counts two), after each of ``checkpoints`` tokens. No
timing: the counts are exact and the same on any machine. The training cost of each layer's
parallel form is stated beside them (:data:`TRAINING_COST`), from its algorithm.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .. import plotting
from ..layers import H3Config, HyenaConfig, S4DConfig
from ..layers.attention import AttentionConfig
from ..layers.mamba import MambaConfig
from ..layers.rwkv import RWKVChannelMixConfig, RWKVTimeMixConfig
from ._common import check_profile, seed_everything

#: The layers measured, by key: their name in the chapter.
NAMES = {
    "attention": "attention",
    "hyena": "Hyena",
    "h3": "H3",
    "s4d": "S4D",
    "rwkv": "RWKV",
    "mamba": "Mamba",
}
#: The cost of each layer's parallel (training) form over a sequence of length L.
TRAINING_COST = {
    "attention": "O(L²) (all pairs of steps)",
    "hyena": "O(L log L) (FFT convolutions)",
    "h3": "O(L log L) (FFT convolution)",
    "s4d": "O(L log L) (FFT convolution)",
    "rwkv": "O(L) (a scan of the WKV sums)",
    "mamba": "O(L) (the selective scan)",
}
COLORS = dict(zip(NAMES, plotting.PALETTE.values(), strict=False))


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "d_model": 64,
        "checkpoints": [1, 4, 16, 64, 256],
        "seed": 0,
    }


def layers(length: int) -> dict[str, list[Any]]:
    """The layer configs of each model, one layer (RWKV: its time- and channel-mixing pair) at
    the defaults, kernels of ``length`` where a layer needs one."""
    return {
        "attention": [AttentionConfig()],
        "hyena": [HyenaConfig(l_max=length)],
        "h3": [H3Config(l_max=length)],
        "s4d": [S4DConfig(l_max=length)],
        "rwkv": [RWKVTimeMixConfig(), RWKVChannelMixConfig()],
        "mamba": [MambaConfig()],
    }


def state_numbers(state: Any) -> int:
    """The real numbers a state holds: the tensors in it, however nested (a complex entry counts
    two). Hyena's state also carries its long filters, computed once by ``init_state`` (the
    ``l_max · order · d_model`` numbers it starts with)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * (2 if state.is_complex() else 1)
    if dataclasses.is_dataclass(state):
        state = [getattr(state, f.name) for f in dataclasses.fields(state)]
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_numbers(s) for s in state)
    return 0


@torch.no_grad()
def state_growth(cfgs: list[Any], d_model: int, checkpoints: list[int]) -> list[int]:
    """Step the layers of ``cfgs`` (in sequence, one sequence of random inputs) for
    ``max(checkpoints)`` tokens; the numbers their states hold after each checkpoint."""
    built = [c.build(d_model).eval() for c in cfgs]
    states = [layer.init_state(1) for layer in built]
    counts, wanted = [], set(checkpoints)
    for t in range(1, max(checkpoints) + 1):
        h = torch.randn(1, d_model)  # (1 D)
        for i, layer in enumerate(built):
            h, states[i] = layer.step(h, states[i])
        if t in wanted:
            counts.append(sum(state_numbers(s) for s in states))
    return counts


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    seed_everything(cfg["seed"])
    checkpoints = sorted(cfg["checkpoints"])
    models = layers(max(checkpoints))
    counts = {m: state_growth(c, cfg["d_model"], checkpoints) for m, c in models.items()}
    return {"config": cfg, "checkpoints": checkpoints, "state": counts}


def per_token(results: dict[str, Any], model: str) -> float:
    """How many numbers the state of ``model`` gains per decoded token (0 for a fixed state)."""
    t, s = results["checkpoints"], results["state"][model]
    return (s[-1] - s[0]) / (t[-1] - t[0])


def fixed_state(results: dict[str, Any]) -> dict[str, bool]:
    """Per model: whether its state holds as many numbers after the last checkpoint as after
    the first."""
    return {m: len(set(s)) == 1 for m, s in results["state"].items()}


def summary(results: dict[str, Any]) -> str:
    """One row per model: the state after the first and last checkpoints, its growth per token,
    and the training cost."""
    t0, t1 = results["checkpoints"][0], results["checkpoints"][-1]
    d = results["config"]["d_model"]
    lines = [
        f"one layer of width {d}: real numbers in the decoding state after t tokens",
        f"{'model':<10} {f't = {t0}':>9} {f't = {t1}':>9} {'per token':>10}  training cost",
    ]
    for m, s in results["state"].items():
        growth = per_token(results, m)
        lines.append(f"{NAMES[m]:<10} {s[0]:>9,} {s[-1]:>9,} {growth:>10,.0f}  {TRAINING_COST[m]}")
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """The state's size against the tokens decoded, log-log: flat lines for a fixed state."""
    fig, ax = plotting.subplots(1, 1, width=6.0, height=3.4)
    t = results["checkpoints"]
    for m, s in results["state"].items():
        ax.plot(t, s, marker="o", ms=3, color=COLORS[m], label=NAMES[m])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plotting.label(ax, "tokens decoded t", "numbers in the state", "decoding state of one layer")
    plotting.figure_legend(fig, ax)
    return fig
