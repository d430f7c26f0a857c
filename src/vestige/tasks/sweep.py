"""A sweep (`vestige-run -m ...`): its record of points, and its table at the end.

A sweep's points are ordinary runs: each lands in `outputs/runs/<name>`, where a single run of
its config would, so re-submitting a sweep skips the points that completed and resumes the rest.
The sweep itself gets `outputs/sweeps/sweep-<hash>`, named by its command-line overrides (the
same sweep, submitted again, finds the same folder; its files: rundir.SweepDir).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vestige.io import atomic_write_json
from vestige.report.collect import collect
from vestige.rundir import SweepDir, run_directory
from vestige.tasks.compose import compose_point, expand_sweep, with_preset_sweep


def sweep_points(overrides: list[str]) -> list[dict[str, Any]]:
    """Each point of the sweep, however many: its overrides and the run directory it trains in."""
    return [
        {"overrides": point, "run": run_directory(compose_point(point), True)}
        for point in expand_sweep(overrides)
    ]


def sweep_preview(overrides: list[str]) -> str:
    """What `vestige-run -m ... --cfg job` prints instead of a config: the sweep's points and
    where each would train."""
    points = expand_sweep(overrides)
    lines = [
        f"{len(points)} point(s), each an ordinary run (hydra/launcher=slurm submits them as one "
        f"array job of {len(points)} task(s)):"
    ]
    lines += [f"  {' '.join(p)}  ->  {run_directory(compose_point(p))}" for p in points]
    return "\n".join(lines)


def write_record(folder: Path, overrides: list[str]) -> None:
    """Write (or refresh) the sweep's record; earlier submissions of the same sweep are kept."""
    path = SweepDir(folder).record
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


class SweepRecord(Callback):
    """Hydra callback: record the sweep's points before launch; table them after, when the
    launcher waited for the jobs (a local sweep, or SLURM without `wait=false`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        write_record(folder, with_preset_sweep(overrides, config.hydra.sweeper.get("params")))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.launcher.get("wait", True):
            collect(Path(str(config.hydra.sweep.dir)), config.get("trainer", {}).get("progress"))
