"""task=report: figures and one HTML page of one run, several, or a sweep (report/build.py)."""

from __future__ import annotations

from vestige.config import RunConfig
from vestige.report.build import build_report


def report(cfg: RunConfig) -> None:
    print(f"report: {build_report(cfg)}")
