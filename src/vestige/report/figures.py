"""The report's figures, one function per figure: groups of runs in, a matplotlib Figure out, or
None when no run has the data (the figure and its section are then left out).

Every curve of a group is the mean over its seeds with a band of two standard errors
(grouping.seed_band), clipped to the values the quantity can take (ranges.py); epochs are on a
log scale where there are sub-epoch snapshots (plotting.epoch_axis). Sizes and fonts follow the
report's style (plotting.STYLES).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vestige.report.grouping import BAND_SE, Group, group_band, mean_and_spread
from vestige.report.plotting import (
    Style,
    colour,
    epoch_axis,
    legend_below,
    panel_legend,
    panels,
    plot_band,
    set_title,
    wrapped,
)
from vestige.report.ranges import band_edges
from vestige.report.tables import Curve, RunRecord, Table, metric_curve, table_curve

ABLATION_SNAPSHOTS = 6  # ablation curves of at most this many snapshots, first and last included
CONDITION_STYLE = {"selective": "-", "random": "--"}  # docs/science.md §4
WHOLE_STAGE = {"block": "all"}  # ablation rows that silence every block of a stage together
LINEARITY = (  # (probe, column = quantity, panel title): analysis/linearity/
    ("linearized", "agreement", "linearised network: argmax agreement"),
    ("linearized", "relative_error", "linearised network: relative error of logits"),
    ("linearized", "acc_linearized", "linearised network: top-1 accuracy"),
    ("linear_classifier", "mu", "mu = I(F;L) - I(F;L|Y), bits"),
    ("relu_flips", "flip_fraction", "ReLU states flipped since the base snapshot"),
)
ATTENTION = (  # (RunRecord attribute, value column = quantity, panel title)
    ("gates", "gate", "sigmoid(gate): 1 = positional"),
    ("nonlocality", "nonlocality", "nonlocality (patches)"),
)


def legend_label(group: Group, seeds: int) -> str:
    """The group's name and, where fewer of its seeds had the data than the caption counts
    (spread_caption), how many did."""
    if seeds == 0:
        return f"{group.name} (no data)"
    missing = seeds < len(group.runs)
    return group.name + (f" ({seeds} of {len(group.runs)} seeds)" if missing else "")


def spread_caption(groups: Sequence[Group], shown: str = "Shaded") -> str:
    """What the band (or bar) of a figure is and over how many seeds, for its caption."""
    counts = sorted({len(group.runs) for group in groups})
    if counts[-1] == 1:
        return "One seed per condition: no band."
    seeds = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else f"{counts[0]}"
    single = "; none for a condition of one seed" if counts[0] == 1 else ""
    return (
        f"{shown}: mean ± {BAND_SE:g} SE over {seeds} seeds{' per condition' * (len(counts) > 1)}"
        f", clipped to the values the quantity can take{single}."
    )


def distinct(tables: Sequence[Table | None], column: str) -> list:
    """The distinct values of a column over tables, in order of first appearance."""
    seen: dict = {}
    for table in tables:
        if table is not None and column in table:
            seen.update(dict.fromkeys(table[column].tolist()))
    return list(seen)


def plot_groups(
    axes: Axes,
    groups: Sequence[Group],
    curve_of: Callable[[RunRecord], Curve | None],
    quantity: str,
    suffix: str = "",
    linestyle: str = "-",
) -> list[float]:
    """One mean-over-seeds line of the quantity with its band per group; returns the x values
    drawn."""
    drawn: list[float] = []
    for n, group in enumerate(groups):
        band = group_band(group, curve_of)
        if band is not None:
            label = legend_label(group, int(band.count.max())) + suffix
            plot_band(axes, band, quantity, colour(n, len(groups)), label, linestyle)
            drawn += band.x.tolist()
    return drawn


def with_legend_below(axes_list: Sequence[Axes], style: Style) -> Figure:
    """The figure, with the first panel's legend once below all panels."""
    figure = axes_list[0].figure
    legend_below(figure, axes_list[0], style)
    return figure


BN_STYLE = {  # RunRecord attribute -> (legend suffix, line style): analysis/batchnorm.py
    "selectivity": ("", "-"),
    "selectivity_recomputed": (": BN statistics re-estimated", ":"),
}


def selectivity_over_training(groups: Sequence[Group], style: Style) -> Figure | None:
    """Mean class selectivity per stage and the network mean against the epoch
    (docs/science.md §2: block mean over units, stage mean over blocks); with
    the snapshots' own BatchNorm statistics (solid) and, where measured, re-estimated ones
    (dotted)."""
    tables = [getattr(run, kind) for kind in BN_STYLE for g in groups for run in g.runs]
    stages = distinct(tables, "stage")
    if not stages:
        return None
    stages = [s for s in stages if s != "all"] + ["all"] * ("all" in stages)
    axes_list = panels(len(stages), style)
    for axes, stage in zip(axes_list, stages, strict=True):
        drawn: list[float] = []
        for kind, (suffix, linestyle) in BN_STYLE.items():
            drawn += plot_groups(
                axes,
                groups,
                lambda run, s=stage, k=kind: table_curve(getattr(run, k), "si", stage=s),
                "si",
                suffix,
                linestyle,
            )
        epoch_axis(axes, drawn)
        set_title(axes, "network mean" if stage == "all" else stage, style)
        axes.set_ylabel("mean SI")
    return with_legend_below(axes_list, style)


