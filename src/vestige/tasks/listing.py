"""task=list: the runs and sweeps of a folder, and how far each got (report/listing.py)."""

from __future__ import annotations

from vestige.config import RunConfig
from vestige.report.listing import listed_folder, show_listing


def list_runs(cfg: RunConfig) -> None:
    """The runs and sweeps under outputs/ (or sweep=<folder>): status, progress, accuracy, SI."""
    show_listing(listed_folder(cfg), cfg.trainer.progress)
