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
from vestige.report.tables import (
    Curve,
    RunRecord,
    Table,
    metric_curve,
    robustness_si,
    table_curve,
)

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


@dataclass(frozen=True)
class Panel:
    """One panel of quantity-against-epoch curves: its title, each run's curve, and the
    quantity (for the values its band can take, ranges.py)."""

    title: str
    curve_of: Callable[[RunRecord], Curve | None]
    quantity: str


def curves_over_training(
    groups: Sequence[Group],
    style: Style,
    shown: Sequence[Panel],
    y_label: str | None = None,
    shared_y: bool = False,
) -> Figure | None:
    """One panel per quantity against the epoch, one line per condition with its seed band;
    `shared_y` puts the panels on one y scale, so that quantities of one kind (accuracies)
    compare across panels. None when there is no panel."""
    if not shown:
        return None
    axes_list = panels(len(shown), style)
    for axes, panel in zip(axes_list, shown, strict=True):
        if shared_y and axes is not axes_list[0]:
            axes.sharey(axes_list[0])
        epoch_axis(axes, plot_groups(axes, groups, panel.curve_of, panel.quantity))
        set_title(axes, panel.title, style)
        if y_label is not None:
            axes.set_ylabel(y_label)
    return with_legend_below(axes_list, style)


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
    shown = [
        Panel(title, lambda run, k=key: metric_curve(run, k), key)
        for key, title in (
            ("eval_acc", "eval top-1 accuracy"),
            ("eval_loss", "eval loss"),
            ("train_loss", "train loss (cross-entropy)"),
        )
        if any(metric_curve(run, key) is not None for g in groups for run in g.runs)
    ]
    return curves_over_training(groups, style, shown)


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
        Panel(title, lambda run, p=probe, c=column: table_curve(run.linearity.get(p), c), column)
        for probe, column, title in LINEARITY
        if any(column in run.linearity.get(probe, {}) for g in groups for run in g.runs)
    ]
    return curves_over_training(groups, style, shown)


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


NORM_WORDS = {"linf": "L∞", "l2": "L2"}  # analysis.robustness.norm
GREY_LEVEL = 1 / 255  # an L∞ radius that is a whole number of these is written as one


@dataclass(frozen=True)
class Attack:
    """An attack of analysis=robustness at one radius, as adversarial.csv names it."""

    name: str  # fgsm | pgd
    norm: str  # linf | l2
    epsilon: float  # in pixels of [0, 1]

    @property
    def title(self) -> str:
        """`PGD, L∞ ε = 8/255`: L∞ radii in grey levels where they are whole ones."""
        levels = self.epsilon / GREY_LEVEL
        whole = self.norm == "linf" and levels >= 1 and abs(levels - round(levels)) < 1e-3
        radius = f"{round(levels)}/255" if whole else f"{self.epsilon:.3g}"
        return f"{self.name.upper()}, {NORM_WORDS.get(self.norm, self.norm)} ε = {radius}"

    def curve(self, run: RunRecord) -> Curve | None:
        """The run's accuracy under this attack against the epoch."""
        adversarial = run.robustness.get("adversarial")
        return table_curve(adversarial, "accuracy", attack=self.name, epsilon=self.epsilon)


def strongest_attacks(groups: Sequence[Group]) -> list[Attack]:
    """Each attack some run measured, at the largest radius measured, in order of appearance."""
    largest: dict[str, Attack] = {}
    for run in (run for group in groups for run in group.runs):
        table = run.robustness.get("adversarial")
        if table is None:
            continue
        rows = zip(*(table[c].tolist() for c in ("attack", "norm", "epsilon")), strict=True)
        for name, norm, epsilon in rows:
            if name not in largest or epsilon > largest[name].epsilon:
                largest[name] = Attack(name, norm, epsilon)
    return list(largest.values())


def headline_attack(groups: Sequence[Group]) -> Attack | None:
    """PGD at its largest radius (the stronger attack), else the first attack measured."""
    attacks = strongest_attacks(groups)
    return next((attack for attack in attacks if attack.name == "pgd"), (attacks or [None])[0])


def robustness_curve(run: RunRecord, column: str) -> Curve | None:
    """A column of the run's robustness summary.csv against the epoch."""
    return table_curve(run.robustness.get("summary"), column)


CLEAN = Panel(
    "clean accuracy", lambda run: robustness_curve(run, "clean_accuracy"), "clean_accuracy"
)
CORRUPTED = Panel(
    "mean corruption accuracy",
    lambda run: robustness_curve(run, "mean_corruption_accuracy"),
    "mean_corruption_accuracy",
)


def corruption_panel(groups: Sequence[Group]) -> Panel:
    """CORRUPTED, its title saying over how many corruptions and severities the mean is."""
    tables = [run.robustness.get("corruptions") for g in groups for run in g.runs]
    corruptions, severities = (len(distinct(tables, c)) for c in ("corruption", "severity"))
    if not corruptions:
        return CORRUPTED
    over = f" ({corruptions} corruption{'s' * (corruptions > 1)} × {severities} severities)"
    return Panel(CORRUPTED.title + over, CORRUPTED.curve_of, CORRUPTED.quantity)


