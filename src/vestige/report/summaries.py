"""The report's tables: one row per condition (group of seeds), numbers as mean +- two standard
errors over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vestige.report.figures import (
    CLEAN,
    CONDITION_STYLE,
    CORRUPTED,
    Panel,
    ablation_auc_curve,
    distinct,
    headline_attack,
)
from vestige.report.grouping import Band, Group, group_band, mean_and_spread
from vestige.report.page import PageTable
from vestige.report.tables import metric_curve, robustness_si


def estimate_text(mean: float, spread: float) -> str:
    """`0.734 ± 0.012` (two standard errors over seeds), `0.734` where the spread is unknown
    (one seed)."""
    return f"{mean:.4g}" if math.isnan(spread) else f"{mean:.4g} ± {spread:.2g}"


def mean_text(values: Sequence[float]) -> str:
    """The estimate_text of seeds' values, `-` for none."""
    return estimate_text(*mean_and_spread(values)) if values else "-"


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


def at_epoch_text(band: Band, epoch: float | None) -> str:
    """The band's estimate at an epoch, and the epoch; `-` where it has none there."""
    where = np.flatnonzero(band.x == epoch)
    if not where.size:
        return "-"
    i = where[0]
    return f"{estimate_text(band.mean[i], band.spread[i])} (epoch {epoch:.3g})"


def robustness_table(groups: Sequence[Group]) -> PageTable | None:
    """Per condition, the network-mean SI and the clean, mean corruption and headline
    adversarial accuracy at the first snapshot analysis=robustness measured, at the one where
    the condition's mean SI peaks, and at the last: does robustness follow selectivity's rise
    and fall (docs/science.md §7)?"""
    attack = headline_attack(groups)
    shown = [
        Panel("network-mean SI", robustness_si, "si"),
        CLEAN,
        CORRUPTED,
        *([Panel(attack.title, attack.curve, "accuracy")] if attack else []),
    ]
    rows = []
    for group in groups:
        si = group_band(group, robustness_si)
        peak = None if si is None else float(si.x[np.argmax(si.mean)])
        for panel in shown:
            band = group_band(group, panel.curve_of)
            if band is not None:
                epochs = (band.x[0], peak, band.x[-1])
                rows.append([group.name, panel.title, *(at_epoch_text(band, e) for e in epochs)])
    if not rows:
        return None
    return PageTable(
        "Robustness",
        "Per condition, at the first snapshot analysed for robustness, at the one where the "
        "network-mean SI (mean over seeds) peaks, and at the last: mean ± 2 SE over seeds "
        "(one seed: its value).",
        ["condition", "quantity", "first snapshot", "peak SI snapshot", "last snapshot"],
        rows,
    )
