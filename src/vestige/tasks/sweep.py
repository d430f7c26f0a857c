"""A sweep (`vestige-run -m ...`): its record of points, and its table at the end.

A sweep's points are ordinary runs: each lands in `outputs/runs/<name>`, where a single run of
its config would, so re-submitting a sweep skips the points that completed and resumes the rest.
The sweep itself gets `outputs/sweeps/sweep-<hash>`, named by its command-line overrides (the
same sweep, submitted again, finds the same folder; its files: rundir.SweepDir).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
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


# The sweep's folder, for its points: a job's own `hydra.sweep.dir` is named by the job's
# overrides, not the sweep's. Set when the sweep starts; local points and SLURM jobs (which
# inherit the submitting environment) read it.
SWEEP_FOLDER = "VESTIGE_SWEEP_FOLDER"


def sweep_of_this_job() -> SweepDir | None:
    """The sweep this job is a point of, or None for a single run (or outside Hydra: a
    benchmark, a notebook)."""
    folder = os.environ.get(SWEEP_FOLDER)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return SweepDir(folder) if multirun and folder else None


def this_point() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def record_failure(sweep: SweepDir, error: BaseException, recurs: bool) -> None:
    """Why this point failed, for the sweep's table and its resubmission; `recurs`: the same
    point would fail the same way again (a config error, a diverged training)."""
    atomic_write_json(
        sweep.failure(this_point()),
        {
            "error": str(error).strip().splitlines()[0] if str(error).strip() else repr(error),
            "kind": type(error).__name__,
            "recurs": recurs,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def skip_failed(sweep: SweepDir, retry: bool) -> bool:
    """A point that failed for a reason that recurs is skipped (with one line) unless retried;
    a point that runs again loses its old record."""
    failure = sweep.read_failure(this_point())
    if failure is None:
        return False
    if failure["recurs"] and not retry:
        print(
            f"skipping {this_point().name}: it failed before ({failure['error']}); "
            "retry_failed=true runs it again"
        )
        return True
    sweep.failure(this_point()).unlink(missing_ok=True)
    return False


def failed_points(folder: Path) -> list[Path]:
    sweep = SweepDir(folder)
    return [run for run, _ in sweep.runs() if sweep.read_failure(run) is not None]


class SweepRecord(Callback):
    """Hydra callback: record the sweep's points before launch; table them after, when the
    launcher waited for the jobs (a local sweep, or SLURM without `wait=false`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[SWEEP_FOLDER] = str(folder.resolve())
        overrides = list(config.hydra.overrides.task)
        write_record(folder, with_preset_sweep(overrides, config.hydra.sweeper.get("params")))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.hydra.launcher.get("wait", True):
            return
        folder = Path(str(config.hydra.sweep.dir))
        rows = collect(folder, config.get("trainer", {}).get("progress"))
        if failed := failed_points(folder):
            print(
                f"{len(failed)} of {len(rows)} points failed: their reasons are in "
                f"{SweepDir(folder).collect_md}",
                file=sys.stderr,
            )
            sys.exit(1)
