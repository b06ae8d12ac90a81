"""Chapter 2023: the selective scan at work on selective copying, beside an LTI layer's kernel.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv
2312.00752v2), Section 3.1 and Figure 2 (selective copying: what an LTI model cannot do),
Section 3.5.2 (the step ``Δ`` as a gate: a large ``Δ_t`` resets the state to the input ``x_t``,
a small one ignores it) and Table 1 (the accuracies). Two models of the shared backbone are
trained on :func:`ssm.tasks.selective_copying`: the Mamba block with its selective SSM
(``selective="all"``) and the same block made time-invariant (``selective="none"``: ``Δ``,
``B``, ``C`` learned constants, the paper's "Mamba + S4" row).

For one validation sequence, the first block's recurrence ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t
x_t`` (the paper's eq. (2a) with its discretization, eq. (4)) keeps of the input ``x_s`` at step
``t ≥ s`` the weight

    r_t(s) = mean over channels e and states n of  Δ_s[e] · exp(A[e, n] · Σ_{s<r≤t} Δ_r[e])

(:func:`retention`): the step that wrote ``x_s`` into the state times the decay since. ``B_s``
and the read-out ``C_t`` are left out: ``r_t(s)`` is what the gate ``Δ`` and the decay ``A``
let through, whatever direction ``B_s`` writes in. With a constant ``Δ`` (the LTI block)
``r_t(s)`` depends on the lag ``t - s`` only, the same for every sequence: the layer's kernel
weights positions, not contents. The selective block can open the state (large ``Δ_s``) where
a data token comes in and shut it (small ``Δ_s``) on the noise. What its SSM sees at step ``s``
is the short causal convolution's output, a window of the last ``d_conv`` tokens, so a token
at ``p`` can be written at any step ``p … p + d_conv - 1``: the trained block opens a step or two
after the token. :func:`summary` measures selection as the ratio of the mean retention of the
steps whose window holds a data token to that of the steps whose window holds noise only, at
the end of the prefix (:func:`keep_ratio`, :func:`written_mask`); :func:`animation` shows
``Δ_t`` and ``r_t(s)`` of both blocks over ``t``.

Profiles: ``ci`` trains two one-block models (width 32, ``N = 8``) for 300 steps on one CPU
thread at ``L = 32`` with 4 data tokens and a vocabulary of 12, in seconds (there the effect is
modest); ``full`` trains two-block models (width 64, ``N = 16``) for 2000 steps at ``L = 64``
with 8 data tokens and a vocabulary of 16 on one GPU, in minutes. The paper trains at
``L = 4096`` with 16 tokens for 400K steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.animation import FuncAnimation

from .. import plotting
from ..layers import BackboneConfig, MambaConfig
from ..layers.mamba import Mamba
from ._common import check_profile, progress, threads
from ._training import datasets, fit, layer_dict, train_config

#: The two models, by key: their label and the Mamba fields they set.
MODELS = {
    "selective": ("Mamba block, S6 (selective)", {"selective": "all"}),
    "lti": ("Mamba block, LTI", {"selective": "none"}),
}
COLORS = {"selective": "blue", "lti": "sky"}
#: How many of the most varying channels of Δ the animation draws beside their mean.
N_CHANNELS = 3
#: Validation sequences per batch when the selection ratio is measured over many.
CHUNK = 64


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    backbone = BackboneConfig(
        d_model=32 if ci else 64, n_layers=1 if ci else 2, norm="layer", prenorm=True,
        dropout=0.0, ff="none", pool="mean",
    )  # fmt: skip
    training = train_config(
        profile,
        steps=300 if ci else 2000,
        batch_size=32 if ci else 64,
        lr=1e-2 if ci else 2e-3,
        ssm_lr=1e-2 if ci else 2e-3,
        weight_decay=0.01,
        warmup_steps=15 if ci else 100,
        eval_every=50 if ci else 200,
    )
    layer = MambaConfig(d_state=8 if ci else 16)
    data = {"source": "selective_copying", "n_train": 3000 if ci else 20000,
            "n_val": 256 if ci else 1000, "length": 32 if ci else 64,
            "n_tokens": 4 if ci else 8, "vocab_size": 12 if ci else 16}  # fmt: skip
    return {
        "profile": profile,
        "data": data,
        "seed": 0,
        "threads": 1 if ci else None,
        "backbone": dataclasses.asdict(backbone),
        "layers": {
            key: layer_dict("mamba", dataclasses.replace(layer, **fields))
            for key, (_, fields) in MODELS.items()
        },
        "train": dataclasses.asdict(training),
        "sequence": 0,  # the validation sequence the animation follows
        "n_ratio": 256,  # validation sequences over which the selection ratio is averaged
        "frame_every": 1 if ci else 2,  # the animation shows every k-th step (and the prefix end)
    }


def selection(layer: Mamba, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Δ_t`` ``(B, L, E)`` (:meth:`ssm.layers.Mamba.step_sizes`) and ``A = -exp(A_log)``
    ``(E, N)`` of the Mamba block ``layer`` on its input ``x`` ``(B, L, M)`` (the block's, after
    the backbone's norm)."""
    return layer.step_sizes(x), -torch.exp(layer.A_log)  # (B L E), (E N)


