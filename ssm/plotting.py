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

#: Pixels per display pixel of the PNG images the notebooks show: rendered at ``PIXEL_RATIO``
#: times ``figure.dpi`` and displayed at the size of a ``figure.dpi`` image, they stay sharp on
#: high-density (2×) screens.
PIXEL_RATIO = 2

RC: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100 * PIXEL_RATIO,
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
    when imported, and this function does it without ``pyplot``. The images are rendered for 2×
    screens and shown at their nominal size (:func:`png_display`).
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
        shell.display_formatter.formatters["image/png"].for_type(Figure, png_display)


def png_bytes(fig: Figure, *, colors: int = 256, dpi: float | None = None) -> bytes:
    """The figure as a compact PNG: tight bounding box, quantized to ``colors`` colours.

    Rendered at ``dpi``, by default :data:`PIXEL_RATIO` times the figure's own dpi (so twice as
    many pixels each way as the figure's nominal size). Line plots use few colours, so an adaptive
    palette keeps them visually identical at about a third of the size, which keeps the notebooks
    (outputs included) small.
    """
    from PIL import Image

    raw = io.BytesIO()
    dpi = PIXEL_RATIO * fig.dpi if dpi is None else dpi
    fig.savefig(raw, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    image = Image.open(io.BytesIO(raw.getvalue())).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=colors).save(out, format="png", optimize=True)
    return out.getvalue()


def png_base64(fig: Figure) -> str:
    """:func:`png_bytes` in base64, as notebook outputs hold images."""
    return base64.b64encode(png_bytes(fig)).decode()


def png_display(fig: Figure) -> tuple[str, dict[str, int]]:
    """:func:`png_base64` and the width to display it at, as an IPython formatter returns them.

    The width (in CSS pixels) is the image's divided by :data:`PIXEL_RATIO`: the figure keeps its
    nominal size on the page, with twice the resolution. Jupyter and Jupyter Book both read it.
    """
    from PIL import Image

    data = png_bytes(fig)
    width, _ = Image.open(io.BytesIO(data)).size
    return base64.b64encode(data).decode(), {"width": round(width / PIXEL_RATIO)}


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
    ls: str = ":",
) -> None:
    """Draw the reference line ``y = c·x^order`` through the point ``through`` on a log-log axis.

    Two guides on one axis need different ``ls`` (and a ``label`` each), so that they can be told
    apart without relying on a shade of grey.
    """
    x = np.asarray(x, dtype=float)
    x0, y0 = through
    ax.plot(x, y0 * (x / x0) ** order, ls=ls, lw=1.2, color=color, label=label)


def fit_loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the order of convergence / growth)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


# matplotlib's HTML animation template pulls Font Awesome from a CDN for its buttons and numbers
# the player with a random uuid. The buttons get inline SVG icons instead (drawn shapes, so no
# font on the reader's system is needed) and the class ANIMATION_BUTTON_CLASS, and the ids derive
# from the content, so the page works offline and is byte-stable.

#: CSS class of every control button of the players made by :func:`animation_html`.
ANIMATION_BUTTON_CLASS = "ssm-anim-button"

_BAR = "M{x} 2h2v12h-2z"  # a vertical bar 2 wide, at x
_SHAPES = {
    "minus": "M2 7h12v2H2z",
    "plus": "M7 2h2v5h5v2H9v5H7V9H2V7h5z",
    "play": "M4 2l10 6-10 6z",
    "reverse": "M12 2L2 8l10 6z",
    "pause": "M3 2h3.5v12H3zM9.5 2H13v12H9.5z",
    "step-forward": "M3 2l8 6-8 6z" + _BAR.format(x=11.5),
    "step-backward": "M13 2L5 8l8 6z" + _BAR.format(x=2.5),
    "last": "M1 2l6 6-6 6zM7 2l6 6-6 6z" + _BAR.format(x=13),
    "first": "M15 2L9 8l6 6zM9 2L3 8l6 6z" + _BAR.format(x=1),
}
_ICONS = {
    "fa-minus": "minus",
    "fa-fast-backward": "first",
    "fa-step-backward": "step-backward",
    "fa-play fa-flip-horizontal": "reverse",
    "fa-pause": "pause",
    "fa-play": "play",
    "fa-step-forward": "step-forward",
    "fa-fast-forward": "last",
    "fa-plus": "plus",
}


def _svg_icon(shape: str) -> str:
    return (
        '<svg class="ssm-anim-icon" viewBox="0 0 16 16" width="14" height="14" '
        f'aria-hidden="true" focusable="false"><path fill="currentColor" d="{_SHAPES[shape]}"/>'
        "</svg>"
    )


def _compact_frame(match: re.Match[str]) -> str:
    from PIL import Image

    data = base64.b64decode(match.group(1).replace("\\\n", ""))
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=64).save(out, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def animation_html(anim: Any, fig: Figure, *, name: str, fps: float | None = None) -> str:
    """Self-contained HTML player for a matplotlib animation (frames embedded as PNG).

    Unlike ``anim.to_jshtml()``, the result loads nothing from the network and needs no icon
    font (the buttons, of class :data:`ANIMATION_BUTTON_CLASS`, hold inline SVG icons), and its
    element ids derive from ``name`` and the frames, not from a random uuid, so re-running a
    notebook reproduces the same output. The frames of ``fig``, rendered at ``savefig.dpi``, are
    displayed :data:`PIXEL_RATIO` times smaller, sharp on 2× screens.
    """
    html = anim.to_jshtml(fps=fps, default_mode="once")
    # frames are base64 split into lines that end in a backslash (a JS string continuation)
    html = re.sub(r"data:image/png;base64,([A-Za-z0-9+/=\\\n]+)", _compact_frame, html)
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", html)
    for cls, shape in _ICONS.items():
        html = html.replace(f'<i class="fa {cls}"></i>', _svg_icon(shape))
    html = html.replace("<button title=", f'<button class="{ANIMATION_BUTTON_CLASS}" title=')
    if "https://" in html or "http://" in html or 'class="fa ' in html:
        raise RuntimeError("animation HTML still references an icon font or the network")
    dpi = mpl.rcParams["savefig.dpi"]
    width = round(fig.get_figwidth() * (fig.dpi if dpi == "figure" else dpi) / PIXEL_RATIO)
    html = re.sub(r'<img id="(_anim_img\w+)">', rf'<img id="\1" width="{width}">', html)
    for uid in set(re.findall(r"_anim_img([0-9a-f]{32})", html)):
        html = html.replace(uid, "{ANIM_ID}")
    stable = re.sub(r"\W", "_", name) + "_" + hashlib.sha256(html.encode()).hexdigest()[:12]
    return html.replace("{ANIM_ID}", stable)
