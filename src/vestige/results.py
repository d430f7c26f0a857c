"""`load_run(path)`: a finished or running run, and `load_sweep(path)`: the points of a sweep, for
notebooks, analyses and reports.

run = vestige.load_run("outputs/runs/resnet18-synthetic-22b77fd37a")
run.metrics[-1]["eval_acc"]
model = run.load_model(run.snapshots[0])
vestige.load_sweep("outputs/sweeps/sweep-0123456789").frame()

The `*_frame()` views are pandas DataFrames of the same tables; pandas is optional, imported only
when a view is asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from vestige.config import RunConfig, SelectivityConfig, model_schema, register_configs
from vestige.errors import ConfigError, DamagedFile
from vestige.models import build_model
from vestige.rundir import (
    RunDir,
    SweepDir,
    condition_settings,
    load_weights,
    read_manifest,
    read_metrics,
)
from vestige.selectivity.store import SelectivityStore

if TYPE_CHECKING:
    import pandas

# a sweep point's final metrics: the last evaluation's, then the highest mean selectivity of the run
LAST = ("eval_acc", "eval_acc5", "eval_loss", "train_loss", "si/mean")


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

    def metrics_frame(self) -> pandas.DataFrame:
        """`metrics` as a DataFrame, one row per metrics row (a key a row lacks is NaN there)."""
        return _pandas("run.metrics_frame()").DataFrame(self.metrics)

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

    def selectivity_frame(self, bn_stats: str = "running", **settings: Any) -> pandas.DataFrame:
        """`selectivity(...)` as a tidy DataFrame, one row per (snapshot, unit), for grouping:
        `.groupby(["epoch", "stage"]).si.mean()` is each stage's curve (docs/science.md §2 means
        blocks first, which is the same where a stage's measured layers are equally wide, as
        block outputs are)."""
        pd = _pandas("run.selectivity_frame()")
        return pd.DataFrame(self.selectivity(bn_stats, **settings))

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


@dataclass
class Point:
    """One point of a sweep: what it sets, how far it got, what it measured."""

    run: Path
    settings: dict[str, Any]
    status: str
    epoch: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)


def read_point(
    run: Path, overrides: list[str] | None, failure: dict[str, Any] | None = None
) -> Point:
    """A point as far as it got: not started (or failed before its run began), running,
    stopped, failed, complete."""
    files = RunDir(run)
    if not files.info.exists() or not files.config.exists():
        settings = dict(o.lstrip("+~").split("=", 1) for o in overrides or [] if "=" in o)
        status = "failed" if failure else files.status()
        return Point(run, settings, status, metrics=dict.fromkeys((*LAST, "si/mean peak")))
    info = files.read_info()
    rows = read_metrics(files.metrics)
    evaluated = [row for row in rows if row.get("eval_acc") is not None]
    last = evaluated[-1] if evaluated else {}
    si = [row["si/mean"] for row in rows if row.get("si/mean") is not None]
    metrics = {key: last.get(key) for key in LAST}
    metrics["si/mean peak"] = max(si) if si else None
    # forks of the seeds of one baseline share a condition (their parent hashes differ)
    settings = condition_settings(info.get("identity", {}), files.config)
    settings["seed"] = info.get("seed", 0)
    status = files.status()
    if failure and status != "complete":
        status = "failed"
    return Point(run, settings, status, last.get("epoch"), metrics)


def varying_keys(points: list[Point]) -> list[str]:
    """Settings whose value is not the same in every point (absent counts as a value)."""
    keys = sorted({key for point in points for key in point.settings})
    return [k for k in keys if len({str(p.settings.get(k)) for p in points}) > 1]


def show_defaults(points: list[Point], keys: list[str]) -> None:
    """A varying key that a run left at its default is absent from its identity: fill in the
    value from the run's resolved config, so the table shows `0.1`, not a blank."""
    for point in points:
        config = RunDir(point.run).config
        if config.exists():
            resolved = OmegaConf.load(config)
            for key in keys:
                value = OmegaConf.select(resolved, key)
                point.settings.setdefault(
                    key, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                )


def setting_text(value: Any) -> str:
    """A setting as it is written on the command line: `[{from:5ep,alpha:-20.0}]`."""
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":")).replace('"', "")
    return str(value)


class Sweep:
    """The points of a sweep folder (or of every run directory below any folder), read once:
    what each sets, how far it got, its final metrics, and why a failed one failed."""

    def __init__(self, path: Path | str) -> None:
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(
                f"{path} is not a folder: pass a sweep folder (outputs/sweeps/<name>) or any "
                "folder holding run directories"
            )
        self.dir = SweepDir(folder)
        runs = self.dir.runs()
        self.failures = {run: self.dir.read_failure(run) for run, _ in runs}
        self.points = [read_point(run, overrides, self.failures[run]) for run, overrides in runs]
        self.varying = varying_keys(self.points)
        show_defaults(self.points, self.varying)

    def __repr__(self) -> str:
        return f"Sweep({str(self.dir.path)!r}, points={len(self.points)}, varying={self.varying})"

    def rows(self) -> list[dict[str, Any]]:
        """One per point, in the order of `points`: the settings that vary, status, epoch and
        final metrics (the last evaluation's, and the peak of `si/mean`), the run's name."""
        return [
            {
                **{key: p.settings.get(key, "") for key in self.varying},
                "status": p.status,
                "epoch": p.epoch,
                **p.metrics,
                "run": p.run.name,
            }
            for p in self.points
        ]

    def frame(self) -> pandas.DataFrame:
        """`rows()` as a DataFrame; a setting that is a list or dict in some point (alpha
        windows) is written as on the command line in every point, so that the points group by
        it."""
        pd = _pandas("sweep.frame()")
        rows = self.rows()
        texts = {k for row in rows for k, v in row.items() if isinstance(v, list | dict)}
        return pd.DataFrame(
            [{k: setting_text(v) if k in texts else v for k, v in row.items()} for row in rows]
        )


def load_sweep(path: Path | str) -> Sweep:
    """The sweep whose folder is `path` (outputs/sweeps/<name>; or any folder, whose run
    directories are then the points): one row per point by `rows()` or `frame()`; ConfigError
    if `path` is not a folder."""
    return Sweep(path)


def _pandas(view: str) -> Any:
    """pandas, imported only when a DataFrame view is asked for: vestige does not depend on it."""
    try:
        import pandas
    except ImportError:
        raise ConfigError(
            f"{view} needs pandas, which is not installed: pip install pandas "
            "(or pip install 'vestige[pandas]')"
        ) from None
    return pandas