def retention(delta: torch.Tensor, A: torch.Tensor, t: int) -> torch.Tensor:
    """``r_t(s)`` for ``s = 0 … t``: ``(..., t + 1)`` from ``Δ`` ``(..., L, E)`` and ``A``
    ``(E, N)``, the mean over ``e`` and ``n`` of ``Δ_s[e] exp(A[e, n] Σ_{s<r≤t} Δ_r[e])``
    (``B_s`` left out)."""
    S = torch.cumsum(delta[..., : t + 1, :], dim=-2)  # (... t+1 E): Σ_{r≤s} Δ_r
    since = (S[..., t : t + 1, :] - S).clamp(min=0)  # (... t+1 E): Σ_{s<r≤t} Δ_r
    decay = torch.exp(A * since[..., None])  # (... t+1 E N)
    return (delta[..., : t + 1, :, None] * decay).mean(dim=(-2, -1))  # (... t+1)


def retention_matrix(delta: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``r_t(s)`` of one sequence as an ``(L, L)`` matrix, row ``t``, column ``s``, from ``Δ``
    ``(L, E)``; zero above the diagonal (a future input is not in the state)."""
    L = delta.shape[0]
    out = torch.zeros(L, L, dtype=delta.dtype)  # (L L)
    for t in range(L):
        out[t, : t + 1] = retention(delta, A, t)
    return out


def first_block_selection(
    model: torch.nn.Module, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`selection` of the first block of a trained backbone on token sequences
    ``inputs`` ``(B, L)``, in float64 on the CPU: ``Δ`` ``(B, L, E)`` and ``A`` ``(E, N)``. The
    block's input is read with a forward pre-hook."""
    block = model.blocks[0]
    seen: dict[str, torch.Tensor] = {}
    hook = block.layer.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs.to(next(model.parameters()).device))  # (B L C)
            delta, A = selection(block.layer, seen["x"])
    finally:
        model.train(was_training)
        hook.remove()
    return delta.double().cpu(), A.double().cpu()


def written_mask(inputs: torch.Tensor, n_tokens: int, d_conv: int) -> torch.Tensor:
    """Which steps of the prefix (before the ``K`` markers) see a data token in the short
    convolution's window (the step and the ``d_conv - 1`` before it): ``(..., L - K)`` booleans
    of ``inputs`` ``(..., L)``. The others see noise only."""
    data = inputs[..., : inputs.shape[-1] - n_tokens] != 0  # (... P): a token at this step
    out = data.clone()
    for k in range(1, d_conv):
        out[..., k:] |= data[..., :-k]  # a token k steps back is still in the window
    return out


