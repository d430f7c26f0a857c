"""The drawing conventions every vestige figure shares: headless Agg figures, the epoch axis, a
mean line with its band, PNG bytes.

Figures are built with matplotlib's object API (`Figure` + `FigureCanvasAgg`), never pyplot, so
nothing depends on a display or on global state, and figures drawn in one process never mix.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator

PANEL_SIZE = (4.2, 3.0)  # inches per panel, at DPI
DPI = 100


def panels(count: int, columns: int = 3, size: tuple[float, float] = PANEL_SIZE) -> list[Axes]:
    """A new figure with `count` panels, `columns` to a row; returns the panels in reading order
    (their `.figure` is the figure)."""
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(size[0] * columns, size[1] * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return [figure.add_subplot(rows, columns, n + 1) for n in range(count)]


def epoch_axis(axes: Axes, epochs: Iterable[float]) -> None:
    """Epochs on x, logarithmic when there are sub-epoch snapshots (where early training changes
    fastest) and linear below the first non-zero epoch, so that step 0 still shows."""
    positive = sorted({float(e) for e in epochs if e > 0})
    if positive and positive[0] < 1:
        axes.set_xscale("symlog", linthresh=positive[0], linscale=0.5)
        axes.xaxis.set_major_locator(
            SymmetricalLogLocator(base=10, linthresh=positive[0], subs=(1.0, 2.0, 5.0))
        )
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel("epoch")


def plot_band(
    axes: Axes,
    x: np.ndarray,
    mean: np.ndarray,
    spread: np.ndarray,
    line_colour: object,
    label: str | None = None,
    linestyle: str = "-",
) -> None:
    """A mean line with a shaded band of +-spread where the spread is known (NaN: no band)."""
    axes.plot(
        x, mean, marker=".", markersize=4, color=line_colour, label=label, linestyle=linestyle
    )
    known = np.isfinite(spread)
    if known.any():
        axes.fill_between(
            x,
            mean - np.where(known, spread, 0),
            mean + np.where(known, spread, 0),
            where=known,
            color=line_colour,
            alpha=0.2,
            linewidth=0,
        )


def colour(n: int, count: int, palette: str = "tab10") -> object:
    """The n-th of `count` colours: categorical (tab10) for conditions, sequential (viridis)
    for ordered things such as layers or snapshots."""
    if palette == "tab10":
        return colormaps["tab10"](n % 10)
    return colormaps[palette](n / max(count - 1, 1))


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
