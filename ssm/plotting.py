"""The book's figure style and the plot helpers shared by the experiments.

Every experiment's ``plot`` builds its figure inside :func:`style` (or with the :func:`styled`
decorator) and through :func:`subplots`, so all chapters look alike:

- a colour-blind-safe palette (Okabe & Ito), with fixed colours for recurring roles
  (:data:`METHOD_COLORS` for discretizations, :data:`COLORS` for the rest);
- light grids, no top/right spines, frameless legends, constrained layout;
- figures made with :class:`matplotlib.figure.Figure` rather than ``pyplot``, so a notebook shows a
  figure exactly once (when a cell returns it) and loops that make figures leak nothing.

:func:`animation_html` turns a ``FuncAnimation`` into self-contained HTML (no network, no random
ids), which keeps chapters reproducible and readable offline.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Okabe & Ito, "Color Universal Design" (2008): distinguishable under all common colour blindness.
PALETTE: dict[str, str] = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}

#: Colours with a meaning that recurs across chapters.
COLORS: dict[str, str] = {
    "exact": PALETTE["black"],
    "reference": PALETTE["black"],
    "recurrent": PALETTE["blue"],
    "convolutional": PALETTE["orange"],
    "naive": PALETTE["vermillion"],
    "s4": PALETTE["green"],
    "signal": PALETTE["black"],
    "memory": PALETTE["blue"],
}

#: One colour per discretization method (see :func:`ssm.discretize`).
METHOD_COLORS: dict[str, str] = {
    "euler": PALETTE["vermillion"],
    "backward_euler": PALETTE["purple"],
    "bilinear": PALETTE["blue"],
    "zoh": PALETTE["green"],
}

#: Readable names for the discretization methods.
METHOD_LABELS: dict[str, str] = {
    "euler": "forward Euler",
    "backward_euler": "backward Euler",
    "bilinear": "bilinear",
    "zoh": "ZOH",
}

#: Width of a full-width figure in inches; heights are chosen per figure.
WIDTH = 8.0

RC: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.constrained_layout.use": True,
    "font.size": 11,
    "axes.titlesize": 11.5,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.prop_cycle": cycler(color=list(PALETTE.values())),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "legend.frameon": False,
    "image.cmap": "viridis",
    "animation.embed_limit": 8.0,
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context in which figures get the book's style (restores the previous rcParams after)."""
    with mpl.rc_context(RC):
        yield


def use_style() -> None:
    """Apply the book's style globally, and in IPython show ``Figure`` objects as PNG images.

    The experiments make figures with :class:`~matplotlib.figure.Figure` (not ``pyplot``), which
    IPython displays as images only once a figure formatter is registered; ``pyplot`` does that
    when imported, and this function does it without ``pyplot``.
    """
    mpl.rcParams.update(RC)
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:  # plain Python: nothing to register
        return
    shell = get_ipython()
    if shell is not None:
        select_figure_formats(shell, {"png"})  # clears other figure formatters
        shell.display_formatter.formatters["image/png"].for_type(Figure, png_base64)


def png_bytes(fig: Figure, *, colors: int = 256) -> bytes:
    """The figure as a compact PNG: tight bounding box, quantized to ``colors`` colours.

    Line plots use few colours, so an adaptive palette keeps them visually identical at about a
    third of the size, which keeps the notebooks (outputs included) small.
    """
    from PIL import Image

    raw = io.BytesIO()
    fig.savefig(raw, format="png", bbox_inches="tight", pad_inches=0.05)
    image = Image.open(io.BytesIO(raw.getvalue())).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=colors).save(out, format="png", optimize=True)
    return out.getvalue()


def png_base64(fig: Figure) -> str:
    """:func:`png_bytes` in base64, as notebook outputs hold images."""
    return base64.b64encode(png_bytes(fig)).decode()


