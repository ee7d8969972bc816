"""One look for every figure: a seaborn theme applied through an rc context (never globally at
import), the palettes and the figure sizes.

Every figure function in :mod:`.plots` and :mod:`.figure6` is wrapped in :func:`styled`, so
its fonts, colours and line widths come from here whatever the caller's matplotlib state;
sizes are given in inches for a paper column (:data:`SINGLE_COLUMN`, :data:`DOUBLE_COLUMN`), so
fonts of 7-8 pt stay legible when the figure is printed at that width.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import matplotlib as mpl
from cycler import cycler
from matplotlib.figure import Figure

__all__ = [
    "DOUBLE_COLUMN",
    "DPI",
    "IMAGE_CMAP",
    "LINESTYLES",
    "PALETTE",
    "SALIENCY_CMAP",
    "SINGLE_COLUMN",
    "THEME",
    "new_figure",
    "run_title",
    "series_style",
    "styled",
    "theme",
    "wrap_names",
]

SINGLE_COLUMN = 3.5  # inches: one column of a two-column paper
DOUBLE_COLUMN = 7.0  # inches: the full text width
DPI = 200  # PNG resolution: 1400 px across a double-column figure; PDFs are vector

#: Seaborn's "colorblind" palette (hex, so that drawing needs no seaborn call), grey moved last:
#: grey is kept for "everything else" (unmerged tasks, chance levels).
PALETTE = (
    *("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc"),
    *("#ca9161", "#56b4e9", "#fbafe4", "#ece133", "#949494"),
)
#: Beyond len(PALETTE) series the colours repeat with the next line style.
LINESTYLES = ("-", "--", ":", "-.")
IMAGE_CMAP = "viridis"  # distances, groups: perceptually uniform
SALIENCY_CMAP = "magma"

THEME = {"context": "paper", "style": "ticks", "font_scale": 1.0}
_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": IMAGE_CMAP,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "axes.prop_cycle": cycler(color=PALETTE[:-1]),
}

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def theme() -> Iterator[None]:
    """rc context holding the seaborn theme (:data:`THEME`) and this project's sizes; seaborn is
    imported here, not when the analysis package is."""
    import seaborn as sns

    rc = {
        **sns.axes_style(THEME["style"]),
        **sns.plotting_context(THEME["context"], font_scale=THEME["font_scale"]),
        **_RC,
    }
    with mpl.rc_context(rc):
        yield


def styled(func: F) -> F:
    """Decorator: run a figure function inside :func:`theme` (fonts and colours are fixed when
    the artists are created, so the returned Figure keeps the style outside the context)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with theme():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(width: float = DOUBLE_COLUMN, height: float = 3.0, **kwargs: Any) -> Figure:
    """A Figure ``width`` x ``height`` inches with constrained layout (no pyplot state)."""
    return Figure(figsize=(width, height), layout="constrained", dpi=DPI, **kwargs)


def series_style(i: int) -> dict[str, str]:
    """Colour and line style of series ``i``: distinct (colour, style) pairs for the first
    ``len(PALETTE) * len(LINESTYLES)`` series."""
    n = len(PALETTE)
    return {"color": PALETTE[i % n], "linestyle": LINESTYLES[(i // n) % len(LINESTYLES)]}


def run_title(attrs: Mapping[str, Any]) -> str:
    """``dataset / method / seed k`` from a run's manifest (or a tree's attributes)."""
    dataset = (attrs.get("dataset") or {}).get("name", "?")
    return f"{dataset} / {attrs.get('method', '?')} / seed {attrs.get('seed', '?')}"


def wrap_names(names: Sequence[str], width: int = 28) -> str:
    """All of ``names`` joined by commas, wrapped into lines of at most ``width`` characters
    (a name longer than ``width`` keeps its own line, unbroken)."""
    return "\n".join(
        textwrap.wrap(", ".join(names), width, break_long_words=False, break_on_hyphens=False)
    )
