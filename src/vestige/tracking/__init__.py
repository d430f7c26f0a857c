"""Experiment trackers that every metrics row of a run also goes to: TensorBoard, MLflow and
Weights & Biases (`logger=` in conf/logger/), each an optional extra imported only when chosen.

`check` turns a chosen tracker that is not installed into one line naming the pip command,
before any work; `build_tracking` gives the observer that the training wires in (rank 0 only),
and what task=analyze and task=report add to a run's tracker runs through.
"""

from __future__ import annotations

import importlib.util

from vestige.config import TRACKERS, LoggerConfig
from vestige.errors import ConfigError, invalid
from vestige.tracking.base import STATUSES, TrackedRun, Tracker, Tracking, recorded_sweep
from vestige.tracking.mlflow import MLflowTracker
from vestige.tracking.tensorboard import TensorBoardTracker
from vestige.tracking.wandb import WANDB_MODES, WandbTracker

__all__ = [
    "STATUSES",
    "TrackedRun",
    "Tracking",
    "build_tracking",
    "check",
    "chosen",
    "missing",
    "recorded_sweep",
]

# the modules each tracker imports: what its extra (pyproject.toml) installs
NEEDS = {
    "tensorboard": ("tensorboard",),
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),
    "wandb": ("wandb",),
}

BACK_ENDS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


def chosen(cfg: LoggerConfig) -> list[str]:
    return [name for name in TRACKERS if getattr(cfg, name).enabled]


def missing(name: str) -> list[str]:
    """The modules tracker `name` needs that are not installed."""
    return [module for module in NEEDS[name] if importlib.util.find_spec(module) is None]


def check(cfg: LoggerConfig) -> None:
    """Each chosen tracker is installed, and W&B's mode is one it has."""
    for name in chosen(cfg):
        if missing(name):
            raise ConfigError(
                f"logger={name} needs {', '.join(missing(name))}, which is not installed: "
                f"pip install 'vestige[{name}]' (or choose another logger)"
            )
    if cfg.wandb.enabled and cfg.wandb.mode not in WANDB_MODES:
        raise invalid("logger.wandb.mode", cfg.wandb.mode, f"choose {' or '.join(WANDB_MODES)}")


def build_tracking(
    cfg: LoggerConfig, run: TrackedRun, names: list[str] | None = None
) -> Tracking | None:
    """The trackers `names` (by default the chosen ones), or None when there are none."""
    trackers: dict[str, Tracker] = {
        name: BACK_ENDS[name](getattr(cfg, name), run)
        for name in (chosen(cfg) if names is None else names)
    }
    return Tracking(trackers, run) if trackers else None
