"""task=collect: one table of a sweep's points (report/collect.py)."""

from __future__ import annotations

from pathlib import Path

from vestige.config import RunConfig
from vestige.report.collect import collect as collect_sweep


def collect(cfg: RunConfig) -> None:
    collect_sweep(Path(cfg.sweep).expanduser().resolve(), cfg.trainer.progress)
