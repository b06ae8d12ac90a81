"""Chapter 2023: selective copying, the Mamba paper's Table 1 at a reduced scale.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv
2312.00752v2), Section 4.1.1 and Table 1 (App. E.1): ``K`` data tokens lie at random positions
among noise, and a model must repeat them, in order, at the ``K`` marker steps at the end
(:func:`ssm.tasks.selective_copying`). Where the tokens sit moves from sequence to sequence.

Six models of the shared backbone (:class:`ssm.layers.Backbone`, one width and depth, no
feed-forward sub-block), the paper's grid of architecture × inner layer:

- ``"Mamba block, S6"``: the Mamba block with its selective SSM (kind ``"mamba"``);
- ``"Mamba block, LTI"``: the same block with a time-invariant SSM (``selective="none"``: Δ, B
  and C learned constants), the analogue of the paper's "Mamba + S4";
- ``"no gate, S6"``: the Mamba block without its ``z`` gate (``gate=False``), "No gate + S6";
- ``"H3"``: H3 with its diagonal LTI SSM, "H3 + S4";
- ``"Hyena"``: the Hyena operator, long implicit convolutions behind gates (the paper's "H3 +
  Hyena" is the nearest row);
- ``"S4D"``: a plain LTI layer (no row in the paper's table).

Each run records its final token accuracy (over the marker steps), its training curve and its
parameter count; :func:`summary` prints the paper's numbers (:data:`PAPER`) beside. A second
figure (:func:`plot_kernels`) shows why the LTI models fail: the trained S4D's kernel ``K`` is
fixed, so its output at the first marker step is ``Σ_s K(t_m − s) u_s``, weights that depend on
the lag only, while the data tokens move; the trained S6 block's step ``Δ_t`` (read with a
forward hook on its Δ projection) depends on the input at each step, and can open the state to
the tokens and shut it to the noise.

Profiles: ``ci`` trains each model for 150 steps on one CPU thread, in seconds (``L = 32``, 4
tokens, a vocabulary of 8, width 32, one layer), too short to show the effect: the S6 models
stay at chance there (their input-dependent ``B_t`` and ``C_t`` start small, so their state
barely reaches the output at first, a plateau the LTI models, whose ``C`` starts standard
normal, do not have), while the LTI models reach 38-47 % on a prefix of only 28 steps. ``full``
trains on one GPU for minutes (``L = 1024``, 16 tokens, a vocabulary of 16 as in the paper,
width 64, two layers, 2000 steps); the paper trains at ``L = 4096`` for 400K steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from .. import plotting
from ..data import SequenceDataset
from ..layers import BackboneConfig
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_config, layer_dict, train_config

#: The models compared, by key: their label, training kind and the layer fields they set.
MODELS = {
    "mamba_s6": ("Mamba block, S6", "mamba", {"selective": "all"}),
    "mamba_lti": ("Mamba block, LTI", "mamba", {"selective": "none"}),
    "nogate_s6": ("no gate, S6", "mamba", {"gate": False}),
    "h3": ("H3", "h3", {}),
    "hyena": ("Hyena", "hyena", {}),
    "s4d": ("S4D", "s4d", {}),
}
COLORS = {
    "mamba_s6": "blue",
    "mamba_lti": "sky",
    "nogate_s6": "green",
    "h3": "orange",
    "hyena": "purple",
    "s4d": "vermillion",
}
#: The models with a selective (input-dependent) SSM; the others are time-invariant.
SELECTIVE = ("mamba_s6", "nogate_s6")
#: The model whose Δ_t the second figure shows, and the LTI model whose kernel it shows.
DELTA_MODEL, KERNEL_MODEL = "mamba_s6", "s4d"

#: Mamba (arXiv 2312.00752v2) Table 1, selective copying accuracy (%), by (architecture, inner
#: layer); the paper's setup (App. E.1): L = 4096, a vocabulary of 16 (noise included), 16 data
#: tokens, 2 layers, D = 64, 400K steps, lr 1e-4, batch 64.
PAPER = {
    ("No gate", "S4"): 18.3,
    ("No gate", "S6"): 97.0,
    ("H3", "S4"): 57.0,
    ("H3", "Hyena"): 30.1,
    ("H3", "S6"): 99.7,
    ("Mamba", "S4"): 56.4,
    ("Mamba", "Hyena"): 28.4,
    ("Mamba", "S6"): 99.8,
}
PAPER_SOURCE = "Gu & Dao, Mamba (arXiv 2312.00752v2), Table 1 (the HTML version's Figure 4)"
#: The paper's row nearest each model (none for S4D, a plain layer outside the grid).
PAPER_ROWS = {
    "mamba_s6": ("Mamba", "S6"),
    "mamba_lti": ("Mamba", "S4"),
    "nogate_s6": ("No gate", "S6"),
    "h3": ("H3", "S4"),
    "hyena": ("H3", "Hyena"),
}


def layers(profile: str) -> dict[str, dict[str, Any]]:
    """The layer dict of every model of :data:`MODELS` in ``profile`` (``l_max`` left to the
    data set), each through its config dataclass so that every field is in the config."""
    ci = profile == "ci"
    base = {
        "mamba": {"d_state": 8 if ci else 16},
        "h3": {"d_state": 16 if ci else 64},
        "hyena": {"filter_order": 16 if ci else 64, "emb_dim": 9 if ci else 33},
        "s4d": {"d_state": 16 if ci else 64},
    }
    return {
        key: layer_dict(kind, layer_config({"kind": kind, **base[kind], **fields}))
        for key, (_, kind, fields) in MODELS.items()
    }


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    backbone = BackboneConfig(
        d_model=32 if ci else 64, n_layers=1 if ci else 2, norm="layer", prenorm=True, dropout=0.0,
        ff="none", pool="mean",
    )  # fmt: skip
    training = train_config(
        profile,
        steps=150 if ci else 2000,
        batch_size=16 if ci else 64,
        lr=1e-2 if ci else 3e-3,
        ssm_lr=1e-2 if ci else 3e-3,
        weight_decay=0.01,
        warmup_steps=15 if ci else 100,
        eval_every=25 if ci else 100,
    )
    data = {"source": "selective_copying", "n_train": 2000 if ci else 20000,
            "n_val": 128 if ci else 1000, "length": 32 if ci else 1024,
            "n_tokens": 4 if ci else 16, "vocab_size": 8 if ci else 16}  # fmt: skip
    return {
        "profile": profile,
        "data": data,
        "seed": 0,
        "threads": 1 if ci else None,
        "backbone": dataclasses.asdict(backbone),
        "layers": layers(profile),
        "train": dataclasses.asdict(training),
        "sequence": 0,
    }


def chance(vocab_size: int) -> float:
    """Accuracy of a blind guess among the data tokens ``1 .. vocab_size - 2``."""
    return 1 / (vocab_size - 2)


def token_positions(inputs: torch.Tensor, n_tokens: int) -> list[int]:
    """Where the data tokens of one sequence ``(L,)`` sit (steps of the prefix that are not
    blank)."""
    prefix = inputs[: inputs.numel() - n_tokens]  # (L - K,)
    return torch.nonzero(prefix).flatten().tolist()


def lti_kernels(model: torch.nn.Module) -> list[list[float]]:
    """``|K|`` against the lag, averaged over the channels, of each block of an S4D model:
    one list of ``l_max`` numbers per block (the kernel is the layer's, whatever its input)."""
    with torch.no_grad():
        return [block.layer.kernel().abs().mean(dim=(0, 1)).tolist() for block in model.blocks]


def deltas(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``Δ_t`` ``(L, E)`` of each Mamba block of ``model`` on one sequence ``x`` ``(L,)``
    (:meth:`ssm.layers.Mamba.step_sizes` on each block's input, read by a forward pre-hook)."""
    seen: list[torch.Tensor] = []
    hooks = [
        block.layer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        for block in model.blocks
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x[None].to(next(model.parameters()).device))  # (1 L C)
            return [
                block.layer.step_sizes(h)[0].float().cpu()  # (L E)
                for h, block in zip(seen, model.blocks, strict=True)
            ]
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()


def kernel_views(
    models: dict[str, torch.nn.Module], val_set: SequenceDataset, n_tokens: int, index: int
) -> dict[str, Any]:
    """What :func:`plot_kernels` draws, for validation sequence ``index``: its data tokens'
    positions (and those of the next sequence, to show that they move), the first marker step
    ``t_m``, the LTI model's ``|K|`` per block (``None`` without it) and the S6 model's ``Δ_t``
    per block with the ratio of its mean at the data tokens to its mean at the noise steps
    (``None`` without it)."""
    x = val_set.inputs[index]  # (L,)
    L = x.numel()
    positions = token_positions(x, n_tokens)
    other = token_positions(val_set.inputs[(index + 1) % len(val_set)], n_tokens)
    out = {"index": index, "length": L, "marker": L - n_tokens, "positions": positions,
           "other_positions": other, "kernel": None, "delta": None}  # fmt: skip
    if KERNEL_MODEL in models:
        out["kernel"] = lti_kernels(models[KERNEL_MODEL])
    if DELTA_MODEL in models:
        noise = torch.ones(L - n_tokens, dtype=torch.bool)  # (L - K,) the prefix
        noise[positions] = False
        views = []
        for delta in deltas(models[DELTA_MODEL], x):
            prefix = delta[: L - n_tokens]  # (L - K, E)
            channel = int(prefix.log().std(dim=0).argmax())
            views.append({
                "mean": delta.mean(dim=1).tolist(),
                "channel": channel,
                "channel_values": delta[:, channel].tolist(),
                "token_ratio": float(prefix[~noise].mean() / prefix[noise].mean()),
            })  # fmt: skip
        out["delta"] = views
    return out


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    train_set, val_set = datasets(cfg["data"], cfg["seed"])
    runs, models = {}, {}
    with threads(cfg):
        for key, layer in progress(cfg["layers"].items(), cfg, "selective copying"):
            r = fit(train_set, val_set, cfg["backbone"], layer, cfg["train"], return_model=True)
            model = r.pop("model")
            if key in (DELTA_MODEL, KERNEL_MODEL) and not r["diverged"]:
                models[key] = model
            runs[key] = {
                "accuracy": None if r["diverged"] else r["final"]["val_accuracy"],
                "parameters": r["parameters"]["total"],
                "history": r["history"],
                "wall_s": r["wall_s"],
                "diverged": r["diverged"],
            }
        views = kernel_views(models, val_set, cfg["data"]["n_tokens"], cfg["sequence"])
    d = cfg["data"]
    return {
        "data": {"length": train_set.seq_len, "n_tokens": d["n_tokens"],
                 "vocab_size": d["vocab_size"], "train": len(train_set),
                 "validation": len(val_set)},
        "chance": chance(d["vocab_size"]),
        "runs": runs,
        "kernels": views,
    }  # fmt: skip


def keys(results: dict[str, Any]) -> list[str]:
    """The models of ``results`` in the order of :data:`MODELS` (a stored record's keys are
    sorted)."""
    return [k for k in MODELS if k in results["runs"]]


def paper_accuracy(key: str) -> float | None:
    """The paper's Table 1 accuracy (%) of the row nearest model ``key`` (:data:`PAPER_ROWS`),
    ``None`` where there is none."""
    row = PAPER_ROWS.get(key)
    return None if row is None else PAPER[row]


def selection_wins(results: dict[str, Any], margin: float = 0.2) -> bool | None:
    """Whether the Mamba block with S6 beats every time-invariant model of ``results`` (all but
    :data:`SELECTIVE`) by ``margin`` in final token accuracy; ``None`` when it or every LTI model
    is missing, or a run diverged."""
    acc = {k: results["runs"][k]["accuracy"] for k in keys(results)}
    lti = [k for k in acc if k not in SELECTIVE]
    if acc.get("mamba_s6") is None or not lti or any(acc[k] is None for k in lti):
        return None
    return all(acc["mamba_s6"] > acc[k] + margin for k in lti)


def summary(results: dict[str, Any]) -> str:
    """One line per model: its trained parameters, final token accuracy (%) and the paper's
    Table 1 accuracy of its nearest row; then the S6 model's Δ at the data tokens against the
    noise, and the verdict on selection."""
    d = results["data"]
    lines = [
        f"selective copying, L = {d['length']}, {d['n_tokens']} tokens, vocabulary "
        f"{d['vocab_size']}; chance {100 * results['chance']:.1f}%",
        f"{'model':<18} {'params':>8} {'acc (%)':>8} {'paper (%)':>10}  paper row",
    ]
    for key in keys(results):
        r, paper = results["runs"][key], paper_accuracy(key)
        acc = "div" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
        row = " + ".join(PAPER_ROWS[key]) if key in PAPER_ROWS else "none"
        cell = "n/a" if paper is None else f"{paper:.1f}"
        lines.append(f"{MODELS[key][0]:<18} {r['parameters']:>8,} {acc:>8} {cell:>10}  {row}")
    lines.append(f"paper: {PAPER_SOURCE}, at L = 4096 after 400K steps")
    views = results["kernels"]["delta"]
    if views:
        ratios = ", ".join(f"{v['token_ratio']:.2f}" for v in views)
        lines.append(f"{MODELS[DELTA_MODEL][0]}: mean Δ at data tokens / at noise, per layer: "
                     f"{ratios}")  # fmt: skip
    verdict = {
        True: "the selective SSM beats every time-invariant model",
        False: "at this scale the selective SSM does not beat every time-invariant model clearly",
        None: "no verdict: a model is missing or diverged",
    }
    lines.append(verdict[selection_wins(results)])
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) final token accuracy per model as bars, the paper's Table 1 number of its nearest row
    as a black tick, chance dotted; (b) validation token accuracy against training steps."""
    fig, (ax, bx) = plotting.subplots(1, 2, height=3.6)
    order = keys(results)
    x = np.arange(len(order))
    acc = [100 * (results["runs"][k]["accuracy"] or 0.0) for k in order]
    ax.bar(x, acc, color=[plotting.PALETTE[COLORS[k]] for k in order])
    paper = [(i, paper_accuracy(k)) for i, k in enumerate(order) if paper_accuracy(k) is not None]
    if paper:
        ax.plot(*zip(*paper, strict=True), "_", color=plotting.PALETTE["black"], ms=18, mew=2,
                label="paper, Table 1")  # fmt: skip
    ax.axhline(100 * results["chance"], color="0.4", ls=":", label="chance")
    ax.set_xticks(x, [MODELS[k][0] for k in order], rotation=35, ha="right")
    ax.set_ylim(0, 105)
    plotting.label(ax, None, "token accuracy (%)", "final accuracy", legend="upper right")
    for key in order:
        h = results["runs"][key]["history"]
        bx.plot([r["step"] for r in h], [100 * r["val_accuracy"] for r in h],
                color=plotting.PALETTE[COLORS[key]], label=MODELS[key][0])  # fmt: skip
    bx.axhline(100 * results["chance"], color="0.4", ls=":")
    bx.set_ylim(0, 105)
    title = f"L = {results['data']['length']}, {results['data']['n_tokens']} tokens"
    plotting.label(bx, "training step", "validation token accuracy (%)", title,
                   legend="upper left")  # fmt: skip
    plotting.panel_letters([ax, bx])
    return fig


def _token_marks(ax, xs: list[int], color: str, alpha: float, label: str | None) -> None:
    for i, x in enumerate(xs):
        ax.axvline(x, color=color, alpha=alpha, lw=1, label=label if i == 0 else None)


@plotting.styled
def plot_kernels(results: dict[str, Any]):
    """What a kernel can and cannot do, on one validation sequence. (a) the trained S4D's
    ``|K|`` (mean over channels, per block, each scaled to its maximum) against the lag from the
    first marker step, the lags of this sequence's data tokens as solid lines and those of the
    next sequence as faint ones: the weights stay, the tokens move. (b) the trained S6 block's
    ``Δ_t`` along the same sequence (mean over channels, and the channel that varies most, of
    the first block), the data tokens' positions as lines."""
    v = results["kernels"]
    fig, (ax, bx) = plotting.subplots(2, 1, height=5.4)
    t_m, black = v["marker"], plotting.PALETTE["black"]
    if v["kernel"]:
        for i, K in enumerate(v["kernel"]):
            K = np.asarray(K[: t_m + 1])
            ax.plot(np.arange(K.size), K / K.max(), color=plotting.PALETTE[COLORS[KERNEL_MODEL]],
                    alpha=1.0 if i == 0 else 0.5, label=f"block {i + 1}")  # fmt: skip
    _token_marks(ax, [t_m - p for p in v["positions"]], black, 0.8, "tokens, this sequence")
    _token_marks(ax, [t_m - p for p in v["other_positions"]], black, 0.2, "tokens, the next")
    ax.set_xlim(t_m + 0.5, -0.5)
    ax.set_ylim(0, 1.05)
    plotting.label(ax, "lag from the first marker step", "|K| / max |K|",
                   f"{MODELS[KERNEL_MODEL][0]}: a fixed kernel")  # fmt: skip
    ax.legend(loc="best", fontsize="x-small")
    if v["delta"]:
        first = v["delta"][0]
        color = plotting.PALETTE[COLORS[DELTA_MODEL]]
        bx.plot(first["mean"], color=color, label="mean over channels")
        bx.plot(first["channel_values"], color=color, alpha=0.5,
                label=f"channel {first['channel']}")  # fmt: skip
        bx.set_yscale("log")
    _token_marks(bx, v["positions"], black, 0.8, "data tokens")
    bx.axvline(t_m, color=plotting.PALETTE["vermillion"], ls="--", lw=1, label="first marker")
    bx.set_xlim(-0.5, v["length"] - 0.5)
    plotting.label(bx, "position in the sequence", r"$\Delta_t$",
                   rf"{MODELS[DELTA_MODEL][0]}: $\Delta_t$ of block 1")  # fmt: skip
    bx.legend(loc="best", fontsize="x-small")
    plotting.panel_letters([ax, bx])
    return fig
