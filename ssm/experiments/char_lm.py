"""Chapter 6 (2023): character-level language modelling, five sequence models at one budget.

Attention (RoPE positions, Vaswani et al. 2017 with Su et al.'s rotary embedding), H3 (Fu, Dao
et al., arXiv:2212.14052), Hyena (Poli et al., arXiv:2302.10866), Mamba (Gu & Dao,
arXiv:2312.00752, selective Δ, B and C) and a hybrid stack of Mamba blocks with one attention
block (the striped hybrids of Jamba, arXiv:2403.19887, and of the Mamba-2 paper's Section
9.2.3, arXiv:2405.21060), each on the shared backbone (:class:`ssm.layers.Backbone`) with a
GLU feed-forward sub-block after every layer, trained the same way on the same English text
(:func:`ssm.data.text`, the corpus of ``data/text/``) to predict the next character at every
step. Each model's width ``d_model`` is chosen by :func:`width_for_budget` so that its trained
parameters are within :data:`TOLERANCE` of one common budget: what is compared is what a layer
does with the same number of parameters, as in the papers' language-modelling comparisons at
matched sizes (H3's and Hyena's against Transformers, Mamba's scaling laws on the Pile, its
Figure 4), here on characters at a scale one GPU trains in minutes.

Each run records its validation loss as bits per character (``loss / ln 2``) along training and
at the end, its parameter count, its training time per step and a sample: the trained model
continues a fixed prompt from the validation text through its recurrent step
(:func:`ssm.generate.generate`: prefill, then sampling), decoded back to characters.

- ``ci``: 200K characters, L = 64, width about 32, two blocks (the hybrid "MA"), 100 steps per
  model on one CPU thread, about 20 s in all: the models learn common letter pairs and short
  words, and their order is not meaningful at this scale; 80 sampled characters.
- ``full``: the whole corpus (4M characters), L = 512, about 1M parameters (widths 136-160),
  four blocks (the hybrid "MAMM"), a few thousand steps per model on one GPU, minutes in all;
  300 sampled characters.

The times vary from run to run: :func:`summary` and :func:`plot` leave them out with
``timing=False``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from .. import data, plotting
from ..generate import generate
from ..layers import (
    AttentionConfig,
    BackboneConfig,
    H3Config,
    HyenaConfig,
    MambaConfig,
)
from . import layers_2022
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_dict, train_config
from .layers_2022 import ms_per_step

#: The models compared, by key, with their names.
MODELS = {
    "attention": "Attention",
    "h3": "H3",
    "hyena": "Hyena",
    "mamba": "Mamba",
    "hybrid": "Hybrid",
}
COLORS = dict(zip(MODELS, ("black", "orange", "green", "blue", "vermillion"), strict=True))
#: Largest relative distance of a model's trained parameters from the budget.
TOLERANCE = 0.10
#: The widest model :func:`width_for_budget` considers.
MAX_WIDTH = 512


def layers(profile: str, l_max: int) -> dict[str, dict[str, Any]]:
    """The layer dict of every model of :data:`MODELS` in ``profile``; ``l_max`` (the longest
    sequence a model sees, training or sampling) for the layers with a fixed kernel length."""
    ci = profile == "ci"
    attention = AttentionConfig(head_dim=4 if ci else 16, positions="rope")
    mamba = MambaConfig(d_state=16, d_conv=4, expand=2, selective="all")
    h3 = H3Config(d_state=16 if ci else 64, head_dim=1, l_max=l_max)
    hyena = HyenaConfig(order=2, filter_order=16 if ci else 64, emb_dim=5 if ci else 33,
                        l_max=l_max)  # fmt: skip
    hybrid = {
        "kind": "stripes",
        "pattern": "MA" if ci else "MAMM",
        "layers": {"M": layer_dict("mamba", mamba), "A": layer_dict("attention", attention)},
    }
    return {
        "attention": layer_dict("attention", attention),
        "h3": layer_dict("h3", h3),
        "hyena": layer_dict("hyena", hyena),
        "mamba": layer_dict("mamba", mamba),
        "hybrid": hybrid,
    }


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    length = 64 if ci else 512
    sample = {"prompt_len": 32 if ci else 64, "n_new": 80 if ci else 300, "temperature": 0.8,
              "seed": 0}  # fmt: skip
    backbone = BackboneConfig(
        d_model=32 if ci else 128, n_layers=2 if ci else 4, norm="layer", prenorm=True,
        dropout=0.0, ff="glu", ff_mult=2,
    )  # fmt: skip
    training = train_config(
        profile,
        steps=100 if ci else 2000,
        batch_size=8 if ci else 32,
        lr=1e-2 if ci else 2e-3,
        ssm_lr=1e-3,
        weight_decay=0.1,
        warmup_steps=10 if ci else 100,
        min_lr_ratio=0.1,
        eval_every=25 if ci else 250,
        eval_batch_size=128 if ci else 64,
    )
    return {
        "profile": profile,
        "data": {"source": "text", "seq_len": length, "n_train": 2000 if ci else 64000,
                 "n_val": 64 if ci else 512, "max_chars": 200_000 if ci else None},
        "seed": 0,
        "threads": 1 if ci else None,
        "budget": 25_000 if ci else 1_000_000,
        "backbone": dataclasses.asdict(backbone),
        "layers": layers(profile, max(length, sample["prompt_len"] + sample["n_new"])),
        "train": dataclasses.asdict(training),
        "sample": sample,
    }  # fmt: skip


def head_multiple(layer: dict[str, Any]) -> int:
    """The step of the widths a layer dict can take: the least common multiple of its (and its
    stripes') ``head_dim`` fields, and 2."""
    if layer["kind"] == "stripes":
        return math.lcm(2, *(head_multiple(sub) for sub in layer["layers"].values()))
    return math.lcm(2, layer.get("head_dim", 1))


def width_for_budget(
    backbone: dict[str, Any], layer: dict[str, Any], budget: int, dataset
) -> tuple[int, int]:
    """``(d_model, parameters)``: among the multiples of :func:`head_multiple` up to
    :data:`MAX_WIDTH`, the width whose model has the trained parameter count nearest
    ``budget`` (:func:`ssm.experiments.layers_2022.width_for_budget`)."""
    widths = range(head_multiple(layer), MAX_WIDTH + 1, head_multiple(layer))
    return layers_2022.width_for_budget(backbone, layer, budget, dataset, widths)


def n_layers(backbone: dict[str, Any], layer: dict[str, Any]) -> int:
    """Blocks of a model: the length of its pattern for stripes, else the backbone's."""
    return len(layer["pattern"]) if layer["kind"] == "stripes" else backbone["n_layers"]


def decode(tokens: torch.Tensor, vocab: str) -> str:
    """Tokens ``(n,)`` back to characters (``vocab[i]`` is token ``i``, as :func:`ssm.data.text`
    gives it)."""
    return "".join(vocab[t] for t in tokens.tolist())


def prompt_tokens(val_set: data.SequenceDataset, length: int) -> torch.Tensor:
    """The prompt ``(1, length)``: ``length`` characters of the first validation window,
    from just after its first space or newline (a word's start) where one leaves room."""
    window = val_set.inputs[0]  # (L,)
    room = window[: val_set.seq_len - length]
    breaks = [i for i, t in enumerate(room.tolist()) if val_set.vocab[t] in " \n"]
    start = breaks[0] + 1 if breaks else 0
    return window[None, start : start + length]  # (1, P)


def bpc(loss: float | None) -> float | None:
    """Bits per character of a mean cross-entropy in nats."""
    return None if loss is None else loss / math.log(2)


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    train_set, val_set = datasets(cfg["data"], cfg["seed"])
    s = cfg["sample"]
    prompt = prompt_tokens(val_set, s["prompt_len"])  # (1, P)
    runs = {}
    with threads(cfg):
        for kind, layer in progress(cfg["layers"].items(), cfg, "char LM"):
            base = {**cfg["backbone"], "n_layers": n_layers(cfg["backbone"], layer)}
            width, _ = width_for_budget(base, layer, cfg["budget"], train_set)
            backbone = {**base, "d_model": width}
            r = fit(train_set, val_set, backbone, layer, cfg["train"], return_model=True)
            model = r.pop("model")
            sample = None
            if r["diverged"] is None:
                tokens = generate(model, prompt, s["n_new"], temperature=s["temperature"],
                                  seed=s["seed"])  # fmt: skip
                sample = decode(tokens[0, s["prompt_len"] :].cpu(), val_set.vocab)
            del model
            runs[kind] = {
                "d_model": width,
                "n_layers": backbone["n_layers"],
                "parameters": r["parameters"]["total"],
                "bpc": None if r["diverged"] else bpc(r["final"]["val_loss"]),
                "ms_per_step": ms_per_step(r["history"]),
                "history": r["history"],
                "diverged": r["diverged"],
                "sample": sample,
            }
    return {
        "data": {"name": train_set.name, "length": train_set.seq_len, "train": len(train_set),
                 "validation": len(val_set), "vocab_size": train_set.vocab_size},
        "budget": cfg["budget"],
        "prompt": decode(prompt[0], val_set.vocab),
        "sample": dict(s),
        "runs": runs,
    }  # fmt: skip


def kinds(results: dict[str, Any]) -> list[str]:
    """The models of ``results`` in the order of :data:`MODELS` (a stored record's keys are
    sorted)."""
    return [k for k in MODELS if k in results["runs"]]


def ranking(results: dict[str, Any]) -> list[str]:
    """The models that did not diverge, best (lowest bits per character) first."""
    done = [k for k in kinds(results) if results["runs"][k]["bpc"] is not None]
    return sorted(done, key=lambda k: results["runs"][k]["bpc"])


def hybrid_at_least_as_good(results: dict[str, Any], margin: float = 0.01) -> bool | None:
    """Whether the hybrid's bits per character are at most those of the better of its two
    parts, pure Mamba and pure attention, plus ``margin`` (run-to-run noise); ``None`` when one
    of the three is missing or diverged."""
    values = [results["runs"].get(k, {}).get("bpc") for k in ("hybrid", "mamba", "attention")]
    if any(v is None for v in values):
        return None
    hybrid, mamba, attention = values
    return hybrid <= min(mamba, attention) + margin


def summary(results: dict[str, Any], timing: bool = True) -> str:
    """One line per model: width, blocks, trained parameters, final validation bits per
    character and training time per step (ms, left out with ``timing=False``)."""
    d = results["data"]
    ms = f" {'ms/step':>8}" if timing else ""
    lines = [
        f"next character of English text, L = {d['length']}, {d['vocab_size']} characters, "
        f"budget {results['budget']:,} parameters",
        f"{'model':<10} {'d_model':>7} {'blocks':>6} {'params':>9} {'bpc':>6}{ms}",
    ]
    for kind in kinds(results):
        r = results["runs"][kind]
        cell = "div" if r["bpc"] is None else f"{r['bpc']:.3f}"
        ms = f" {r['ms_per_step']:>8.1f}" if timing else ""
        lines.append(
            f"{MODELS[kind]:<10} {r['d_model']:>7} {r['n_layers']:>6} {r['parameters']:>9,} "
            f"{cell:>6}{ms}"
        )
    return "\n".join(lines)


def samples(results: dict[str, Any]) -> str:
    """The prompt, then each model's continuation of it (its bits per character beside)."""
    s = results["sample"]
    lines = [f"prompt ({len(results['prompt'])} characters of the validation text, then "
             f"{s['n_new']} sampled at temperature {s['temperature']}):",
             results["prompt"], ""]  # fmt: skip
    for kind in kinds(results):
        r = results["runs"][kind]
        head = f"--- {MODELS[kind]}"
        if r["sample"] is None:
            lines += [f"{head} (diverged: no sample)", ""]
            continue
        lines += [f"{head} ({r['bpc']:.3f} bpc) ---", r["sample"], ""]
    return "\n".join(lines).rstrip("\n")


def _color(kind: str) -> str:
    return plotting.PALETTE[COLORS[kind]]


def _curves_panel(ax, results: dict[str, Any]) -> None:
    """Validation bits per character against training steps, one line per model."""
    for kind in kinds(results):
        h = results["runs"][kind]["history"]
        ax.plot([r["step"] for r in h], [bpc(r["val_loss"]) for r in h], color=_color(kind),
                marker="o", ms=3, label=MODELS[kind])  # fmt: skip
    plotting.label(ax, "training step", "validation bits per character", "training",
                   legend="best")  # fmt: skip


def _budget_panel(ax, results: dict[str, Any]) -> None:
    """Final bits per character against trained parameters, one point per model (a cross at
    the top of the panel for a run that diverged), the budget dashed."""
    done = [r["bpc"] for r in results["runs"].values() if r["bpc"] is not None]
    top = max(done) if done else 1.0
    for kind in kinds(results):
        r = results["runs"][kind]
        y = top if r["bpc"] is None else r["bpc"]
        ax.plot([r["parameters"]], [y], "o" if r["bpc"] is not None else "x",
                color=_color(kind), ms=7)  # fmt: skip
        ax.annotate(MODELS[kind], (r["parameters"], y), textcoords="offset points",
                    xytext=(4, 3), fontsize="x-small")  # fmt: skip
    ax.axvline(results["budget"], color=plotting.PALETTE["black"], ls="--", lw=1)
    plotting.label(ax, "trained parameters", "final bits per character", "at the budget")


def _timing_panel(ax, results: dict[str, Any]) -> None:
    """Training time per step of each model, as bars."""
    order = kinds(results)
    x = np.arange(len(order))
    ax.bar(x, [results["runs"][k]["ms_per_step"] for k in order],
           color=[_color(k) for k in order])  # fmt: skip
    ax.set_xticks(x, [MODELS[k] for k in order], rotation=45, ha="right")
    plotting.label(ax, "model", "ms per training step", "training time")


@plotting.styled
def plot(results: dict[str, Any], timing: bool = True):
    """(a) validation bits per character against training steps, one line per model; (b) final
    bits per character against trained parameters, the budget dashed; (c) training time per
    step, as bars (left out with ``timing=False``: the figure is then the same on every run of
    the same results)."""
    n = 3 if timing else 2
    fig, axes = plotting.subplots(1, n, height=3.4)
    _curves_panel(axes[0], results)
    _budget_panel(axes[1], results)
    if timing:
        _timing_panel(axes[2], results)
    plotting.panel_letters(list(axes))
    return fig
