"""`load_run(path)`: a finished or running run, for notebooks, analyses and reports.

run = vestige.load_run("outputs/runs/resnet18-synthetic-e2e43e2ae9")
run.metrics[-1]["eval_acc"]
model = run.load_model(run.snapshots[0])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from vestige.config import RunConfig, SelectivityConfig, model_schema, register_configs
from vestige.errors import ConfigError, DamagedFile
from vestige.models import build_model
from vestige.rundir import RunDir, load_weights, read_manifest, read_metrics
from vestige.selectivity.store import SelectivityStore


@dataclass(frozen=True)
class Snapshot:
    step: int
    epoch: float
    path: Path


class Run:
    """The files of one run directory, read on demand."""

    def __init__(self, path: Path | str) -> None:
        self.dir = RunDir(Path(path).expanduser().resolve())
        if not self.dir.config.exists():
            raise ConfigError(
                f"{path} is not a vestige run directory (no config.yaml): "
                "pass a path under outputs/runs/"
            )
        try:
            self.config: DictConfig = _typed_config(OmegaConf.load(self.dir.config))
        except (OmegaConfBaseException, yaml.YAMLError) as err:
            first = str(err).strip().splitlines()[0]
            raise DamagedFile(f"{self.dir.config} is damaged ({first})") from None

    def __repr__(self) -> str:
        info = self.info
        return (
            f"Run({str(self.path)!r}, status={info.get('status')!r}, "
            f"steps={info.get('steps')}, snapshots={len(self.snapshots)})"
        )

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def info(self) -> dict[str, Any]:
        """run.json: status, identity, versions, seed, host, world size."""
        return self.dir.read_info()

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir.metrics)

    @property
    def snapshots(self) -> list[Snapshot]:
        return [
            Snapshot(s["step"], s["epoch"], self.path / s["path"]) for s in read_manifest(self.dir)
        ]

    def snapshot_at(self, step: int) -> Snapshot:
        """The snapshot taken at `step`; KeyError naming the steps there are if none was."""
        for snapshot in self.snapshots:
            if snapshot.step == step:
                return snapshot
        steps = ", ".join(str(s.step) for s in self.snapshots)
        raise KeyError(f"run {self.path.name} has no snapshot at step {step}: it has {steps}")

    def build_model(self) -> nn.Module:
        """The run's network, freshly initialised, shaped for the dataset it was trained on."""
        data = self.info.get("dataset") or self.config.data
        return build_model(
            self.config.model, data["num_classes"], data["channels"], data["image_size"]
        )

    def selectivity(self, bn_stats: str = "running", **settings: Any) -> dict[str, np.ndarray]:
        """Per-unit selectivity at every measured snapshot, one row per (snapshot, unit):
        columns step, epoch, layer, stage, block, channel, si, preferred_class. `settings` are
        `selectivity` config keys that differ from the defaults (e.g. units="all_relu");
        `bn_stats="recompute"`: measured with re-estimated BatchNorm statistics."""
        store = SelectivityStore(self.path, SelectivityConfig(**settings), bn_stats)
        if not store.steps():
            raise ConfigError(
                f"run {self.path.name} has no selectivity in {store.folder.name} yet: run "
                f"vestige-run task=analyze run={self.path} analysis=selectivity"
            )
        return store.table()

    def load_model(self, snapshot: Snapshot | int) -> nn.Module:
        """The network with a snapshot's weights, in eval mode, on the CPU."""
        if isinstance(snapshot, int):
            snapshot = self.snapshot_at(snapshot)
        model = self.build_model()
        model.load_state_dict(load_weights(snapshot.path))
        return model.eval()


def _typed_config(raw: DictConfig) -> DictConfig:
    """Merge a saved config onto the schema so it has the same types as at training time."""
    register_configs()
    schema = OmegaConf.structured(RunConfig)
    model = model_schema(raw.get("model", {}))
    if model is not None:
        schema.model = OmegaConf.structured(model)
    return OmegaConf.merge(schema, raw)


def load_run(path: Path | str) -> Run:
    """The run in directory `path` (finished or not): its config, run.json, metrics, snapshots,
    selectivity and networks, read from disk when asked for; ConfigError if `path` holds no
    run."""
    return Run(path)
