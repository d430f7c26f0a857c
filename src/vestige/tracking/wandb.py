"""Weights & Biases: one W&B run per run directory (its id kept across resumes), offline by
default (`wandb sync <dir>/wandb/offline-run-*` uploads it), a sweep's points in one group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vestige.config import WandbConfig
from vestige.tracking.base import TrackedRun

WANDB_MODES = ("offline", "online")
# the x axis of what is measured later at a snapshot (an analysis's values, a report's figures):
# W&B's own step only increases, and training has gone past those steps
SNAPSHOT_STEP = "snapshot_step"


class WandbTracker:
    """W&B takes steps in increasing order only, so steps already logged are skipped, and what
    is measured later is plotted against `SNAPSHOT_STEP` instead (`define_metric`)."""

    overwrites = False

    def __init__(self, cfg: WandbConfig, run: TrackedRun) -> None:
        self.cfg = cfg
        self.folder = (Path(cfg.dir).expanduser() if cfg.dir else run.outputs).resolve()
        self.run = run
        self.wandb_run: Any = None
        self.defined: set[str] = set()  # the keys plotted against SNAPSHOT_STEP

    def target(self) -> str:
        return f"{self.cfg.mode}:{self.cfg.entity or ''}/{self.cfg.project}:{self.folder}"

    def start(self, run_id: str | None, first_step: int | None) -> str:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            **self.run.config,
            "vestige": {
                "run_dir": str(self.run.directory),
                "run_hash": self.run.run_hash,
                "identity": self.run.identity,
            },
        }
        self.wandb_run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            mode=self.cfg.mode,
            dir=str(self.folder),
            id=run_id,  # None: W&B names a new run
            resume="allow",
            name=self.run.name,
            group=self.run.sweep,
            tags=[f"{key}={value}"[:64] for key, value in self.run.varying.items()],
            job_type="train",
            config=config,
            # vestige prints its own progress and records its own versions
            settings=wandb.Settings(console="off", disable_git=True, silent=True),
        )
        return self.wandb_run.id

    def log_row(self, step: int, values: dict[str, float]) -> None:
        self.wandb_run.log(values, step=step)

    def log_values(self, step: int, values: dict[str, Any]) -> None:
        for key in values.keys() - self.defined:
            self.wandb_run.define_metric(key, step_metric=SNAPSHOT_STEP)
            self.defined.add(key)
        self.wandb_run.log({SNAPSHOT_STEP: step, **values})

    def log_figure(self, step: int, name: str, png: Path) -> None:
        import wandb

        self.log_values(step, {name: wandb.Image(str(png))})

    def finish(self, status: str) -> None:
        if status == "killed":
            self.wandb_run.mark_preempting()
        self.wandb_run.finish(exit_code=0 if status == "finished" else 1)
