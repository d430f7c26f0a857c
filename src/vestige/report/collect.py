"""`vestige-run task=collect sweep=<dir>`: one table for a sweep, one row per point.

Each row shows the settings that vary across the sweep, the run's status and its final metrics
(accuracy, loss, mean class selectivity at the end and at its peak). Points that differ only in
`seed` form a group; the second table gives each group's mean and the half-width of its 95%
confidence interval (Student's t over seeds). Both tables are written to the sweep folder as
`collect.csv` / `collect_groups.csv` and `collect.md`, and shown on screen. The points are read
by `vestige.results.Sweep`, which notebooks load with `vestige.load_sweep`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vestige.config import RunConfig
from vestige.errors import ConfigError
from vestige.io import atomic_write_text, table_text
from vestige.report.grouping import mean_and_spread
from vestige.results import Point, Sweep
from vestige.rundir import SweepDir

GROUPED = ("eval_acc", "eval_loss", "si/mean", "si/mean peak")
# Student's t, two-sided 95%, for 1..30 degrees of freedom; the normal 1.96 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t95(dof: int) -> float:
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


def mean_and_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None for a single value)."""
    mean, half_width = mean_and_spread(values, t95(max(len(values) - 1, 1)))
    return mean, None if math.isnan(half_width) else half_width


def group_rows(points: list[Point], keys: list[str]) -> list[dict[str, Any]]:
    """Mean and 95% interval over the seeds of each group (points equal but for `seed`)."""
    group_keys = [key for key in keys if key != "seed"]
    groups: dict[tuple, list[Point]] = {}
    for point in points:
        groups.setdefault(tuple(str(point.settings.get(k, "")) for k in group_keys), []).append(
            point
        )
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {key: members[0].settings.get(key, "") for key in group_keys}
        row["seeds"] = len(members)
        row["complete"] = sum(p.status == "complete" for p in members)
        for metric in GROUPED:
            measured = [p.metrics[metric] for p in members if p.metrics.get(metric) is not None]
            mean, interval = mean_and_interval(measured) if measured else (None, None)
            row[metric] = mean
            row[f"{metric} ±95%"] = interval
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def as_markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def as_rich(rows: list[dict[str, Any]], title: str, widest: int = 40) -> Table:
    """The table on screen: a cell wider than `widest` (a list setting) is cut, with `…`; the
    files keep it whole."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("status", "run") else "right")
    for row in rows:
        cells = (_cell(value) for value in row.values())
        table.add_row(*(c if len(c) <= widest else c[: widest - 1] + "…" for c in cells))
    return table


def collect(
    folder: Path, progress: str | None = "auto", tables: Path | None = None
) -> list[dict[str, Any]]:
    """Write the tables of the sweep (or folder of runs) in `folder` into `tables` (default: the
    folder itself) and show them; returns the per-point rows."""
    sweep = Sweep(folder)
    if not sweep.points:
        print(f"collect: no runs in {folder} yet")
        return []
    rows, groups = sweep.rows(), group_rows(sweep.points, sweep.varying)
    written = SweepDir(tables or folder)
    atomic_write_text(written.collect_csv, table_text(rows))
    atomic_write_text(written.collect_groups_csv, table_text(groups))
    failed = [
        f"- {p.run.name}: {sweep.failures[p.run]['error']}\n"
        for p in sweep.points
        if p.status == "failed"
    ]
    atomic_write_text(
        written.collect_md,
        f"# {folder.name}\n\n## Runs\n\n{as_markdown(rows)}\n"
        f"## Means over seeds (±: half-width of the 95% t-interval)\n\n{as_markdown(groups)}"
        + (f"\n## Failed points\n\n{''.join(failed)}" if failed else ""),
    )
    if progress != "none":
        console = Console(highlight=False, width=max(Console().width, 160))
        console.print(as_rich(rows, f"{folder.name}: {len(rows)} runs"))
        console.print(as_rich(groups, "means over seeds (±95%)"))
        print(f"tables: {written.collect_csv}, {written.collect_md}")
    return rows


def check_collect(cfg: RunConfig) -> None:
    """task=collect needs a sweep folder (or any folder holding run directories)."""
    if cfg.sweep is None or not Path(cfg.sweep).expanduser().is_dir():
        raise ConfigError(
            f"sweep={cfg.sweep!r} is invalid: task=collect needs sweep=<a sweep directory, "
            "e.g. outputs/sweeps/<name>, or any folder holding run directories>"
        )
