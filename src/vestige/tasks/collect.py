"""task=collect: one table of a sweep's points (report/collect.py)."""

from __future__ import annotations

from pathlib import Path

from vestige.config import RunConfig
from vestige.io import short_hash
from vestige.report.collect import collect as collect_sweep
from vestige.rundir import SweepDir


def collect(cfg: RunConfig) -> None:
    """One table of a sweep's points (sweep=<folder>): what each sets, its status and metrics.

    A sweep's tables go into its folder; those of any other folder of runs (outputs/runs)
    into `<outputs>/sweeps/folder-<hash of its path>`, so run folders hold only runs."""
    folder = Path(cfg.sweep).expanduser().resolve()
    tables = None
    if not SweepDir(folder).record.exists():
        name = f"folder-{short_hash(str(folder))}"
        tables = Path(cfg.outputs).expanduser().resolve() / "sweeps" / name
    collect_sweep(folder, cfg.trainer.progress, tables)