F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Decorator: run a plotting function inside :func:`style`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with style():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def subplots(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float = WIDTH,
    height: float = 3.2,
    squeeze: bool = True,
    **kwargs: Any,
) -> tuple[Figure, Any]:
    """A ``Figure`` (not registered with pyplot) and its axes, like ``plt.subplots``.

    ``width`` and ``height`` are in inches; other keyword arguments go to ``Figure.subplots``.
    """
    with style():
        fig = Figure(figsize=(width, height), dpi=RC["figure.dpi"], layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)
    return fig, axes


def label(
    ax: Axes,
    x: str | None = None,
    y: str | None = None,
    title: str | None = None,
    *,
    legend: bool | str = False,
) -> Axes:
    """Set an axis' labels and title in one call; ``legend`` may be a location string."""
    if x is not None:
        ax.set_xlabel(x)
    if y is not None:
        ax.set_ylabel(y)
    if title is not None:
        ax.set_title(title)
    if legend:
        ax.legend(loc=legend if isinstance(legend, str) else "best")
    return ax


def panel_letters(axes: Sequence[Axes] | np.ndarray) -> None:
    """Prefix each panel's title with (a), (b), ... so captions can refer to panels."""
    for i, ax in enumerate(np.ravel(axes)):
        ax.set_title(f"({chr(ord('a') + i)}) {ax.get_title()}".rstrip())


def figure_legend(fig: Figure, ax: Axes, *, ncol: int | None = None, **kwargs: Any) -> None:
    """One legend for the whole figure, below the panels, with the entries of ``ax``."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol or len(labels), **kwargs)


def slope_guide(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    order: float,
    through: tuple[float, float],
    *,
    label: str | None = None,
    color: str = "0.4",
) -> None:
    """Draw the reference line ``y = c·x^order`` through the point ``through`` on a log-log axis."""
    x = np.asarray(x, dtype=float)
    x0, y0 = through
    ax.plot(x, y0 * (x / x0) ** order, ls=":", lw=1.2, color=color, label=label)


def fit_loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the order of convergence / growth)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


# matplotlib's HTML animation template pulls Font Awesome from a CDN for its buttons and numbers
# the player with a random uuid; these replacements make the page work offline and byte-stable.
_ICONS = {
    "fa-minus": "&minus;",
    "fa-fast-backward": "&#x23EE;",
    "fa-step-backward": "&#x23F4;&#x2758;",
    "fa-play fa-flip-horizontal": "&#x25C0;",
    "fa-pause": "&#x23F8;",
    "fa-play": "&#x25B6;",
    "fa-step-forward": "&#x2758;&#x23F5;",
    "fa-fast-forward": "&#x23ED;",
    "fa-plus": "+",
}


def _compact_frame(match: re.Match[str]) -> str:
    from PIL import Image

    data = base64.b64decode(match.group(1).replace("\\\n", ""))
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=64).save(out, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def animation_html(anim: Any, *, name: str, fps: float | None = None) -> str:
    """Self-contained HTML player for a matplotlib animation (frames embedded as PNG).

    Unlike ``anim.to_jshtml()``, the result loads nothing from the network (the button icons are
    Unicode characters) and its element ids derive from ``name`` and the frames, not from a
    random uuid, so re-running a notebook reproduces the same output.
    """
    html = anim.to_jshtml(fps=fps, default_mode="once")
    # frames are base64 split into lines that end in a backslash (a JS string continuation)
    html = re.sub(r"data:image/png;base64,([A-Za-z0-9+/=\\\n]+)", _compact_frame, html)
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", html)
    for cls, glyph in _ICONS.items():
        html = html.replace(f'<i class="fa {cls}"></i>', glyph)
    if "https://" in html or "http://" in html:
        raise RuntimeError("animation HTML still references the network; update _ICONS")
    for uid in set(re.findall(r"_anim_img([0-9a-f]{32})", html)):
        html = html.replace(uid, "{ANIM_ID}")
    stable = re.sub(r"\W", "_", name) + "_" + hashlib.sha256(html.encode()).hexdigest()[:12]
    return html.replace("{ANIM_ID}", stable)
