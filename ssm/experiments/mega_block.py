"""Chapter 5: the Mega layer as a block diagram, its shapes measured on the layer itself.

The diagram draws the equations of :mod:`ssm.layers.mega` (arXiv:2209.10655v3, Section 3):
``X' = EMA(X)``; ``Z = SiLU(X'W_z + b_z)``; ``Q = κ_q ⊙ Z + μ_q``, ``K = κ_k ⊙ Z + μ_k``;
``V = SiLU(XW_v + b_v)``; ``O = softmax(QKᵀ/√z + b_rel) V`` (causal, inside chunks of ``c`` for
Mega-chunk); ``γ = SiLU(X'W_γ + b_γ)``; ``φ = sigmoid(X'W_φ + b_φ)``;
``Ĥ = SiLU(X'W_h + (γ ⊙ O)U_h + b_h)``; ``Y = φ ⊙ Ĥ + (1 - φ) ⊙ X``.

Nothing of the layer's math is redone here. :func:`run` builds the layer
(``MegaConfig(...).build(d_model)``), runs one forward pass on a random ``(1, n, d)`` input and
records what its steps really receive and return: the instance's ``_ema``, ``_gates``,
``_attend`` and ``_output`` are wrapped, and forward hooks sit on its linear maps. Two shapes
are derived from measured ones and checked: ``Z`` (the columns of the joint projection
``X'[W_z W_γ W_φ W_h]`` left of the others, equal to the shape of ``Q``) and ``Ĥ`` (the
broadcast of its two summands, equal to the shape of ``Y``). The attention's cost is the number
of score entries the layer computes per sequence, measured with full attention (``n²``) and with
chunks (``k·c²``, ``k = ⌈n/c⌉`` chunks, the last one padded; ``c`` no longer than ``n``),
against those formulas. The mask images of panels (b) and (c) are the masks the layer applies,
at a small ``n``. Seconds on a CPU in both profiles; the ``full`` profile takes a longer
sequence and longer chunks, at the same widths (its labels fit the same drawing).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch

from .. import plotting
from ..layers import MegaConfig
from ._common import check_profile, seed_everything

#: The diagram's tensors: their key in ``results["shapes"]`` and their symbol.
SYMBOLS: dict[str, str] = {
    "X": "X",
    "X_ema": "X′",
    "Z": "Z",
    "Q": "Q",
    "K": "K",
    "V": "V",
    "O": "O",
    "gamma": "γ",
    "gamma_O": "γ⊙O",
    "phi": "φ",
    "H_hat": "Ĥ",
    "Y": "Y",
}

#: Codes of the mask images: what one score entry of the panel is.
SKIPPED, MASKED, ATTENDED = 0, 1, 2
MASK_COLORS = ["white", "0.85", plotting.PALETTE["blue"]]


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "d_model": 64,  # d
        "d_state": 16,  # N
        "d_qk": 64,  # z
        "v_mult": 2,  # v = v_mult · d
        "chunk_size": 128 if ci else 256,  # c
        "n": 1024 if ci else 4096,
        "mask_n": 16,  # the mask panels' sequence length
        "mask_chunk": 4,  # and chunk length
        "seed": 0,
    }


def build(cfg: dict[str, Any], n: int, chunk_size: int | None) -> torch.nn.Module:
    """The Mega layer of ``cfg``'s sizes for inputs of length ``n`` (``chunk_size=None``: full
    attention)."""
    spec = MegaConfig(
        d_state=cfg["d_state"],
        d_qk=cfg["d_qk"],
        v_mult=cfg["v_mult"],
        l_max=n,
        chunk_size=chunk_size,
    )
    return spec.build(cfg["d_model"])


def trace(layer: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """One forward pass of ``layer`` on ``x`` ``(B, n, d)``; what its steps received and
    returned, by name: the wrapped methods ``_ema``, ``_gates``, ``_attend``, ``_output``
    (``(args, output)``) and the linear maps ``proj``, ``value``, ``reset_out`` (``(input,
    output)``), and ``forward``'s output ``y``."""
    seen: dict[str, Any] = {}

    def wrap(name: str):
        method = getattr(layer, name)

        def recorded(*args, **kwargs):
            out = method(*args, **kwargs)
            seen[name] = (args, out)
            return out

        return recorded

    def hook(name: str):
        def keep(module, inputs, output):
            seen[name] = (inputs[0], output)

        return keep

    methods = ("_ema", "_gates", "_attend", "_output")
    for name in methods:
        setattr(layer, name, wrap(name))  # an instance attribute, in front of the method
    handles = [
        getattr(layer, m).register_forward_hook(hook(m)) for m in ("proj", "value", "reset_out")
    ]
    try:
        with torch.no_grad():
            seen["y"] = layer(x)
    finally:
        for name in methods:
            delattr(layer, name)
        for handle in handles:
            handle.remove()
    return seen


