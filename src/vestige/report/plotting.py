"""The drawing conventions every vestige figure shares: headless Agg figures in a style (`screen`
for the page, `paper` for a column of a paper), the epoch axis, a mean line with its band, the
figure as PNG or PDF bytes.

Figures are built with matplotlib's object API (`Figure` + `FigureCanvasAgg`), never pyplot, so
nothing depends on a display or on global state, and figures drawn in one process never mix.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.textpath import TextToPath
from matplotlib.ticker import FuncFormatter, Locator

from vestige.errors import invalid
from vestige.report.grouping import Band
from vestige.report.ranges import band_edges

PANEL_SIZE = (4.2, 3.0)  # inches per panel on screen; its shape on paper
CHARACTER_WIDTH = 0.6  # an average character of the default font, in ems: for wrapping text
LEGEND_HANDLE = 0.5  # inches of a legend entry taken by its line sample and padding
Y_LABELS = 0.5  # inches of a panel taken by its y tick and axis labels
TICK_GAP = 0.5  # ems of space kept between two tick labels of the epoch axis
DECADE_SUBS = (1.0, 5.0, 2.0)  # epoch ticks within a decade, in the order they are tried


@dataclass(frozen=True)
class Style:
    """How the report's figures look: sizes in inches, text in points."""

    column_width: float | None  # the whole figure's width; None: panels side by side
    columns: int  # at most this many panels to a row
    min_panel_height: float  # on a column's width, a panel is never flatter than this
    dpi: int  # of the PNG; the PDF is vector
    text: float  # tick and axis labels
    title: float
    legend: float

    def figure_size(
        self, columns: int, rows: int, panel: tuple[float, float]
    ) -> tuple[float, float]:
        """Panels of `panel` inches side by side, or scaled to share the column's width."""
        if self.column_width is None:
            return panel[0] * columns, panel[1] * rows
        height = self.column_width / columns * panel[1] / panel[0]
        return self.column_width, rows * max(height, self.min_panel_height)


STYLES = {
    "screen": Style(None, 3, 0.0, 100, text=10, title=9, legend=7),
    # a column of a two-column paper: 3.5 in wide, 8-9 pt text as printed
    "paper": Style(3.5, 2, 2.0, 300, text=8, title=9, legend=8),
}
SCREEN = STYLES["screen"]


def figure_style(name: str) -> Style:
    """The style `report.style` names; a one-line ConfigError for any other name."""
    if name not in STYLES:
        raise invalid("report.style", name, f"choose {' or '.join(STYLES)}")
    return STYLES[name]


