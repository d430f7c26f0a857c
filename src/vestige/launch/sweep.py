"""A sweep (`vestige-run -m ...`): its folder, its record of points, and its table at the end.

A sweep's points are ordinary runs: each lands in `outputs/runs/<name>`, where a single run of
its config would, so re-submitting a sweep skips the points that completed and resumes the rest.
The sweep itself gets `outputs/sweeps/sweep-<hash>`, named by its command-line overrides (the
same sweep, submitted again, finds the same folder), holding:

    sweep.json      the command, and each point's overrides and run directory
    .submitit/      SLURM scripts and logs (hydra/launcher=slurm)
    collect.csv/md  the table of `task=collect` (written after a local or waiting sweep)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vestige.rundir import atomic_write_json, run_directory

RECORD = "sweep.json"


def with_preset_sweep(command_line: list[str], params: Mapping[str, Any] | None) -> list[str]:
    """The overrides a sweep runs: an experiment preset's `hydra.sweeper.params`, then the
    command line's, which wins for a key both set (as Hydra's basic sweeper combines them)."""
    combined = {key: f"{key}={value}" for key, value in (params or {}).items()}
    for override in command_line:
        combined[override.partition("=")[0]] = override
    return list(combined.values())


def sweep_points(overrides: list[str]) -> list[dict[str, Any]]:
    """Each point of the sweep: its overrides and the run directory it trains in."""
    from vestige.preflight import compose_point, expand_sweep

    points = []
    for point in expand_sweep(overrides):
        points.append({"overrides": point, "run": run_directory(compose_point(point), True)})
    return points


def write_record(folder: Path, overrides: list[str]) -> None:
    """Write (or refresh) `sweep.json`; earlier submissions of the same sweep are kept."""
    path = folder / RECORD
    earlier = json.loads(path.read_text()) if path.exists() else {}
    record = {
        "overrides": overrides,
        "points": sweep_points(overrides),
        "submissions": [
            *earlier.get("submissions", []),
            {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv},
        ],
    }
    atomic_write_json(path, record)


def sweep_runs(folder: Path) -> list[tuple[Path, list[str] | None]]:
    """(run directory, overrides) of each point of a sweep folder, in the sweep's order.

    A folder without a record (outputs/runs, or a folder of run directories gathered by hand)
    gives every run directory below it, without overrides; a recorded point may not exist yet.
    """
    path = folder / RECORD
    if path.exists():
        return [(Path(p["run"]), p["overrides"]) for p in json.loads(path.read_text())["points"]]
    found = {config.parent for config in folder.glob("**/config.yaml")}
    nested = {run for run in found if any(parent in found for parent in run.parents)}
    return [(run, None) for run in sorted(found - nested)]


class SweepRecord(Callback):
    """Hydra callback: record the sweep's points before launch; table them after, when the
    launcher waited for the jobs (a local sweep, or SLURM without `wait=false`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        write_record(folder, with_preset_sweep(overrides, config.hydra.sweeper.get("params")))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.hydra.launcher.get("wait", True):
            return
        from vestige.report.collect import collect

        collect(Path(str(config.hydra.sweep.dir)), config.get("trainer", {}).get("progress"))
