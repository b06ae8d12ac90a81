"""Chapter 2: what the Long Range Arena's ListOps and Pathfinder look like, generated here.

A few Pathfinder images (:func:`ssm.tasks.pathfinder_images`; Linsley et al. 2018, arXiv
1805.08315, in the form of Tay et al. 2021, arXiv 2011.04006): two of each label at 32 × 32, the
standard size (a sequence of 1024 pixels), and one at 64 × 64 (4096). Label 1 when a path joins
the two dots. And a few short ListOps expressions (:func:`ssm.tasks.listops`) with their values
and lengths, for :func:`summary`. Everything is drawn from fixed seeds, so the figure and the
text never change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import plotting, tasks
from ._common import check_profile


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "seed": 0,
        "per_label": 2,  # 32 × 32 images shown of each label
        "large": 64,  # side of the one larger image
        "listops": {"n": 3, "max_depth": 3, "max_args": 4, "min_length": 12, "max_length": 28},
    }


def _first_of_each(images: np.ndarray, labels: np.ndarray, per_label: int) -> list[dict]:
    """The first ``per_label`` images of label 1, then of label 0."""
    picked = []
    for label in (1, 0):
        for i in np.flatnonzero(labels == label)[:per_label]:
            picked.append({"image": images[i], "label": int(label), "size": images.shape[-1]})
    return picked


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    seed, k = cfg["seed"], cfg["per_label"]
    images, labels = tasks.pathfinder_images(4 * k, size=32, seed=seed)
    samples = _first_of_each(images, labels, k)
    large, large_labels = tasks.pathfinder_images(1, size=cfg["large"], seed=seed)
    samples.append({"image": large[0], "label": int(large_labels[0]), "size": cfg["large"]})

    spec = dict(cfg["listops"])
    expressions = tasks.listops(spec.pop("n"), seed=seed, **spec)
    listops = [
        {
            "text": tasks.listops_text(x),
            "value": int(y),
            "length": int((x != tasks.LISTOPS_PAD).sum()),
        }
        for x, y in zip(expressions.inputs, expressions.targets, strict=True)
    ]
    return {"pathfinder": samples, "listops": listops}


def summary(results: dict[str, Any]) -> str:
    """The ListOps expressions with their values and lengths in tokens."""
    lines = [f"{'value':>5} {'length':>6}  expression"]
    for e in results["listops"]:
        lines.append(f"{e['value']:>5} {e['length']:>6}  {e['text']}")
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """The Pathfinder samples side by side, each titled with its size and label."""
    samples = results["pathfinder"]
    fig, axes = plotting.subplots(1, len(samples), height=2.3)
    for ax, s in zip(np.ravel(axes), samples, strict=True):
        ax.imshow(np.asarray(s["image"]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        joined = "joined" if s["label"] == 1 else "not joined"
        ax.set_title(f"{s['size']}×{s['size']}, label {s['label']}\n({joined})", fontsize=10)
        ax.set_axis_off()
    return fig
