"""The report's tables: one row per condition (group of seeds), numbers as mean +- two standard
errors over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

from vestige.report.figures import CONDITION_STYLE, ablation_auc_curve, distinct
from vestige.report.grouping import Group, group_band, mean_and_spread
from vestige.report.page import PageTable
from vestige.report.tables import metric_curve


def mean_text(values: Sequence[float]) -> str:
    """`0.734 ± 0.012` (two standard errors over seeds), `0.734` for one seed, `-` for none."""
    if not values:
        return "-"
    mean, spread = mean_and_spread(values)
    return f"{mean:.4g}" if math.isnan(spread) else f"{mean:.4g} ± {spread:.2g}"


def final_values(group: Group, key: str) -> list[float]:
    """Each seed's last value of a metrics.jsonl key."""
    return [float(c.y[-1]) for run in group.runs if (c := metric_curve(run, key)) is not None]


def runs_table(groups: Sequence[Group]) -> PageTable:
    """One row per condition: its name in words and, for several conditions, the settings
    that tell them apart as written on the command line."""
    named = any(group.overrides for group in groups)
    rows = [
        [
            group.name,
            *([group.overrides] if named else []),
            ", ".join(str(seed) for seed in group.seeds),
            ", ".join(sorted({run.status for run in group.runs})),
            mean_text(final_values(group, "epoch")),
            mean_text(final_values(group, "eval_acc")),
            mean_text(final_values(group, "si/mean")),
            " ".join(run.name for run in group.runs),
        ]
        for group in groups
    ]
    return PageTable(
        "Runs",
        "One row per condition; numbers at the last evaluation, mean ± 2 SE over seeds.",
        [
            "condition",
            *(["settings"] if named else []),
            "seeds",
            "status",
            "epochs",
            "eval acc",
            "SI mean",
            "runs",
        ],  # fmt: skip
        rows,
    )


def ablation_auc_table(groups: Sequence[Group]) -> PageTable | None:
    """AUC of the normalised ablation curve at the first and last ablated snapshot."""
    stages = distinct([run.ablation_auc for g in groups for run in g.runs], "stage")
    rows = []
    for group in groups:
        for stage in stages:
            for condition in CONDITION_STYLE:
                band = group_band(
                    group, lambda run, s=stage, c=condition: ablation_auc_curve(run, s, c)
                )
                if band is None:
                    continue
                ends = [f"{band.mean[i]:.4f} (epoch {band.x[i]:.3g})" for i in (0, len(band.x) - 1)]
                rows.append([group.name, str(stage), condition, *ends])
    if not rows:
        return None
    return PageTable(
        "Ablation",
        "Area under the normalised ablation curve (trapezoid over k/C), mean over seeds.",
        ["condition", "stage", "ablated units", "first snapshot", "last snapshot"],
        rows,
    )