def accuracy_curves(groups: Sequence[Group], style: Style) -> Figure | None:
    """Evaluation accuracy and loss, and the training loss, per condition against the epoch."""
    keys = [
        (key, title)
        for key, title in (
            ("eval_acc", "eval top-1 accuracy"),
            ("eval_loss", "eval loss"),
            ("train_loss", "train loss (cross-entropy)"),
        )
        if any(metric_curve(run, key) is not None for g in groups for run in g.runs)
    ]
    if not keys:
        return None
    axes_list = panels(len(keys), style)
    for axes, (key, title) in zip(axes_list, keys, strict=True):
        epoch_axis(axes, plot_groups(axes, groups, lambda run, k=key: metric_curve(run, k), key))
        set_title(axes, title, style)
    return with_legend_below(axes_list, style)


def final_accuracy(groups: Sequence[Group], style: Style) -> Figure | None:
    """The last evaluation accuracy of each condition: every seed a dot, the mean a bar with
    two standard errors (clipped to [0, 1]). Only for two or more conditions."""
    finals = [
        [curve.y[-1] for run in g.runs if (curve := metric_curve(run, "eval_acc")) is not None]
        for g in groups
    ]
    if len(groups) < 2 or not any(finals):
        return None
    (axes,) = panels(1, style, size=(max(4.2, 1.1 * len(groups)), 3.6))
    for n, values in enumerate(finals):
        if values:
            mean, spread = mean_and_spread(values)
            lower, upper = band_edges(mean, np.nan_to_num(spread), "eval_acc")
            axes.bar(
                n,
                mean,
                yerr=[[mean - lower], [upper - mean]],
                color=colour(n, len(groups)),
                alpha=0.5,
                capsize=4,
            )
            axes.plot([n] * len(values), values, "k.", markersize=5)
    names = [wrapped(g.name, 1.5, style.legend) for g in groups]
    axes.set_xticks(range(len(groups)), names, rotation=20, ha="right", fontsize=style.legend)
    axes.set_ylabel("final eval top-1 accuracy")
    return axes.figure


def spread_out(values: list[float], count: int) -> list[float]:
    """At most `count` of the sorted values, evenly spaced in rank, first and last included."""
    if len(values) <= count:
        return values
    return [values[i] for i in np.linspace(0, len(values) - 1, count).round().astype(int)]


def ablation_curves(groups: Sequence[Group], style: Style) -> Figure | None:
    """Normalised accuracy (acc / acc at k=0) against the ablated fraction k/C, selective
    (solid) vs random (dashed): one panel per group and stage, one colour per snapshot
    (docs/science.md §4)."""
    shown = [g for g in groups if any(run.ablation is not None for run in g.runs)]
    stages = distinct([run.ablation for g in shown for run in g.runs], "stage")
    if not stages:
        return None
    axes_list = panels(len(shown) * len(stages), style, columns=len(stages))
    for row, group in enumerate(shown):
        tables = [run.ablation for run in group.runs if run.ablation is not None]
        steps = spread_out(sorted(distinct(tables, "step")), ABLATION_SNAPSHOTS)
        for axes, stage in zip(axes_list[row * len(stages) :], stages, strict=False):
            for n, step in enumerate(steps):
                for condition, linestyle in CONDITION_STYLE.items():
                    band = group_band(
                        group,
                        lambda run, s=stage, t=step, c=condition: table_curve(
                            run.ablation,
                            "top1_norm",
                            x="fraction",
                            stage=s,
                            step=t,
                            condition=c,
                            **WHOLE_STAGE,
                        ),
                    )
                    if band is None:
                        continue
                    epoch = table_curve(tables[0], "epoch", x="step", step=step)
                    label = (
                        f"epoch {epoch.y[0]:.3g}"
                        if epoch is not None and condition == "selective"
                        else None
                    )
                    plot_band(
                        axes,
                        band,
                        "top1_norm",
                        colour(n, len(steps), "viridis"),
                        label,
                        linestyle,
                    )
            set_title(axes, f"{stage}: {legend_label(group, len(tables))}", style)
            axes.set_xlabel("ablated fraction k/C")
            axes.set_ylabel("normalised accuracy")
            axes.legend(fontsize=style.legend)
    return axes_list[0].figure


def ablation_auc_curve(run: RunRecord, stage: str, condition: str) -> Curve | None:
    """AUC of the normalised top-1 curve against the epoch (mean over random draws)."""
    return table_curve(
        run.ablation_auc, "auc_top1", stage=stage, condition=condition, **WHOLE_STAGE
    )


