"""Chapter 2023: associative recall as the sequence grows, attention against the 2023 layers.

The analogue, in the multi-query form of Zoology (Arora et al. 2023, arXiv:2312.04927, §3;
:func:`ssm.tasks.mqar`), of the associative-recall tables of H3 (Fu, Dao et al. 2022,
arXiv:2212.14052, the table of 2-layer models on synthetic language tasks) and of Hyena (Poli
et al. 2023, arXiv:2302.10866, Table 4.2). A sequence opens with ``P`` key-value pairs, then
asks every key once among random tokens; the model must answer each query with its key's value.
What is compared is each layer's accuracy on the queries (validation set, final evaluation) as
the length ``L`` grows, the pairs growing with it, and, in a second sweep at one length, as the
vocabulary grows (more keys and values to tell apart).

Six models of the shared backbone, at one width and depth, trained the same way
(:func:`ssm.experiments._training.fit`): attention with rotary positions, H3, Hyena, Mamba
(selective ``Δ``, ``B``, ``C``), S4D (an LTI SSM without gates, the layer H3 and Hyena say
cannot recall) and RWKV-4, whose layer of depth is a time-mixing block followed by a
channel-mixing block (its own MLP; the others get the backbone's GLU in the ``full`` profile).

Their tasks differ from ours: H3's and Hyena's are single-query associative recall (one key
asked at the last step), Hyena's at ``L`` = 30k to 131k with a vocabulary of 30; ours asks every
key, at ``L`` of at most 1024, so the papers' numbers (:data:`H3_PAPER`, :data:`HYENA_PAPER`)
are printed beside ours for their ranking, not as targets.

Profiles:

- ``ci``: attention, H3, Mamba and S4D only (Hyena and RWKV left out for time), 2 layers of
  width 32 without the feed-forward sub-block, ``L`` = 16 and 32 with 4 pairs and a vocabulary
  of 32, the vocabulary sweep 32 and 64 at ``L`` = 16; sixty steps each on one CPU thread, in
  seconds (Mamba's sequential CPU scan takes most of them). Far too short to learn the task (the
  accuracies stay well below 100%): it runs the code, it does not show the effect.
- ``full``: the six models, 2 layers of width 64, ``L`` = 64, 256 and 1024 with ``L / 16``
  pairs and a vocabulary of 256, the vocabulary sweep 64, 256 and 1024 at ``L`` = 256 (16
  pairs); 400 steps of 256 sequences per run, about four minutes on one H200 (a training step
  of these small models costs 14 to 35 ms there, bound by kernel launches). Zoology trains MQAR
  for far longer: each row is what a layer reaches in 400 steps, not its limit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import plotting, tasks
from ..layers import (
    AttentionConfig,
    BackboneConfig,
    H3Config,
    HyenaConfig,
    MambaConfig,
    RWKVChannelMixConfig,
    RWKVTimeMixConfig,
    S4DConfig,
)
from ._common import check_profile, progress, threads
from ._training import fit, layer_dict, train_config

#: The models, by key, with their names, in the order of the table and the legend.
MODELS = {
    "attention": "Attention",
    "h3": "H3",
    "hyena": "Hyena",
    "mamba": "Mamba",
    "s4d": "S4D",
    "rwkv": "RWKV",
}
#: Layers of every model (RWKV's each a time- and a channel-mixing block).
DEPTH = 2
#: The models of the ``ci`` profile (Hyena and RWKV left out for time).
CI_MODELS = ("attention", "h3", "mamba", "s4d")
COLORS = {
    "attention": plotting.PALETTE["black"],
    "h3": plotting.PALETTE["blue"],
    "hyena": plotting.PALETTE["orange"],
    "mamba": plotting.PALETTE["green"],
    "s4d": plotting.PALETTE["vermillion"],
    "rwkv": plotting.PALETTE["purple"],
}

#: H3's table of 2-layer models on synthetic language tasks, associative recall (accuracy %),
#: single-query; restated by third parties (no primary copy seen), so marked secondary.
H3_PAPER = {"attention": 100.0, "h3": 99.8, "s4d": 86.0}
#: Hyena's Table 4.2, associative recall with a vocabulary of 30, 2 layers (accuracy %), at
#: these lengths; ``None`` where the paper marks the run failed (out of memory). Attention is
#: its FlashTransformer row (the plain Transformer fails at every length).
HYENA_LENGTHS = ("30k", "64k", "131k")
HYENA_PAPER = {
    "attention": (32.4, 26.7, None),
    "h3": (8.4, 4.3, 0.6),
    "hyena": (100.0, 100.0, 97.2),
    "rwkv": (12.4, 6.5, 2.3),
}


def layers(profile: str) -> dict[str, dict[str, Any]]:
    """The layer dict of every model in ``profile`` (``l_max`` left to each data set), RWKV's
    as the stripes ``"TC" * DEPTH``: a time- and a channel-mixing block per layer of depth."""
    ci = profile == "ci"
    out = {
        "attention": layer_dict("attention", AttentionConfig(head_dim=16, positions="rope")),
        "h3": layer_dict("h3", H3Config(d_state=16 if ci else 64)),
        "hyena": layer_dict("hyena", HyenaConfig(filter_order=16 if ci else 64,
                                                 emb_dim=5 if ci else 33)),
        "mamba": layer_dict("mamba", MambaConfig(d_state=8 if ci else 16, selective="all")),
        "s4d": layer_dict("s4d", S4DConfig(d_state=16 if ci else 64)),
        "rwkv": {
            "kind": "stripes",
            "pattern": "TC" * DEPTH,
            "layers": {
                "T": layer_dict("rwkv_time", RWKVTimeMixConfig()),
                "C": layer_dict("rwkv_channel", RWKVChannelMixConfig(ff_mult=2)),
            },
        },
    }  # fmt: skip
    return {k: out[k] for k in (CI_MODELS if ci else MODELS)}


def setting(length: int, n_pairs: int, vocab_size: int) -> dict[str, Any]:
    """One data setting, with the key its runs are stored under."""
    key = f"L{length}_P{n_pairs}_V{vocab_size}"
    return {"key": key, "length": length, "n_pairs": n_pairs, "vocab_size": vocab_size}


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    if ci:
        length_sweep = [setting(L, 4, 32) for L in (16, 32)]
        vocab_sweep = [setting(16, 4, V) for V in (32, 64)]
    else:
        length_sweep = [setting(L, L // 16, 256) for L in (64, 256, 1024)]
        vocab_sweep = [setting(256, 16, V) for V in (64, 256, 1024)]
    backbone = BackboneConfig(
        d_model=32 if ci else 64, n_layers=DEPTH, norm="layer", prenorm=True, dropout=0.0,
        ff="none" if ci else "glu", ff_mult=2,
    )  # fmt: skip
    training = train_config(
        profile,
        steps=60 if ci else 400,
        batch_size=16 if ci else 256,
        lr=1e-2 if ci else 5e-3,
        ssm_lr=1e-2 if ci else 1e-3,
        weight_decay=0.1,
        warmup_steps=10 if ci else 40,
        eval_every=0 if ci else 100,
    )
    return {
        "profile": profile,
        "data": {"n_train": 2000 if ci else 40000, "n_val": 128 if ci else 1000, "power_a": 0.01},
        "length_sweep": length_sweep,
        "vocab_sweep": vocab_sweep,
        "seed": 0,
        "threads": 1 if ci else None,
        "backbone": dataclasses.asdict(backbone),
        "layers": layers(profile),
        "train": dataclasses.asdict(training),
    }


def model_backbone(cfg: dict[str, Any], model: str) -> dict[str, Any]:
    """The backbone dict of one model: RWKV's depth counts a time- and a channel-mixing block
    per layer, and its channel mixing is its feed-forward sub-block."""
    layer = cfg["layers"][model]
    if layer["kind"] != "stripes":
        return cfg["backbone"]
    return {**cfg["backbone"], "n_layers": len(layer["pattern"]), "ff": "none"}


def settings(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The distinct data settings of both sweeps, in order (a setting in both runs once)."""
    unique = {}
    for s in cfg["length_sweep"] + cfg["vocab_sweep"]:
        unique.setdefault(s["key"], s)
    return list(unique.values())