def shape(t: torch.Tensor) -> list[int]:
    """The shape of one sequence's tensor: ``t``'s without the batch axis."""
    return list(t.shape[1:])


def scores_per_sequence(seen: dict[str, Any]) -> int:
    """Score entries the traced attention computed for one sequence: ``q`` ``(B, ..., Lq, Z)``
    against ``k`` ``(B, ..., Lk, Z)``."""
    (q, k, *_), _ = seen["_attend"]
    return math.prod(q.shape[1:-1]) * k.shape[-2]


def node_shapes(seen: dict[str, Any]) -> dict[str, list[int]]:
    """The shape of every tensor of the diagram, by key of :data:`SYMBOLS`."""
    (x, _), (q, k, v, gamma, phi, hx) = seen["_gates"]
    (_, o, *_), y = seen["_output"]
    joint = seen["proj"][1]  # X'[W_z W_γ W_φ W_h] + b, (B n Z+V+2D)
    z = joint.shape[-1] - gamma.shape[-1] - phi.shape[-1] - hx.shape[-1]
    gamma_o, reset_term = seen["reset_out"]  # γ ⊙ O (B n V), (γ ⊙ O) U_h (B n D)
    shapes = {
        "X": shape(x),
        "X_ema": shape(seen["_ema"][1]),
        "Z": [*shape(joint)[:-1], z],
        "Q": shape(q),
        "K": shape(k),
        "V": shape(v),
        "O": shape(o),
        "gamma": shape(gamma),
        "gamma_O": shape(gamma_o),
        "phi": shape(phi),
        "H_hat": list(torch.broadcast_shapes(hx.shape, reset_term.shape)[1:]),
        "Y": shape(y),
    }
    if (
        shapes["Z"] != shapes["Q"]
        or shapes["H_hat"] != shapes["Y"]
        or shapes["Y"] != shape(seen["y"])
    ):
        raise RuntimeError(f"the derived shapes disagree with the measured ones: {shapes}")
    return shapes


