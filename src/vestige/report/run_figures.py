"""Figures an analysis leaves in its own results folder, drawn from its tables once it has run
(tasks/analyze.py): `attention/gates.png` and `nonlocality.png`, the mean over heads of each
layer against the epoch (docs/science.md §14; DeiT has no gates, so no `gates.png`);
`robustness/robustness.png`, the run's accuracies against the epoch (docs/science.md §7)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vestige.analysis.attention import TABLES
from vestige.io import atomic_write_bytes, read_rows
from vestige.report.plotting import colour, epoch_axis, figure_bytes, panels
from vestige.report.tables import read_table

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


def largest_radius_columns(columns: list[str]) -> list[str]:
    """Of summary.csv's `<attack>@<epsilon>` columns, each attack's at its largest epsilon."""
    largest: dict[str, tuple[float, str]] = {}
    for column in columns:
        attack, at, epsilon = column.partition("@")
        if at and (attack not in largest or float(epsilon) > largest[attack][0]):
            largest[attack] = (float(epsilon), column)
    return [column for _, column in largest.values()]


def robustness_figures(folder: Path, run_name: str) -> None:
    """`robustness.png` (640 x 400): clean and mean corruption accuracy, and each attack's
    accuracy at its largest radius, against the epoch."""
    summary = read_table(folder / "summary.csv")
    if summary is None:
        return
    columns = ["clean_accuracy", "mean_corruption_accuracy", *largest_radius_columns(list(summary))]
    (axes,) = panels(1, size=(6.4, 4.0))
    for n, column in enumerate(columns):
        label = column.removesuffix("_accuracy").replace("_", " ")
        line_colour = colour(n, len(columns))
        axes.plot(summary["epoch"], summary[column], marker=".", color=line_colour, label=label)
    epoch_axis(axes, summary["epoch"].tolist())
    axes.set_ylabel("top-1 accuracy")
    axes.set_title(f"robustness over training: {run_name}", fontsize=9)
    axes.legend(fontsize=7)
    atomic_write_bytes(folder / "robustness.png", figure_bytes(axes.figure, "png"))


# analysis name -> what draws its figures in its folder
RUN_FIGURES: dict[str, Callable[[Path, str], None]] = {
    "attention": attention_figures,
    "robustness": robustness_figures,
}
