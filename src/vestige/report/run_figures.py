"""Figures an analysis leaves in its own results folder, drawn from its tables once it has run
(tasks/analyze.py): `attention/gates.png` and `nonlocality.png`, the mean over heads of each
layer against the epoch (docs/science.md §14; DeiT has no gates, so no `gates.png`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vestige.analysis.attention import TABLES
from vestige.io import atomic_write_bytes, read_rows
from vestige.report.plotting import colour, epoch_axis, figure_bytes, panels

LABELS = {"gate": "sigmoid(gate): 1 = positional", "nonlocality": "nonlocality (patches)"}


def layer_means_png(rows: list[dict[str, str]], column: str, title: str) -> bytes:
    """PNG (640 x 400) of the mean over heads vs epoch, one line per layer, on the shared epoch
    axis (report/plotting.py: logarithmic where there are sub-epoch snapshots)."""
    by_layer: dict[int, dict[float, list[float]]] = {}
    for row in rows:
        points = by_layer.setdefault(int(row["layer"]), {})
        points.setdefault(float(row["epoch"]), []).append(float(row[column]))
    (axes,) = panels(1, size=(6.4, 4.0))
    for n, (layer, points) in enumerate(sorted(by_layer.items())):
        epochs = sorted(points)
        means = [float(np.mean(points[e])) for e in epochs]
        axes.plot(
            epochs,
            means,
            marker=".",
            color=colour(n, len(by_layer), "viridis"),
            label=f"layer {layer}",
        )
    epoch_axis(axes, [float(row["epoch"]) for row in rows])
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7, ncol=2)
    return figure_bytes(axes.figure, "png")


def attention_figures(folder: Path, run_name: str) -> None:
    for key, column, _ in TABLES:
        rows = read_rows(folder / f"{key}.csv")
        if rows:
            title = f"{LABELS[column]}, mean over heads: {run_name}"
            atomic_write_bytes(folder / f"{key}.png", layer_means_png(rows, column, title))


# analysis name -> what draws its figures in its folder
RUN_FIGURES: dict[str, Callable[[Path, str], None]] = {"attention": attention_figures}