def parameter_shapes(layer: torch.nn.Module, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """The parameters' shapes, the maps as they multiply from the right (``X W``: ``(in,
    out)``); the joint projection split into ``W_z, W_γ, W_φ, W_h`` by the widths measured;
    the EMA's ``(directions, d, N)``, one direction for a causal layer."""
    d = layer.proj.in_features
    widths = [shapes[key][-1] for key in ("Z", "gamma", "phi")]
    widths.append(layer.proj.out_features - sum(widths))
    split = dict(zip(("W_z", "W_gamma", "W_phi", "W_h"), widths, strict=True))
    return {
        **{name: [d, w] for name, w in split.items()},
        "W_v": list(layer.value.weight.T.shape),
        "U_h": list(layer.reset_out.weight.T.shape),
        "kappa": list(layer.qk_scale.shape),  # rows κ_q, κ_k
        "mu": list(layer.qk_offset.shape),  # rows μ_q, μ_k
        "b_rel": list(layer.rel_bias.shape),
        **{name: list(getattr(layer, name).shape) for name in ("alpha_logit", "delta_logit")},
        **{name: list(getattr(layer, name).shape) for name in ("beta", "eta")},
    }


def mask_image(seen: dict[str, Any], n: int) -> np.ndarray:
    """The ``(n, n)`` score matrix of the traced layer as codes: :data:`ATTENDED`,
    :data:`MASKED` (computed, then hidden) or :data:`SKIPPED` (never computed): the layer's
    mask ``(k, c, c)`` placed on the diagonal blocks, cut to ``n``."""
    (q, k, _, _, mask), _ = seen["_attend"]
    chunks, c = q.shape[1], q.shape[-2]
    hidden = np.broadcast_to(mask.numpy(), (chunks, c, k.shape[-2]))
    codes = np.full((chunks * c, chunks * c), SKIPPED)
    for i in range(chunks):
        block = slice(i * c, (i + 1) * c)
        codes[block, block] = np.where(hidden[i], MASKED, ATTENDED)
    return codes[:n, :n]


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """The shapes of the diagram's tensors and of the parameters of one chunked layer, the score
    entries per sequence with full and chunked attention (measured and by formula), and the
    mask images of both at ``mask_n``."""
    seed_everything(cfg["seed"])
    n, c, d = cfg["n"], cfg["chunk_size"], cfg["d_model"]
    x = torch.randn(1, n, d)
    layer = build(cfg, n, c)
    seen = trace(layer, x)
    shapes = node_shapes(seen)
    full = trace(build(cfg, n, None), x)
    k, c = math.ceil(n / c), min(c, n)  # a chunk longer than the sequence is the sequence
    small = torch.randn(1, cfg["mask_n"], d)
    masks = {
        variant: mask_image(trace(build(cfg, cfg["mask_n"], chunk), small), cfg["mask_n"])
        for variant, chunk in (("full", None), ("chunk", cfg["mask_chunk"]))
    }
    return {
        "config": cfg,
        "shapes": shapes,
        "params": parameter_shapes(layer, shapes),
        "attention": {
            "chunks": k,
            "chunk": c,
            "chunk_queries": shape(seen["_attend"][0][0]),  # (k, c, z)
            "scores_full": scores_per_sequence(full),
            "scores_chunk": scores_per_sequence(seen),
            "formula_full": n * n,
            "formula_chunk": k * c * c,
        },
        "masks": masks,
    }


def dims(s: list[int]) -> str:
    """A shape as printed in the figure: ``1024×64``."""
    return "×".join(str(i) for i in s)


def summary(results: dict[str, Any]) -> str:
    """Every tensor's shape with its symbol, the parameters' shapes, and the score entries of
    full and chunked attention."""
    cfg, att = results["config"], results["attention"]
    n, c, k = cfg["n"], att["chunk"], att["chunks"]
    lines = [
        f"Mega layer, n = {n}, d = {cfg['d_model']}, N = {cfg['d_state']}, z = {cfg['d_qk']}, "
        f"v = {cfg['v_mult'] * cfg['d_model']}, c = {c} (one sequence)",
        "tensors: "
        + ", ".join(f"{sym} {dims(results['shapes'][key])}" for key, sym in SYMBOLS.items()),
        "parameters: " + ", ".join(f"{name} {dims(s)}" for name, s in results["params"].items()),
        f"attention scores: full n² = {att['scores_full']:,}; chunked k·c² = {k}·{c}² = "
        f"{att['scores_chunk']:,} (k = ⌈n/c⌉ = {k}), {att['scores_full'] / att['scores_chunk']:.0f}"
        "× fewer",
    ]
    return "\n".join(lines)


# The diagram, in data coordinates of a 14 × 8 box. A node: centre x, y, width, height, colour.
NODES: dict[str, tuple[float, float, float, float, str]] = {
    "X": (0.5, 4.2, 1.0, 0.9, "io"),
    "ema": (1.85, 4.2, 1.2, 1.3, "ema"),
    "v": (4.55, 7.3, 1.3, 0.8, "linear"),
    "z": (4.525, 5.8, 1.25, 0.8, "linear"),
    "gamma": (4.55, 3.3, 1.3, 0.8, "linear"),
    "phi": (4.55, 0.7, 1.3, 0.8, "linear"),
    "qk": (6.9, 5.8, 1.3, 0.8, "linear"),
    "attn": (9.65, 6.45, 2.0, 2.4, "attention"),
    "mul": (9.65, 3.3, 0.5, 0.5, "op"),
    "h": (9.65, 1.6, 1.3, 1.1, "linear"),
    "out": (12.15, 1.6, 1.3, 1.0, "gate"),
    "Y": (13.52, 1.6, 1.0, 0.9, "io"),
}
FACES = {
    "io": "white",
    "ema": plotting.PALETTE["green"],
    "linear": plotting.PALETTE["sky"],
    "attention": plotting.PALETTE["orange"],
    "op": "white",
    "gate": plotting.PALETTE["purple"],
}
BUS = 3.55  # where X' branches to its four maps
# An edge: source, target, corners in between, the tensor it carries (None: unlabelled) and the
# segment its label sits on.
EDGES: list[tuple[str, str, list[tuple[float, float]], str | None, int]] = [
    ("X", "ema", [], None, 0),
    ("X", "v", [(0.5, 7.3)], "X", 1),
    ("ema", "z", [(BUS, 4.2), (BUS, 5.8)], "X_ema", 0),
    ("ema", "gamma", [(BUS, 4.2), (BUS, 3.3)], None, 0),
    ("ema", "h", [(BUS, 4.2), (BUS, 1.6)], None, 0),
    ("ema", "phi", [(BUS, 4.2), (BUS, 0.7)], None, 0),
    ("z", "qk", [], "Z", 0),
    ("qk", "attn", [], "Q", 0),
    ("v", "attn", [], "V", 0),
    ("attn", "mul", [], "O", 0),
    ("gamma", "mul", [], "gamma", 0),
    ("mul", "h", [], "gamma_O", 0),
    ("h", "out", [], "H_hat", 0),
    ("phi", "out", [(11.85, 0.7)], "phi", 0),
    ("X", "out", [(0.5, 0.0), (12.45, 0.0)], "X", 1),
    ("out", "Y", [], None, 0),
]
JUNCTIONS = [(BUS, 4.2), (BUS, 3.3), (BUS, 1.6)]  # where X' splits


def box_lines(results: dict[str, Any]) -> dict[str, list[str]]:
    """Each node's text: its operation, then its parameters' or its tensor's shape."""
    s, p, cfg = results["shapes"], results["params"], results["config"]
    return {
        "X": ["X", dims(s["X"])],
        "ema": ["EMA", "α, δ, β, η", dims(p["beta"][1:])],  # one direction's
        "v": ["SiLU", f"$W_v$ {dims(p['W_v'])}"],
        "z": ["SiLU", f"$W_z$ {dims(p['W_z'])}"],
        "gamma": ["SiLU", f"$W_γ$ {dims(p['W_gamma'])}"],
        "phi": ["sigmoid", f"$W_φ$ {dims(p['W_phi'])}"],
        "qk": ["κ⊙Z+μ", f"κ, μ {dims(p['kappa'])}"],
        "attn": [
            "attention",
            r"softmax$(QK^{\mathsf{T}}/\sqrt{z}$",
            r"$+\, b_{rel})\,V$",
            "causal mask,",
            f"chunks of c = {cfg['chunk_size']}",
            f"$b_{{rel}}$ {dims(p['b_rel'])}",
        ],
        "mul": ["⊙"],
        "h": ["SiLU", f"$W_h$ {dims(p['W_h'])}", f"$U_h$ {dims(p['U_h'])}"],
        "out": ["φ⊙Ĥ", "+ (1−φ)⊙X"],
        "Y": ["Y", dims(s["Y"])],
    }


def anchor(node: str, toward: tuple[float, float]) -> tuple[float, float]:
    """Where a straight edge from ``node`` to ``toward`` leaves its box: through the side that
    faces ``toward``, at its x (or y) when that lies within the box, else at the side's middle."""
    x, y, w, h, _ = NODES[node]
    tx, ty = toward
    if abs(tx - x) <= w / 2:
        return tx, y + math.copysign(h / 2, ty - y)
    if abs(ty - y) <= h / 2:
        return x + math.copysign(w / 2, tx - x), ty
    return x + math.copysign(w / 2, tx - x), y


def edge_points(src: str, dst: str, via: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The polyline of an edge: its corners ``via`` between the boxes' anchors."""
    first = via[0] if via else NODES[dst][:2]
    start = anchor(src, first)
    end = anchor(dst, via[-1] if via else start)
    return [start, *via, end]


def draw_edge(ax, points, label: str | None, shape: str | None, seg: int) -> None:
    """Segments with an arrowhead on the last; the label on segment ``seg``: above a horizontal
    one with the shape below it, or right of a vertical one."""
    color = plotting.PALETTE["black"]
    for a, b in itertools.pairwise(points[:-1]):
        ax.plot([a[0], b[0]], [a[1], b[1]], color=color, lw=1.0, solid_capstyle="butt")
    ax.annotate(
        "",
        xy=points[-1],
        xytext=points[-2],
        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.0, shrinkA=0, shrinkB=0),
    )
    if label is None:
        return
    (ax0, ay0), (bx0, by0) = points[seg], points[seg + 1]
    mx, my = (ax0 + bx0) / 2, (ay0 + by0) / 2
    if ay0 == by0:  # horizontal
        ax.text(mx, my + 0.1, label, ha="center", va="bottom", fontsize=9.5)
        ax.text(mx, my - 0.1, shape, ha="center", va="top", fontsize=6.5, color="0.3")
    else:
        ax.text(mx + 0.12, my + 0.05, label, ha="left", va="bottom", fontsize=9.5)
        ax.text(mx + 0.12, my - 0.05, shape, ha="left", va="top", fontsize=6.5, color="0.3")


def draw_diagram(ax, results: dict[str, Any]) -> None:
    """The block diagram of :data:`NODES` and :data:`EDGES` on ``ax`` (axis off)."""
    lines = box_lines(results)
    for name, (x, y, w, h, kind) in NODES.items():
        if kind == "op":
            ax.add_patch(Circle((x, y), w / 2, facecolor="white", edgecolor="black", lw=1.0))
            ax.text(x, y, lines[name][0], ha="center", va="center", fontsize=11)
            continue
        face = FACES[kind] if kind == "io" else to_rgba(FACES[kind], 0.28)
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.12",
                facecolor=face, edgecolor="0.25", lw=0.9,
            )
        )  # fmt: skip
        head, *rest = lines[name]
        step = 0.3
        top = y + step * len(rest) / 2
        ax.text(x, top, head, ha="center", va="center", fontsize=9, weight="bold")
        for i, line in enumerate(rest, 1):
            ax.text(x, top - i * step, line, ha="center", va="center", fontsize=7)
    shapes = results["shapes"]
    for src, dst, via, key, seg in EDGES:
        label = None if key is None else ("Q, K" if key == "Q" else SYMBOLS[key])
        shape = None if key is None else dims(shapes[key])
        draw_edge(ax, edge_points(src, dst, via), label, shape, seg)
    for x, y in JUNCTIONS:
        ax.plot([x], [y], "o", color="black", ms=3.5)
    att = results["attention"]
    ax.text(
        10.95,
        6.45,
        f"scores per sequence\nfull: n² = {att['scores_full']:,}\n"
        f"chunks: k·c² = {att['scores_chunk']:,}\n"
        f"k = ⌈n/c⌉ = {att['chunks']}",
        ha="left",
        va="center",
        fontsize=8,
        linespacing=1.5,
    )
    ax.set_xlim(-0.05, 14.07)
    ax.set_ylim(-0.4, 8)
    ax.axis("off")