def keep_ratio(r: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
    """Mean retention of the steps that see a data token over that of the steps that see noise
    only: ``(...)`` from ``r`` ``(..., P)`` and :func:`written_mask` ``(..., P)`` of the same
    steps."""
    noise = ~written
    kept = (r * written).sum(-1) / written.sum(-1)  # (...)
    dropped = (r * noise).sum(-1) / noise.sum(-1)  # (...)
    return kept / dropped


def selection_ratio(
    model: torch.nn.Module, inputs: torch.Tensor, n_tokens: int, d_conv: int
) -> float:
    """:func:`keep_ratio` at the end of the prefix (``t = L - K - 1``), averaged over the
    sequences ``inputs`` ``(B, L)`` in batches of :data:`CHUNK`."""
    t = inputs.shape[1] - n_tokens - 1
    ratios = []
    for batch in inputs.split(CHUNK):
        delta, A = first_block_selection(model, batch)
        written = written_mask(batch, n_tokens, d_conv)  # (b P)
        ratios.append(keep_ratio(retention(delta, A, t), written))  # (b,)
    return float(torch.cat(ratios).mean())


def varying_channels(delta: torch.Tensor, k: int) -> list[int]:
    """The ``k`` channels whose ``log Δ`` varies most along a sequence ``(L, E)``."""
    return delta.log().std(dim=0).argsort(descending=True)[:k].tolist()


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    train_set, val_set = datasets(cfg["data"], cfg["seed"])
    K = cfg["data"]["n_tokens"]
    x = val_set.inputs[cfg["sequence"]]  # (L,)
    L, t_end = x.numel(), x.numel() - K - 1
    d_conv = cfg["layers"]["selective"]["d_conv"]
    written = written_mask(x, K, d_conv)  # (L - K,)
    runs, views = {}, {}
    with threads(cfg):
        for key, layer in progress(cfg["layers"].items(), cfg, "selection animation"):
            r = fit(train_set, val_set, cfg["backbone"], layer, cfg["train"], return_model=True)
            model = r.pop("model")
            runs[key] = {
                "accuracy": None if r["diverged"] else r["final"]["val_accuracy"],
                "parameters": r["parameters"]["total"],
                "history": r["history"],
                "wall_s": r["wall_s"],
                "diverged": r["diverged"],
            }
            if r["diverged"]:
                continue
            delta, A = first_block_selection(model, x[None])  # (1 L E), (E N)
            matrix = retention_matrix(delta[0], A)  # (L L)
            views[key] = {
                "delta": delta[0].tolist(),
                "retention": matrix.tolist(),
                "ratio": float(keep_ratio(matrix[t_end, : t_end + 1], written)),
                "ratio_validation": selection_ratio(
                    model, val_set.inputs[: cfg["n_ratio"]], K, d_conv
                ),
            }
    d = cfg["data"]
    return {
        "config": cfg,
        "data": {"length": L, "n_tokens": K, "vocab_size": d["vocab_size"], "d_conv": d_conv},
        "chance": 1 / (d["vocab_size"] - 2),  # a blind guess among the data tokens
        "tokens": x.tolist(),
        "positions": torch.nonzero(x[: L - K]).flatten().tolist(),  # the data tokens' steps
        "written": written.tolist(),
        "end": t_end,
        "frames": sorted({*range(0, L, cfg["frame_every"]), t_end}),
        "runs": runs,
        "views": views,
    }


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """The selection ratio over the validation sequences per model (``None`` where a run
    diverged)."""
    return {
        key: results["views"][key]["ratio_validation"] if key in results["views"] else None
        for key in results["runs"]
    }


def selection_keeps_data(results: dict[str, Any], factor: float = 1.5) -> bool | None:
    """Whether the selective block's state keeps the data tokens over the noise: its selection
    ratio over the validation sequences is at least ``factor`` times the LTI block's (which
    weights steps by lag alone, about 1); ``None`` when a model is missing or diverged."""
    r = ratios(results)
    sel, lti = r.get("selective"), r.get("lti")
    if sel is None or lti is None:
        return None
    return sel >= factor * lti


def summary(results: dict[str, Any]) -> str:
    """One line per model: final token accuracy (%), the selection ratio on the animated
    sequence and over the validation sequences; then the verdict."""
    d = results["data"]
    lines = [
        f"selective copying, L = {d['length']}, {d['n_tokens']} tokens, vocabulary "
        f"{d['vocab_size']}; chance {100 * results['chance']:.1f}%",
        f"block 1's state at t = {results['end']}, the end of the prefix: mean retention of the "
        "steps whose conv window",
        f"({results['data']['d_conv']} steps) holds a data token / of the noise steps",
        f"{'model':<28} {'acc (%)':>8} {'this seq':>9} {'validation':>11}",
    ]
    for key in (k for k in MODELS if k in results["runs"]):
        r = results["runs"][key]
        acc = "div" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
        v = results["views"].get(key)
        seq, val = (
            ("-", "-") if v is None else (f"{v['ratio']:.2f}", f"{v['ratio_validation']:.2f}")
        )
        lines.append(f"{MODELS[key][0]:<28} {acc:>8} {seq:>9} {val:>11}")
    verdict = {
        True: "the selective state keeps the data tokens and drops the noise; the LTI kernel "
        "weights by lag alone",
        False: "at this scale the selective state does not clearly keep the data over the noise",
        None: "no verdict: a model is missing or diverged",
    }
    lines.append(verdict[selection_keeps_data(results)])
    return "\n".join(lines)


#: Colours of the steps: a data token, a step whose convolution window still holds one, noise
#: (the window holds none) and the markers.
STEP_COLORS = {
    "data token": plotting.PALETTE["orange"],
    "token in the conv window": "#F5CF85",
    "noise": "0.65",
    "marker": plotting.PALETTE["black"],
}


def step_kinds(results: dict[str, Any]) -> list[str]:
    """The kind of every step of the animated sequence (keys of :data:`STEP_COLORS`)."""
    written, V = results["written"], results["data"]["vocab_size"]
    kinds = []
    for s, v in enumerate(results["tokens"]):
        if v == V - 1:
            kinds.append("marker")
        elif v != 0:
            kinds.append("data token")
        else:
            kinds.append("token in the conv window" if written[s] else "noise")
    return kinds


def animation(results: dict[str, Any], *, frame: int | None = None) -> Any:
    """HTML player over the steps ``t`` of ``results["frames"]`` (self-contained): (a) the
    sequence, data tokens in orange, the steps whose convolution window still holds one in light
    orange, noise grey, markers black (:data:`STEP_COLORS`), the cursor at ``t``; (b) the
    selective block's ``Δ_t`` up to ``t`` (mean over channels and the channels that vary most);
    (c) and (d) the retention ``r_t(s)`` of every input ``s ≤ t`` in the first block's state of
    the selective and of the LTI block.

    With ``frame``, the figure at step ``t = frame`` instead (to look at, or to print).
    """
    tokens, V = results["tokens"], results["data"]["vocab_size"]
    L, s = len(tokens), np.arange(len(tokens))
    kinds = step_kinds(results)
    colors = [STEP_COLORS[k] for k in kinds]
    positions = results["positions"]
    views = results["views"]
    with plotting.style(), mpl.rc_context({"savefig.dpi": 70 * plotting.PIXEL_RATIO}):
        fig, axes = plotting.subplots(
            4, 1, width=6.4, height=6.6, sharex=True, height_ratios=[0.8, 1, 1, 1]
        )
        ax, bx, cx, dx = axes
        tok, kind = np.asarray(tokens), np.asarray(kinds)
        marks = {"data token": "s", "token in the conv window": "o", "noise": ".", "marker": "v"}
        for name, mark in marks.items():
            mask = kind == name
            ax.plot(s[mask], tok[mask], mark, color=STEP_COLORS[name], ms=6, label=name, ls="none")
        ax.set_ylim(-0.8, V - 0.2)
        ax.set_yticks([0, V - 1])
        plotting.label(ax, None, "token", "the sequence")
        cursors = [a.axvline(0, color=plotting.PALETTE["vermillion"], lw=1, ls="--") for a in axes]
        cursors[0].set_label("step $t$")
        futures = [a.axvspan(0.5, L - 0.5, color="white", alpha=0.7, lw=0, zorder=3) for a in axes]
        lines = []
        if "selective" in views:
            delta = np.asarray(views["selective"]["delta"])  # (L E)
            color = plotting.PALETTE[COLORS["selective"]]
            for p in positions:
                bx.axvline(p, color=plotting.PALETTE["orange"], alpha=0.35, lw=2)
            for c in varying_channels(torch.from_numpy(delta), N_CHANNELS):
                lines.append((bx.plot([], [], color=color, lw=0.9, alpha=0.45)[0], delta[:, c]))
            mean = bx.plot([], [], color=color, lw=2, label="mean over channels")[0]
            lines.append((mean, delta.mean(axis=1)))
            bx.set_yscale("log")
            bx.set_ylim(delta.min() / 1.5, delta.max() * 1.5)
        title = f"selective block: $\\Delta_t$ (thin: the {N_CHANNELS} most varying channels)"
        plotting.label(bx, None, "$\\Delta_t$", title)
        bars, titles = {}, {}
        for key, cax in (("selective", cx), ("lti", dx)):
            titles[key] = f"{MODELS[key][0]}: retention $r_t(s)$ of $x_s$ in $h_t$"
            plotting.label(cax, None, "$r_t(s)$", titles[key])
            if key in views:
                R = np.asarray(views[key]["retention"])  # (L L)
                bars[key] = (cax.bar(s, np.zeros(L), width=0.8, color=colors), R)
                cax.set_ylim(0, R.max() * 1.08)
        dx.set_xlim(-0.5, L - 0.5)
        dx.set_xlabel("step $s$")
        plotting.panel_letters(axes)
        plotting.figure_legend(fig, ax, fontsize=8.5)

        def draw(t: int):
            for c in cursors:
                c.set_xdata([t, t])
            for f in futures:
                f.set_x(t + 0.5)
                f.set_width(L - t)
            for line, values in lines:
                line.set_data(s[: t + 1], values[: t + 1])
            for rects, R in bars.values():
                for rect, h in zip(rects, R[t], strict=True):
                    rect.set_height(h)
            fig.suptitle(f"$t = {t}$", fontsize=10)
            return []

        if frame is not None:
            draw(frame)
            return fig
        anim = FuncAnimation(fig, draw, frames=results["frames"], interval=300, blit=False)
        return plotting.animation_html(anim, fig, name="selection_animation")


def plot(results: dict[str, Any]):
    """The animation's frame at the end of the prefix (``t = L - K - 1``), where the state holds
    every data token and the markers have not begun: the static twin of :func:`animation`."""
    return animation(results, frame=results["end"])
