"""Chapter 5: does Mega-chunk's EMA carry context across chunks? The ``use_ema`` ablation.

Mega-chunk (Ma et al., arXiv:2209.10655v3, Section 3.5) attends only inside chunks of ``c``
steps; the paper argues that the EMA, which runs over the whole sequence, restores the context
the chunks cut off. Three models of the shared backbone (kind ``"mega"``) are trained on the
copying task (:func:`ssm.tasks.copying`, data source ``"copying"``) with one token to remember:
``x = (d, 0 × lag, marker, 0)``, the target ``d`` at the last step. The token lies in the first
chunk and the scored step in the last one, so

- Mega-chunk without the EMA (``use_ema=False``) cannot see the token at all (causal attention
  within chunks, position-wise layers between them): it stays at chance, ``1 / (vocab_size -
  2)``, by construction;
- Mega-chunk with the EMA can, through the EMA's state;
- full attention (no chunks) is the reference.

Predictions are per step (no pooling over the sequence, which would mix the chunks). The ``ci``
profile trains one small layer for seconds on a CPU, the ``full`` profile a deeper model at
``L = 256`` for minutes on one GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .. import plotting
from ..data import IGNORE
from ..layers import BackboneConfig, MegaConfig
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_dict, train_config

#: The arms, by key: their label and the layer fields they set.
ARMS = {
    "chunk_ema": ("Mega-chunk, EMA", {"use_ema": True}),
    "chunk_no_ema": ("Mega-chunk, no EMA", {"use_ema": False}),
    "full": ("full attention, EMA", {"use_ema": True, "chunk_size": None}),
}
ARM_COLORS = {"chunk_ema": "blue", "chunk_no_ema": "vermillion", "full": "black"}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    lag = 13 if ci else 253  # L = lag + 3: 16 (ci) or 256 (full)
    length = lag + 3
    backbone = BackboneConfig(
        d_model=32 if ci else 128, n_layers=1 if ci else 2, norm="layer", prenorm=True,
        dropout=0.0, ff="none" if ci else "glu", pool="mean",
    )  # fmt: skip
    layer = MegaConfig(d_state=16, d_qk=16 if ci else 64, l_max=length,
                       chunk_size=8 if ci else 32)  # fmt: skip
    training = train_config(
        profile,
        steps=150 if ci else 1500,
        batch_size=32 if ci else 64,
        lr=1e-2 if ci else 2e-3,
        ssm_lr=1e-2 if ci else 2e-3,
        weight_decay=0.01,
        warmup_steps=10 if ci else 100,
        eval_every=15 if ci else 100,
    )
    data = {"source": "copying", "n_train": 2000 if ci else 20000, "n_val": 256 if ci else 2000,
            "n_tokens": 1, "lag": lag, "vocab_size": 10}  # fmt: skip
    return {
        "profile": profile,
        "data": data,
        "seed": 0,
        "threads": 1 if ci else None,
        "backbone": dataclasses.asdict(backbone),
        "layer": layer_dict("mega", layer),
        "train": dataclasses.asdict(training),
        "arms": list(ARMS),
    }


def arm_layer(cfg: dict[str, Any], arm: str) -> dict[str, Any]:
    """The layer dict of one arm."""
    return {**cfg["layer"], **ARMS[arm][1]}


def chance(vocab_size: int) -> float:
    """Accuracy of a blind guess among the data tokens ``1 .. vocab_size - 2``."""
    return 1 / (vocab_size - 2)


def blind_accuracy(targets: torch.Tensor) -> float:
    """Accuracy of always answering the most frequent scored target of ``targets`` ``(n, L)``:
    the best a model that cannot see the token reaches on this validation set."""
    scored = targets[targets != IGNORE]  # (n,) one scored step per sequence
    return float(torch.bincount(scored).max()) / scored.numel()


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    train_set, val_set = datasets(cfg["data"], cfg["seed"])
    runs = {}
    with threads(cfg):
        for arm in progress(cfg["arms"], cfg, "Mega-chunk ablation"):
            runs[arm] = fit(train_set, val_set, cfg["backbone"], arm_layer(cfg, arm), cfg["train"])
    return {
        "config": cfg,
        "length": train_set.seq_len,
        "chance": chance(cfg["data"]["vocab_size"]),
        "blind": blind_accuracy(val_set.targets),
        "runs": runs,
    }


def final_accuracy(results: dict[str, Any]) -> dict[str, float | None]:
    """Final validation accuracy per arm (``None`` where a run diverged)."""
    return {
        arm: None if r.get("diverged") else r["final"]["val_accuracy"]
        for arm, r in results["runs"].items()
    }


def ema_restores_context(results: dict[str, Any], margin: float = 0.1) -> bool | None:
    """Whether chunking without the EMA sits near the blind guess (the most frequent target,
    :func:`blind_accuracy`) while the EMA lifts Mega-chunk above it by ``margin``; ``None`` when
    an arm is missing or diverged."""
    acc = final_accuracy(results)
    ema, no_ema = acc.get("chunk_ema"), acc.get("chunk_no_ema")
    if ema is None or no_ema is None:
        return None
    return no_ema < results["blind"] + margin / 2 and ema > no_ema + margin


def summary(results: dict[str, Any]) -> str:
    """Final accuracies (%) per arm, and the verdict on the EMA."""
    cfg, acc = results["config"], final_accuracy(results)
    lines = [
        f"copying one token across L = {results['length']}, chunks of "
        f"{cfg['layer']['chunk_size']}; chance {100 * results['chance']:.1f}%, most frequent "
        f"target {100 * results['blind']:.1f}%",
        f"{'model':<22} {'accuracy (%)':>12}",
    ]
    for arm in results["runs"]:
        cell = "div" if acc[arm] is None else f"{100 * acc[arm]:.1f}"
        lines.append(f"{ARMS[arm][0]:<22} {cell:>12}")
    verdict = {
        True: "the EMA restores cross-chunk context; without it, Mega-chunk guesses blind",
        False: "at this scale the EMA does not lift Mega-chunk clearly above the no-EMA arm",
        None: "no verdict: an arm is missing or diverged",
    }
    lines.append(verdict[ema_restores_context(results)])
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """Validation accuracy against training steps per arm, chance dotted."""
    fig, ax = plotting.subplots(1, 1, width=6.0, height=3.4)
    for arm, r in results["runs"].items():
        steps = [h["step"] for h in r["history"]]
        acc = [100 * h["val_accuracy"] for h in r["history"]]
        ax.plot(steps, acc, color=plotting.PALETTE[ARM_COLORS[arm]], label=ARMS[arm][0],
                ls="--" if arm == "full" else "-")  # fmt: skip
    ax.axhline(100 * results["chance"], color="0.4", ls=":", label="chance")
    title = f"copying across chunks, L = {results['length']}"
    plotting.label(ax, "training step", "validation accuracy (%)", title, legend="center right")
    return fig