def datasets(cfg: dict[str, Any], s: dict[str, Any]):
    """``(train, validation)`` MQAR sets of setting ``s``, seeded apart."""
    d, seed = cfg["data"], cfg["seed"]
    kw = {"length": s["length"], "n_pairs": s["n_pairs"], "vocab_size": s["vocab_size"],
          "power_a": d["power_a"]}  # fmt: skip
    return tasks.mqar(d["n_train"], seed=seed, **kw), tasks.mqar(d["n_val"], seed=seed + 1, **kw)


def chance(s: dict[str, Any]) -> float:
    """Accuracy of a uniform guess among the values ``[vocab_size // 2, vocab_size)``."""
    return 1 / (s["vocab_size"] - s["vocab_size"] // 2)


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {model: {} for model in cfg["layers"]}
    cases = [(s, model) for s in settings(cfg) for model in cfg["layers"]]
    data = {}
    with threads(cfg):
        for s, model in progress(cases, cfg, "recall scaling"):
            if s["key"] not in data:
                data = {s["key"]: datasets(cfg, s)}  # one setting's sets at a time
            train_set, val_set = data[s["key"]]
            r = fit(train_set, val_set, model_backbone(cfg, model), cfg["layers"][model],
                    cfg["train"])  # fmt: skip
            runs[model][s["key"]] = {
                "accuracy": None if r["diverged"] else r["final"]["val_accuracy"],
                "parameters": r["parameters"]["total"],
                "history": r["history"],
                "wall_s": r["wall_s"],
                "diverged": r["diverged"],
            }
    return {
        "length_sweep": cfg["length_sweep"],
        "vocab_sweep": cfg["vocab_sweep"],
        "chance": {s["key"]: chance(s) for s in settings(cfg)},
        "runs": runs,
    }


def models(results: dict[str, Any]) -> list[str]:
    """The models of ``results`` in the order of :data:`MODELS` (a stored record's keys are
    sorted)."""
    return [m for m in MODELS if m in results["runs"]]


def accuracy(results: dict[str, Any], model: str, key: str) -> float | None:
    """Final validation accuracy of ``model`` at setting ``key``; ``None`` where it diverged or
    did not run."""
    r = results["runs"].get(model, {}).get(key)
    return None if r is None else r["accuracy"]


def attention_recalls(results: dict[str, Any], level: float = 0.9) -> bool | None:
    """Whether attention answers at least ``level`` of the queries at every length of the
    length sweep; ``None`` when a run of it is missing or diverged."""
    acc = [accuracy(results, "attention", s["key"]) for s in results["length_sweep"]]
    if any(a is None for a in acc):
        return None
    return all(a >= level for a in acc)


def lti_fails_to_recall(results: dict[str, Any], margin: float = 0.2) -> bool | None:
    """Whether S4D, the LTI layer, falls below attention by more than ``margin`` at the longest
    length of the length sweep; ``None`` when either run is missing or diverged."""
    longest = max(results["length_sweep"], key=lambda s: s["length"])["key"]
    s4d, attention = accuracy(results, "s4d", longest), accuracy(results, "attention", longest)
    if s4d is None or attention is None:
        return None
    return s4d < attention - margin


def _cell(value: float | None, width: int) -> str:
    return f"{'div' if value is None else f'{100 * value:.1f}':>{width}}"


def _paper(value: float | None) -> str:
    return "✗" if value is None else f"{value:.1f}"


def summary(results: dict[str, Any]) -> str:
    """Accuracy (%) per model and length, its parameters and the papers' single-query numbers
    beside (H3's 2-layer table; Hyena's Table 4.2 at 30k/64k/131k), then accuracy per model and
    vocabulary, the chance levels and the verdicts."""
    order, lengths, vocabs = models(results), results["length_sweep"], results["vocab_sweep"]
    first = lengths[0]
    lines = [
        f"MQAR, accuracy (%) on the queries; length sweep: vocabulary {first['vocab_size']}, "
        "pairs " + ", ".join(f"{s['n_pairs']} at L = {s['length']}" for s in lengths),
        f"{'model':<10} {'params':>8}"
        + "".join(f" {'L=' + str(s['length']):>7}" for s in lengths)
        + f" {'H3 paper':>9} {'Hyena T4.2 ' + '/'.join(HYENA_LENGTHS):>22}",
    ]
    for m in order:
        params = results["runs"][m][first["key"]]["parameters"]
        cells = "".join(_cell(accuracy(results, m, s["key"]), 8) for s in lengths)
        h3 = _paper(H3_PAPER[m]) if m in H3_PAPER else "n/a"
        hyena = "/".join(map(_paper, HYENA_PAPER[m])) if m in HYENA_PAPER else "n/a"
        lines.append(f"{MODELS[m]:<10} {params:>8,}{cells} {h3:>9} {hyena:>22}")
    lines.append(
        f"{'chance':<19}" + "".join(_cell(results["chance"][s["key"]], 8) for s in lengths)
    )
    fixed = vocabs[0]
    lines += [
        f"vocabulary sweep at L = {fixed['length']}, {fixed['n_pairs']} pairs",
        f"{'model':<10}" + "".join(f" {'V=' + str(s['vocab_size']):>7}" for s in vocabs),
    ]
    for m in order:
        lines.append(
            f"{MODELS[m]:<10}" + "".join(_cell(accuracy(results, m, s["key"]), 8) for s in vocabs)
        )
    lines.append(f"{'chance':<10}" + "".join(_cell(results["chance"][s["key"]], 8) for s in vocabs))
    lines.append(
        "the papers' task is single-query associative recall (Hyena's at L = 30k-131k, "
        "vocabulary 30); ours is multi-query recall at reduced scale"
    )
    verdicts = {
        "attention_recalls": {
            True: "attention answers at least 90% of the queries at every length",
            False: "attention answers fewer than 90% of the queries at some length",
            None: "no verdict on attention: a run is missing or diverged",
        },
        "lti_fails_to_recall": {
            True: "the LTI layer, S4D, falls over 20 points below attention at the longest length",
            False: "the LTI layer, S4D, stays within 20 points of attention at the longest length",
            None: "no verdict on S4D: a run is missing or diverged",
        },
    }
    lines.append(verdicts["attention_recalls"][attention_recalls(results)])
    lines.append(verdicts["lti_fails_to_recall"][lti_fails_to_recall(results)])
    return "\n".join(lines)


def _sweep_panel(ax, results: dict[str, Any], sweep: str, field: str) -> None:
    """Accuracy (%) against ``field`` of the settings of ``sweep``, one line per model (gaps
    where a run diverged), chance dotted."""
    points = results[sweep]
    x = [s[field] for s in points]
    for m in models(results):
        acc = [accuracy(results, m, s["key"]) for s in points]
        y = [math.nan if a is None else 100 * a for a in acc]
        ax.plot(x, y, "o-", color=COLORS[m], label=MODELS[m])
    ax.plot(x, [100 * results["chance"][s["key"]] for s in points], ":", color="0.4",
            label="chance")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.minorticks_off()
    ax.set_ylim(-3, 103)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) accuracy against the length ``L`` (log₂ axis) per model, the pairs growing with
    ``L``; (b) accuracy against the vocabulary at one length. Chance dotted in both."""
    fig, (ax, bx) = plotting.subplots(1, 2, height=3.4)
    lengths, vocabs = results["length_sweep"], results["vocab_sweep"]
    _sweep_panel(ax, results, "length_sweep", "length")
    plotting.label(ax, "sequence length L", "query accuracy (%)",
                   f"MQAR, vocabulary {lengths[0]['vocab_size']}", legend="best")  # fmt: skip
    _sweep_panel(bx, results, "vocab_sweep", "vocab_size")
    plotting.label(bx, "vocabulary size", "query accuracy (%)",
                   f"MQAR, L = {vocabs[0]['length']}, {vocabs[0]['n_pairs']} pairs")  # fmt: skip
    plotting.panel_letters([ax, bx])
    return fig