def ablation_auc(groups: Sequence[Group], style: Style) -> Figure | None:
    """Area under the normalised ablation curve against the epoch, selective (solid) vs random
    (dashed), one panel per stage (docs/science.md §4)."""
    stages = distinct([run.ablation_auc for g in groups for run in g.runs], "stage")
    if not stages:
        return None
    axes_list = panels(len(stages), style)
    for axes, stage in zip(axes_list, stages, strict=True):
        drawn: list[float] = []
        for condition, linestyle in CONDITION_STYLE.items():
            drawn += plot_groups(
                axes,
                groups,
                lambda run, s=stage, c=condition: ablation_auc_curve(run, s, c),
                "auc_top1",
                f": {condition}",
                linestyle,
            )
        epoch_axis(axes, drawn)
        set_title(axes, stage, style)
        axes.set_ylabel("AUC of normalised accuracy")
    return with_legend_below(axes_list, style)


def linearity_over_training(groups: Sequence[Group], style: Style) -> Figure | None:
    """The main quantity of each linear-regime probe against the epoch (of the later snapshot
    of a pair), one panel each (docs/science.md §5)."""
    shown = [
        (probe, column, title)
        for probe, column, title in LINEARITY
        if any(column in run.linearity.get(probe, {}) for g in groups for run in g.runs)
    ]
    if not shown:
        return None
    axes_list = panels(len(shown), style)
    for axes, (probe, column, title) in zip(axes_list, shown, strict=True):
        drawn = plot_groups(
            axes,
            groups,
            lambda run, p=probe, c=column: table_curve(run.linearity.get(p), c),
            column,
        )
        epoch_axis(axes, drawn)
        set_title(axes, title, style)
    return with_legend_below(axes_list, style)


def attention_over_training(groups: Sequence[Group], style: Style) -> Figure | None:
    """ConViT gates and nonlocality per layer (mean over heads, then over seeds) against the
    epoch, one row per group (docs/science.md §14); DeiT has no gates: that panel stays
    empty."""
    kinds = [
        k for k in ATTENTION if any(getattr(r, k[0]) is not None for g in groups for r in g.runs)
    ]
    shown = [g for g in groups if any(getattr(r, k[0]) is not None for r in g.runs for k in kinds)]
    if not kinds:
        return None
    axes_list = panels(len(shown) * len(kinds), style, columns=len(kinds))
    for row, group in enumerate(shown):
        for axes, (attribute, value, title) in zip(
            axes_list[row * len(kinds) :], kinds, strict=False
        ):
            tables = [t for run in group.runs if (t := getattr(run, attribute)) is not None]
            layers = sorted(distinct(tables, "layer"))
            drawn: list[float] = []
            for n, layer in enumerate(layers):
                band = group_band(
                    group,
                    lambda run, a=attribute, v=value, i=layer: table_curve(
                        getattr(run, a), v, layer=i
                    ),
                )
                if band is not None:
                    plot_band(
                        axes,
                        band,
                        value,
                        colour(n, len(layers), "viridis"),
                        f"layer {layer:g}",
                    )
                    drawn += band.x.tolist()
            epoch_axis(axes, drawn)
            set_title(axes, f"{title}: {legend_label(group, len(tables))}", style)
            if layers:
                panel_legend(axes, style)
    return axes_list[0].figure


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: its file name, its page section and caption, how to draw it,
    and how it shows the spread over seeds (for the caption: spread_caption)."""

    name: str
    section: str
    caption: str
    draw: Callable[[Sequence[Group], Style], Figure | None]
    spread: str = "Shaded"


FIGURES = (
    FigureSpec(
        "selectivity",
        "Class selectivity",
        "Mean class selectivity index per stage over training; where measured, dotted lines "
        "use BatchNorm statistics re-estimated on training images "
        "(analysis.bn_stats=recompute).",
        selectivity_over_training,
    ),
    FigureSpec(
        "accuracy", "Accuracy", "Evaluation accuracy and loss over training.", accuracy_curves
    ),
    FigureSpec(
        "final_accuracy",
        "Accuracy",
        "Final evaluation accuracy per condition, each seed a dot.",
        final_accuracy,
        "Bars",
    ),
    FigureSpec(
        "ablation_curves",
        "Ablation",
        "Normalised accuracy after ablating k of the C units of every block of a stage: the "
        "most selective units (solid) vs random ones (dashed).",
        ablation_curves,
    ),
    FigureSpec(
        "ablation_auc",
        "Ablation",
        "Area under the normalised ablation curve over training.",
        ablation_auc,
    ),
    FigureSpec(
        "linearity",
        "Linear regime",
        "Linear-regime probes over training, each snapshot against its base snapshot.",
        linearity_over_training,
    ),
    FigureSpec(
        "attention",
        "Attention",
        "ConViT gates and nonlocality per layer (mean over heads) over training.",
        attention_over_training,
    ),
)
