"""task=report: figures and one HTML page of one run, several, or a sweep (report/build.py);
the figures also go to the runs' experiment trackers (tasks/trackers.py)."""

from __future__ import annotations

from vestige.config import RunConfig
from vestige.report.build import build_report
from vestige.report.inputs import report_runs
from vestige.tasks.trackers import log_report


def report(cfg: RunConfig) -> None:
    """Figures and one HTML page of a run (run=<dir>), several (runs=[...]) or a sweep (sweep=)."""
    page = build_report(cfg)
    print(f"report: {page}")
    log_report(cfg, report_runs(cfg), page)
