"""task=report: figures and one HTML page of one run, several, or a sweep (report/build.py)."""

from __future__ import annotations

from vestige.config import RunConfig
from vestige.report.build import build_report


def report(cfg: RunConfig) -> None:
    """Figures and one HTML page of a run (run=<dir>), several (runs=[...]) or a sweep (sweep=)."""
    print(f"report: {build_report(cfg)}")