def draw_mask(ax, codes: np.ndarray, title: str, chunk: int | None) -> None:
    """A mask image (:func:`mask_image`), chunk boundaries dashed."""
    n = codes.shape[0]
    ax.imshow(codes, cmap=ListedColormap(MASK_COLORS), vmin=0, vmax=2, interpolation="nearest")
    if chunk:
        for b in range(chunk, n, chunk):
            ax.axhline(b - 0.5, color="0.4", lw=0.7, ls="--")
            ax.axvline(b - 0.5, color="0.4", lw=0.7, ls="--")
    ax.set_xticks([0, n - 1], ["1", str(n)])
    ax.set_yticks([0, n - 1], ["1", str(n)])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
    ax.tick_params(labelsize=8, length=2)
    ax.set_xlabel("key j", fontsize=8, labelpad=0)
    ax.set_ylabel("query i", fontsize=8, labelpad=0)
    ax.set_title(title, fontsize=9)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) The block diagram, every tensor with its measured shape and every map with its
    parameters'; (b, c) the scores of full causal attention and of Mega-chunk at a small ``n``:
    attended, computed but masked, never computed."""
    cfg = results["config"]
    fig = Figure(figsize=(7.0, 6.0), dpi=plotting.RC["figure.dpi"], layout="constrained")
    axes = fig.subplot_mosaic(
        [["a", "a", "a"], ["b", "c", "d"]], height_ratios=[3.6, 1.6], width_ratios=[1, 1, 1.3]
    )
    ax, bx, cx, tx = (axes[key] for key in "abcd")
    draw_diagram(ax, results)
    v = cfg["v_mult"] * cfg["d_model"]
    ax.set_title(
        f"(a) Mega layer: n = {cfg['n']}, d = {cfg['d_model']}, N = {cfg['d_state']}, "
        f"z = {cfg['d_qk']}, v = {v}, c = {cfg['chunk_size']}",
        fontsize=10,
    )
    m, c = cfg["mask_n"], cfg["mask_chunk"]
    k = math.ceil(m / c)
    full, chunk = (np.asarray(results["masks"][key]) for key in ("full", "chunk"))
    draw_mask(bx, full, f"(b) full: n² = {(full != SKIPPED).sum()}", None)
    draw_mask(cx, chunk, f"(c) Mega-chunk: k·c² = {(chunk != SKIPPED).sum()}", c)
    tx.axis("off")
    names = ("attended", "masked (causal)", "not computed")
    for i, (code, name) in enumerate(zip((ATTENDED, MASKED, SKIPPED), names, strict=True)):
        tx.add_patch(
            FancyBboxPatch((0.0, 0.86 - 0.14 * i), 0.07, 0.09, boxstyle="square,pad=0",
                           facecolor=MASK_COLORS[code], edgecolor="0.4", lw=0.6,
                           transform=tx.transAxes)
        )  # fmt: skip
        tx.text(0.11, 0.905 - 0.14 * i, name, transform=tx.transAxes, va="center", fontsize=8)
    tx.text(0.0, 0.32, f"n = {m}, c = {c}: k = {k} chunks", transform=tx.transAxes, fontsize=8)
    return fig
