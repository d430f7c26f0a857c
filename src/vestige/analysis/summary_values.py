"""What the experiment trackers get of an analysis (`logger=`, tasks/trackers.py): the numbers
of its per-run tables, each as (step, name, value) at its snapshot's step.

A name is the results folder's (`ablation`, or `ablation-<hash>` for other settings, so results
measured otherwise never share a name), then the table's group if it has one (a linearity
probe), the value's column, and the values of the columns that say which row it is, e.g.
`ablation/auc_top1/layer2/selective`, `linearity/linearized/agreement`, `attention/gate/3`,
`robustness/clean_accuracy`, `robustness/participation_ratio/layer4`. A row value `all` (the
aggregate over that column: a stage-level ablation, the network mean of `selectivity/si`) is
left out of the name. Rows that share a step and name are averaged: attention's heads of a
layer. A character MLflow does not take in a name becomes `_` (`robustness/pgd_0.0156863` for
the column `pgd@0.0156863`), so each tracker shows the same names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from vestige.config import LINEARITY_PROBES
from vestige.io import read_rows

# columns that say where a row is, never a value of it
BOOKKEEPING = ("step", "epoch", "base_step", "base_epoch", "images", "draws")
REFUSED = re.compile(r"[^\w./ -]")  # what MLflow does not take in a metric name


@dataclass(frozen=True)
class SummaryTable:
    """A per-run table of an analysis, in its results folder, and which of its columns go to
    the trackers: `values` (empty: every column but the bookkeeping and `keys`), each named by
    the row's `keys`."""

    file: str
    values: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    group: str = ""


SUMMARY_TABLES: dict[str, tuple[SummaryTable, ...]] = {
    "selectivity": (SummaryTable("summary.csv", ("si",), ("stage",)),),
    "ablation": (
        SummaryTable("auc.csv", ("auc_top1", "auc_top5"), ("stage", "block", "condition")),
    ),
    "linearity": tuple(SummaryTable(f"{p}.csv", group=p) for p in LINEARITY_PROBES),
    "attention": (
        SummaryTable("gates.csv", ("gate",), ("layer",)),
        SummaryTable("nonlocality.csv", ("nonlocality",), ("layer",)),
    ),
    "robustness": (
        SummaryTable("summary.csv"),
        SummaryTable("change.csv", ("participation_ratio",), ("stage",)),
    ),
}


def summary_values(analysis: str, folder: Path) -> list[tuple[int, str, float]]:
    """(step, name, value) of every number analysis `analysis` keeps in its per-run tables in
    `folder`, in step order; a value not measured (empty, NaN) is left out."""
    sums: dict[tuple[int, str], list[float]] = {}
    for table in SUMMARY_TABLES[analysis]:
        for row in read_rows(folder / table.file):
            columns = table.values or [c for c in row if c not in (*BOOKKEEPING, *table.keys)]
            where = [row[key] for key in table.keys if row[key] != "all"]
            for column in columns:
                value = float(row[column]) if row[column] else math.nan
                if math.isfinite(value):
                    parts = [folder.name, table.group, column, *where]
                    name = REFUSED.sub("_", "/".join(part for part in parts if part))
                    sums.setdefault((int(row["step"]), name), []).append(value)
    return [(step, name, sum(v) / len(v)) for (step, name), v in sorted(sums.items())]
