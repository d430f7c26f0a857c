"""The tasks, the top layer: each wires the owners below it into one job, and checks its config
first (tasks/checks.py). `vestige-run task=<name>` runs one (run.py, the front door)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vestige.tasks.analyze import analyze
from vestige.tasks.collect import collect
from vestige.tasks.listing import list_runs
from vestige.tasks.report import report
from vestige.tasks.train import train

TASKS: dict[str, Callable[[Any], None]] = {
    "train": train,
    "analyze": analyze,
    "collect": collect,
    "report": report,
    "list": list_runs,
}