def panels(
    count: int, style: Style = SCREEN, columns: int = 3, size: tuple[float, float] = PANEL_SIZE
) -> list[Axes]:
    """A new figure with `count` panels, at most `columns` to a row (fewer where the style
    allows fewer), `size` inches each on screen; returns the panels in reading order (their
    `.figure` is the figure), their tick and axis labels in the style's size."""
    columns = max(1, min(columns, count, style.columns))
    rows = math.ceil(count / columns)
    figure = Figure(
        figsize=style.figure_size(columns, rows, size), dpi=style.dpi, layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes_list = [figure.add_subplot(rows, columns, n + 1) for n in range(count)]
    for axes in axes_list:
        axes.tick_params(labelsize=style.text)
        axes.xaxis.label.set_fontsize(style.text)
        axes.yaxis.label.set_fontsize(style.text)
    return axes_list


def characters(inches: float, points: float) -> int:
    """About how many characters of text at `points` fit in `inches`."""
    return int(inches * 72 / (CHARACTER_WIDTH * points))


def wrapped(text: str, inches: float, points: float) -> str:
    """The text in lines that fit `inches` at `points` (never under 12 characters), broken
    after a comma where one serves, so that each setting of a condition's name
    (`lr = 0.1, alpha = -20`) stays whole."""
    width = max(12, characters(inches, points))
    lines: list[str] = []
    for piece in text.split(", "):
        if lines and len(lines[-1]) + 2 + len(piece) <= width:
            lines[-1] += ", " + piece
        else:
            lines[-1:] = [lines[-1] + ","] if lines else []
            lines.append(piece)
    return "\n".join(textwrap.fill(line, width) for line in lines)


def panel_width(axes: Axes) -> float:
    """The inches of figure width a panel has (its share of its row)."""
    return axes.figure.get_figwidth() / axes.get_subplotspec().get_gridspec().ncols


def set_title(axes: Axes, text: str, style: Style) -> None:
    """A panel's title in the style's size, wrapped to the width of its plot."""
    width = panel_width(axes) - Y_LABELS
    axes.set_title(wrapped(text, width, style.title), fontsize=style.title)


def legend_columns(labels: list[str], inches: float, points: float) -> int:
    """Two columns where every label fits in half of `inches`, else one."""
    half = characters(inches / 2 - LEGEND_HANDLE, points)
    return 2 if all(len(label) <= half for label in labels) else 1


def legend_below(figure: Figure, axes: Axes, style: Style) -> None:
    """The panel's legend once below the figure, in two columns where the labels fit, each
    label wrapped to its column."""
    handles, labels = axes.get_legend_handles_labels()
    if labels:
        columns = legend_columns(labels, figure.get_figwidth(), style.legend)
        width = figure.get_figwidth() / columns - LEGEND_HANDLE
        labels = [wrapped(label, width, style.legend) for label in labels]
        figure.legend(
            handles, labels, loc="outside lower center", fontsize=style.legend, ncol=columns
        )


def panel_legend(axes: Axes, style: Style) -> None:
    """A legend inside the panel, in two columns where its labels fit."""
    _, labels = axes.get_legend_handles_labels()
    columns = legend_columns(labels, panel_width(axes), style.legend)
    axes.legend(fontsize=style.legend, ncol=columns)


def epoch_label(value: float, _position: object = None) -> str:
    """`0`, `0.01`, `5`, `90`: the shortest text of an epoch."""
    return f"{value:g}"


def label_width(text: str, axes: Axes) -> float:
    """The width of a tick label of the axes' x axis, in display units (pixels on screen)."""
    font = axes.xaxis.majorTicks[0].label1.get_fontproperties()
    points, _, _ = TextToPath().get_text_width_height_descent(text, font, ismath=False)
    return points * axes.figure.dpi / 72


class EpochTicks(Locator):
    """Ticks of a symlog epoch axis whose labels never collide: 0, then each decade (nearest
    epoch 1 first), then 5x and 2x the decades, each kept only where its label stays half an em
    clear of the labels already kept. Positions are measured on the drawn axis, so the choice
    follows the figure's size and font."""

    def __init__(self, linthresh: float) -> None:
        self.linthresh = linthresh

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        """Every candidate within [vmin, vmax], in the order they are tried."""
        first = math.floor(math.log10(self.linthresh))
        last = math.ceil(math.log10(max(vmax, self.linthresh)))
        decades = sorted(range(first, last + 1), key=abs)
        candidates = [0.0] + [sub * 10.0**d for sub in DECADE_SUBS for d in decades]
        return [value for value in candidates if vmin <= value <= vmax]

    def __call__(self) -> list[float]:
        axes = self.axis.axes
        candidates = self.tick_values(*sorted(self.axis.get_view_interval()))
        if not candidates:
            return []
        where = axes.transData.transform(np.column_stack([candidates, np.zeros(len(candidates))]))
        widths = [label_width(epoch_label(value), axes) for value in candidates]
        gap = TICK_GAP * axes.xaxis.majorTicks[0].label1.get_fontsize() * axes.figure.dpi / 72
        kept: list[int] = []
        for n in range(len(candidates)):
            clear = all(
                abs(where[n, 0] - where[k, 0]) >= (widths[n] + widths[k]) / 2 + gap for k in kept
            )
            if clear:
                kept.append(n)
        return sorted(candidates[n] for n in kept)


def epoch_axis(axes: Axes, epochs: Iterable[float]) -> None:
    """Epochs on x, logarithmic when there are sub-epoch snapshots (where early training changes
    fastest) and linear below the first non-zero epoch, so that step 0 still shows; the
    labels of its ticks never overlap (EpochTicks)."""
    positive = sorted({float(e) for e in epochs if e > 0})
    if positive and positive[0] < 1:
        axes.set_xscale("symlog", linthresh=positive[0], linscale=0.5)
        axes.xaxis.set_major_locator(EpochTicks(positive[0]))
        axes.xaxis.set_major_formatter(FuncFormatter(epoch_label))
    axes.set_xlabel("epoch")


def plot_band(
    axes: Axes,
    band: Band,
    quantity: str,
    line_colour: object,
    label: str | None = None,
    linestyle: str = "-",
) -> None:
    """The mean line with a shaded band of +-spread where the spread is known (NaN: no band),
    clipped to the values the quantity can take (ranges.py)."""
    axes.plot(
        band.x,
        band.mean,
        marker=".",
        markersize=4,
        color=line_colour,
        label=label,
        linestyle=linestyle,
    )
    known = np.isfinite(band.spread)
    if known.any():
        lower, upper = band_edges(band.mean, np.where(known, band.spread, 0), quantity)
        axes.fill_between(
            band.x, lower, upper, where=known, color=line_colour, alpha=0.2, linewidth=0
        )


def colour(n: int, count: int, palette: str = "tab10") -> object:
    """The n-th of `count` colours: categorical (tab10) for conditions, sequential (viridis)
    for ordered things such as layers or snapshots."""
    if palette == "tab10":
        return colormaps["tab10"](n % 10)
    return colormaps[palette](n / max(count - 1, 1))


def figure_bytes(figure: Figure, form: str) -> bytes:
    """The figure as `png` (at the figure's dpi) or `pdf` (vector, its fonts embedded as
    TrueType as journals ask, no creation date so the same figure gives the same bytes)."""
    buffer = io.BytesIO()
    metadata = {"CreationDate": None} if form == "pdf" else None
    with rc_context({"pdf.fonttype": 42}):
        figure.savefig(buffer, format=form, metadata=metadata)
    return buffer.getvalue()
