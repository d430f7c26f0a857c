"""MLflow: one MLflow run per run directory, in the sweep's experiment for a point of a sweep,
with the resolved config (flattened) as its params and the sweep's varying settings as tags."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from vestige.config import MLflowConfig, flatten
from vestige.tracking.base import TrackedRun

MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
BATCH = 100  # MLflow takes at most 100 params, tags or (here) metrics per request
PARAM_CHARACTERS = 6000  # and params of at most this many characters


def default_uri(outputs: Path) -> str:
    """`$MLFLOW_TRACKING_URI`, else a local SQLite store (MLflow's file store is retired)."""
    store = outputs.resolve() / "mlflow" / "mlflow.db"
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store}"


class MLflowTracker:
    """MLflow keeps every value logged at a step, so steps already logged are skipped."""

    overwrites = False

    def __init__(self, cfg: MLflowConfig, run: TrackedRun) -> None:
        self.uri = cfg.tracking_uri or default_uri(run.outputs)
        self.experiment = cfg.experiment or run.sweep or "vestige"
        self.run = run
        self.client: Any = None
        self.run_id = ""

    def target(self) -> str:
        return self.uri

    def start(self, run_id: str | None, first_step: int | None) -> str:
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        found = self.client.get_experiment_by_name(self.experiment)
        experiment = found.experiment_id if found else self.create_experiment()
        tags = {
            "vestige.run_dir": str(self.run.directory),
            "vestige.run_hash": self.run.run_hash,
            **({"vestige.sweep": self.run.sweep} if self.run.sweep else {}),
            **self.run.varying,
        }
        created = self.client.create_run(experiment, run_name=self.run.name, tags=tags)
        self.run_id = created.info.run_id
        self.log_params(flatten(self.run.config))
        return self.run_id

    def create_experiment(self) -> str:
        """A new experiment, its artifacts beside the local store (not in the working folder)."""
        local = self.uri.startswith("sqlite:///")
        artifacts = Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts"
        location = (artifacts / self.experiment).as_uri() if local else None
        return self.client.create_experiment(self.experiment, artifact_location=location)

    def log_params(self, settings: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:PARAM_CHARACTERS]) for k, v in settings.items()]
        for first in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[first : first + BATCH])

    def log_row(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        for first in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[first : first + BATCH])

    log_values = log_row  # metrics of any step, in any order

    def log_figure(self, step: int, name: str, png: Path) -> None:
        """The artifact `<name>.png` (the file is named as the name ends); logged again, it
        replaces the earlier one."""
        folder = name.rpartition("/")[0]
        self.client.log_artifact(self.run_id, str(png), artifact_path=folder or None)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, MLFLOW_STATUS[status])
