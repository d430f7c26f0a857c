"""What a report reads from one run directory: its settings, metrics and analysis tables.

Each table is read by its own small function and is `None` (or empty) when the run does not have
it, so a report shows only the sections whose data exists. Tables are CSV files read into
columns by name (`Table`): numbers as float arrays, anything else as strings.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vestige.analysis.ablation import results_folder
from vestige.analysis.attention import attention_folder
from vestige.analysis.batchnorm import bn_label
from vestige.analysis.linearity.records import linearity_folder
from vestige.analysis.robustness import robustness_folder
from vestige.config import LINEARITY_PROBES, AblationConfig, AnalysisConfig, RobustnessConfig
from vestige.results import Run
from vestige.selectivity.store import SelectivityStore

Table = dict[str, np.ndarray]
# the tables analysis=robustness leaves in its folder (analysis/robustness/, docs/outputs.md)
ROBUSTNESS_TABLES = ("summary", "corruptions", "adversarial", "change")


@dataclass
class RunRecord:
    """One run as a report sees it."""

    path: Path
    config: DictConfig  # the resolved config, typed (results.Run.config)
    config_text: str  # config.yaml as written by the run
    identity: dict[str, Any]  # run.json "identity": the settings that differ from the defaults
    seed: int
    status: str
    metrics: list[dict[str, Any]]
    selectivity: Table | None = None  # summary.csv: step, epoch, stage, si
    # the same with re-estimated BatchNorm statistics (analysis.bn_stats=recompute)
    selectivity_recomputed: Table | None = None
    gates: Table | None = None  # attention/gates.csv: step, epoch, layer, head, gate
    nonlocality: Table | None = None  # attention/nonlocality.csv: ..., nonlocality
    ablation: Table | None = None  # ablation/ablation.csv: step, epoch, stage, block, ...
    ablation_auc: Table | None = None  # ablation/auc.csv: step, epoch, stage, ..., auc_top1
    linearity: dict[str, Table] = field(default_factory=dict)  # linearity/<probe>.csv
    # robustness/<table>.csv by ROBUSTNESS_TABLES name; a table the run lacks is absent
    robustness: dict[str, Table] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def read_table(path: Path) -> Table | None:
    """A CSV file's columns by header name; None when the file is absent or has no rows."""
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    return {key: _column([row[key] for row in rows]) for key in rows[0]}


def _column(values: list[str]) -> np.ndarray:
    try:
        return np.array([float(v) if v != "" else np.nan for v in values])
    except ValueError:
        return np.array(values)


def selectivity_summary(run: Run, bn_stats: str = "running") -> Table | None:
    """Mean SI per snapshot and stage, as measured with the run's own selectivity settings
    (and the snapshots' own BatchNorm statistics, or re-estimated ones)."""
    store = SelectivityStore(run.path, run.config.selectivity, bn_stats)
    return read_table(store.folder / "summary.csv")


def attention_table(run: Run, name: str, class_token: str = "renormalise") -> Table | None:
    """`gates` or `nonlocality` (analysis=attention): step, epoch, layer, head, value."""
    return read_table(attention_folder(run.path, class_token) / f"{name}.csv")


def ablation_tables(
    run: Run, settings: AblationConfig | None = None, bn_stats: str = "running"
) -> tuple[Table | None, Table | None]:
    """(ablation.csv, auc.csv) of analysis=ablation with these settings (None: the defaults;
    each set of settings writes to its own folder, see analysis/ablation/): columns in
    docs/outputs.md."""
    settings = settings or OmegaConf.structured(AblationConfig)
    folder = results_folder(run.path, settings, bn_stats)
    return read_table(folder / "ablation.csv"), read_table(folder / "auc.csv")


def linearity_tables(run: Run, bn_stats: str = "running") -> dict[str, Table]:
    """The table of each linear-regime probe the run has (analysis/linearity/), by probe."""
    folder = linearity_folder(run.path, bn_stats)
    tables = {p: read_table(folder / f"{p}.csv") for p in LINEARITY_PROBES}
    return {probe: table for probe, table in tables.items() if table is not None}