def robustness_over_training(groups: Sequence[Group], style: Style) -> Figure | None:
    """Clean accuracy, mean corruption accuracy and each attack's accuracy at its largest
    radius against the epoch, on one y scale (docs/science.md §7)."""
    measured = any("summary" in run.robustness for g in groups for run in g.runs)
    shown = [CLEAN, corruption_panel(groups)] * measured + [
        Panel(attack.title, attack.curve, "accuracy") for attack in strongest_attacks(groups)
    ]
    return curves_over_training(groups, style, shown, "top-1 accuracy", shared_y=True)


def representation_change(groups: Sequence[Group], style: Style) -> Figure | None:
    """The participation ratio of the change a perturbation causes in each stage's output
    against the epoch, one panel per stage (docs/science.md §7)."""
    stages = distinct([run.robustness.get("change") for g in groups for run in g.runs], "stage")
    shown = [
        Panel(
            stage,
            lambda run, s=stage: table_curve(
                run.robustness.get("change"), "participation_ratio", stage=s
            ),
            "participation_ratio",
        )
        for stage in stages
    ]
    return curves_over_training(groups, style, shown, "participation ratio")


def against_si(run: RunRecord, curve: Curve | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's network-mean SI and the curve's values at each snapshot analysis=robustness
    measured that has both, in training order."""
    si = robustness_si(run)
    if si is None or curve is None:
        return None
    _, at_si, at_curve = np.intersect1d(si.x, curve.x, return_indices=True)
    return (si.y[at_si], curve.y[at_curve]) if len(at_si) else None


def snapshots_against_si(
    axes: Axes, runs: list[tuple[np.ndarray, np.ndarray]], line_colour: object, label: str
) -> None:
    """Every snapshot of the runs of one condition a point; a thin line joins each run's
    snapshots in training order, from a ring at its first."""
    for si, accuracy in runs:
        axes.plot(si, accuracy, color=line_colour, alpha=0.35, linewidth=0.8)
        axes.plot(si[:1], accuracy[:1], "o", color=line_colour, fillstyle="none", markersize=7)
    every_si, every_accuracy = (np.concatenate(column) for column in zip(*runs, strict=True))
    axes.scatter(every_si, every_accuracy, s=14, color=line_colour, label=label)


def selectivity_vs_robustness(groups: Sequence[Group], style: Style) -> Figure | None:
    """Mean corruption accuracy and the headline attack's accuracy against the network-mean SI
    of the same snapshot, over every analysed snapshot of every run, one colour per condition
    (Leavitt & Morcos' robustness paper, ../shared/reference/class-selectivity.md §7)."""
    attack = headline_attack(groups)
    shown = [CORRUPTED, *([Panel(attack.title, attack.curve, "accuracy")] if attack else [])]
    points = [
        [[p for run in g.runs if (p := against_si(run, panel.curve_of(run)))] for g in groups]
        for panel in shown
    ]
    if not any(points[0]):
        return None
    axes_list = panels(len(shown), style)
    for axes, panel, per_group in zip(axes_list, shown, points, strict=True):
        if axes is not axes_list[0]:
            axes.sharey(axes_list[0])
        for n, (group, runs) in enumerate(zip(groups, per_group, strict=True)):
            if runs:
                label = legend_label(group, len(runs))
                snapshots_against_si(axes, runs, colour(n, len(groups)), label)
        set_title(axes, panel.title, style)
        axes.set_xlabel("network-mean SI")
        axes.set_ylabel("top-1 accuracy")
    return with_legend_below(axes_list, style)


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: its file name, its page section and caption, how to draw it,
    and how it shows the spread over seeds (for the caption: spread_caption; None where every
    seed is drawn apart)."""

    name: str
    section: str
    caption: str
    draw: Callable[[Sequence[Group], Style], Figure | None]
    spread: str | None = "Shaded"


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
    FigureSpec(
        "robustness",
        "Robustness",
        "Top-1 accuracy over training on clean evaluation images, under corruptions (mean over "
        "every corruption and severity measured) and under each attack at the largest radius "
        "measured (attacks in pixel space on the first analysis.robustness.attack_images "
        "images).",
        robustness_over_training,
    ),
    FigureSpec(
        "representation_change",
        "Robustness",
        "Participation ratio (effective number of dimensions) of the change that a perturbation "
        "(analysis.robustness.change) causes in the output of each stage's last block, over "
        "training.",
        representation_change,
    ),
    FigureSpec(
        "selectivity_vs_robustness",
        "Robustness",
        "Mean corruption accuracy and adversarial accuracy (PGD, or the first attack measured, "
        "at its largest radius) against the network-mean class selectivity index of the same "
        "snapshot. Each point is one snapshot of one run (every seed its own points), coloured "
        "by condition; a thin line joins a run's snapshots in training order, from a ring at "
        "its first.",
        selectivity_vs_robustness,
        None,
    ),
)