def robustness_tables(
    run: Run, settings: RobustnessConfig | None = None, bn_stats: str = "running"
) -> dict[str, Table]:
    """The tables of analysis=robustness measured with these settings (None: the defaults;
    other settings store apart, see analysis/robustness/) that the run has, by name."""
    settings = settings or OmegaConf.structured(RobustnessConfig)
    folder = robustness_folder(run.path, settings, bn_stats)
    tables = {name: read_table(folder / f"{name}.csv") for name in ROBUSTNESS_TABLES}
    return {name: table for name, table in tables.items() if table is not None}


def load_record(path: Path, analysis: AnalysisConfig | None = None) -> RunRecord:
    """One run as the report sees it. The analyses' tables are those measured with the
    command's `analysis` settings (ablation and robustness settings, BatchNorm statistics, class
    token), the defaults' when None; selectivity comes with stored and with re-estimated
    statistics."""
    run = Run(path)
    info = run.info
    analysis = analysis or OmegaConf.structured(AnalysisConfig)
    bn = bn_label(analysis)
    recomputed = bn_label(OmegaConf.merge(analysis, {"bn_stats": "recompute"}))
    ablation, ablation_auc = ablation_tables(run, analysis.ablation, bn)
    return RunRecord(
        path=run.path,
        config=run.config,
        config_text=run.dir.config.read_text(),
        identity=info.get("identity", {"run": run.path.name}),
        seed=int(info.get("seed", run.config.seed)),
        status=info.get("status", "unknown"),
        metrics=run.metrics,
        selectivity=selectivity_summary(run),
        selectivity_recomputed=selectivity_summary(run, recomputed),
        gates=attention_table(run, "gates", analysis.attention.class_token),
        nonlocality=attention_table(run, "nonlocality", analysis.attention.class_token),
        ablation=ablation,
        ablation_auc=ablation_auc,
        linearity=linearity_tables(run, bn),
        robustness=robustness_tables(run, analysis.robustness, bn),
    )


@dataclass(frozen=True)
class Curve:
    """One run's values of one quantity against x (usually the epoch), sorted by x."""

    x: np.ndarray
    y: np.ndarray


def table_curve(table: Table | None, value: str, x: str = "epoch", **where: Any) -> Curve | None:
    """`value` against `x` over the rows whose columns equal `where`; rows sharing an x (e.g. the
    heads of one layer) are averaged. None when no row matches."""
    if table is None or value not in table or x not in table:
        return None
    keep = np.ones(len(table[x]), dtype=bool)
    for column, wanted in where.items():
        if column not in table:
            return None
        keep &= table[column] == wanted
    keep &= np.isfinite(table[value].astype(float))
    if not keep.any():
        return None
    xs, inverse = np.unique(table[x][keep].astype(float), return_inverse=True)
    sums = np.bincount(inverse, weights=table[value][keep].astype(float))
    return Curve(xs, sums / np.bincount(inverse))


def metric_curve(record: RunRecord, key: str, x: str = "epoch") -> Curve | None:
    """A `metrics.jsonl` key against the epoch, or the step (rows without it, e.g. train loss at
    step 0, are left out)."""
    rows = [row for row in record.metrics if row.get(key) is not None]
    if not rows:
        return None
    return Curve(np.array([row[x] for row in rows]), np.array([row[key] for row in rows]))


def network_si(record: RunRecord) -> Curve | None:
    """The network-mean SI against the step: analysis=selectivity's stage `all` where the run
    has it, else the `si/mean` its training logged at each evaluation (the same mean of the
    stage means, selectivity/index.py)."""
    return table_curve(record.selectivity, "si", x="step", stage="all") or metric_curve(
        record, "si/mean", x="step"
    )


def robustness_si(record: RunRecord) -> Curve | None:
    """The network-mean SI at each snapshot analysis=robustness measured, against its epoch as
    the robustness tables write it (snapshots are matched by step: epochs are rounded in CSV).
    None when no such snapshot has an SI."""
    summary, si = record.robustness.get("summary"), network_si(record)
    if summary is None or si is None:
        return None
    _, rows, points = np.intersect1d(summary["step"], si.x, return_indices=True)
    return Curve(summary["epoch"][rows], si.y[points]) if len(rows) else None
