"""Where a run lives: identity from the config, the directory layout, and atomic file writes.

Same config -> same directory: the directory name is `<model>-<data>-<hash>`, the hash taken over
the hyperparameters that differ from the schema's defaults (as open_lth does), so adding a new
option with a default later does not move existing runs. Keys that change how a run is carried
out but not what it computes (marked `identity=False` in the schema) are left out.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vestige.config import (
    RunConfig,
    defaults,
    flatten,
    identity_settings,
    model_schema,
    named_defaults,
)
from vestige.errors import ConfigError, DamagedFile
from vestige.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    short_hash,
    step_file,
    step_files,
)

log = logging.getLogger(__name__)

CONFIG = "config.yaml"  # every run directory has one: how runs are found


# (identity key, config key): runs another run started from, named by that run's hash
SOURCE_RUNS = (("fork.parent", "fork.from"), ("init.source", "init.from"))


def identity(cfg: DictConfig | dict) -> dict[str, Any]:
    """The hyperparameters that make this run different from the defaults (flattened, sorted)."""
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    tree = {key: value for key, value in tree.items() if key != "hydra"}
    flat = flatten(tree)
    # a fork, or a run started from another's snapshot, is named by that run's identity, not by
    # the path it was given
    for named, path in SOURCE_RUNS:
        if flat.get(path):
            flat[named] = RunDir(Path(flat.pop(path)).expanduser()).read_info()["run_hash"]
    schema = model_schema(tree.get("model", {}))
    model = {} if schema is None else {f"model.{k}": v for k, v in named_defaults(schema).items()}
    return identity_settings(flat, RunConfig, {**defaults(RunConfig), **model})


def run_hash(cfg: DictConfig | dict) -> str:
    return short_hash(json.dumps(identity(cfg), sort_keys=True, default=str))


def check_same_run(run: RunDir, cfg: DictConfig | dict) -> None:
    """A directory that holds a run of other settings (`hydra.run.dir` pointed at it) is not
    taken over: one line naming the settings that differ and how to go on."""
    recorded = run.read_info()
    if "run_hash" not in recorded or recorded["run_hash"] == run_hash(cfg):
        return
    mine = json.loads(json.dumps(identity(cfg), default=str))
    theirs = recorded.get("identity", {})
    keys = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))

    def value(settings: dict[str, Any], key: str) -> str:
        return repr(settings[key]) if key in settings else "default"

    shown = ", ".join(f"{k}={value(mine, k)} (the run's: {value(theirs, k)})" for k in keys[:3])
    command = recorded.get("command")
    how = f", or continue it with its own command: vestige-run {' '.join(command[1:])}"
    raise ConfigError(
        f"{run.path} holds a run of other settings: {shown}{'; ...' if len(keys) > 3 else ''}; "
        f"choose another hydra.run.dir{how if command else ''}"
    )


def condition_settings(identity: dict[str, Any], config: Any) -> dict[str, Any]:
    """A run's identity without `seed`, so that seeds of one condition compare equal. The hash
    of a run it started from (`fork.parent`, `init.source`: it differs between that run's
    seeds) is replaced by that run's own condition (as `fork.parent.<key>`), read through the
    path in the run's `config` (a mapping or a config.yaml), when that directory is there and
    still that run."""
    settings = {key: value for key, value in identity.items() if key != "seed"}
    if isinstance(config, str | Path):
        config = OmegaConf.load(config)
    elif not isinstance(config, DictConfig):
        config = OmegaConf.create(config)
    for named, path in SOURCE_RUNS:
        source = OmegaConf.select(config, path)
        if settings.get(named) is None or not source:
            continue
        run = RunDir(Path(source).expanduser())
        info = run.read_info()
        if info.get("run_hash") != settings[named] or not run.config.is_file():
            continue
        inherited = condition_settings(info.get("identity", {}), run.config)
        del settings[named]
        settings.update({f"{named}.{key}": value for key, value in inherited.items()})
    return dict(sorted(settings.items()))


def run_name(cfg: DictConfig | dict) -> str:
    """`<model>-<data>-<hash>`: readable in `ls`, unique per config."""
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return f"{tree['model']['name']}-{tree['data']['name']}-{run_hash(tree)}"


def run_directory(cfg: DictConfig | dict, absolute: bool = False) -> str:
    """Where a job works: training -> outputs/runs/<name>; an analysis -> the run it analyses;
    a sweep's table -> the sweep (a report's folder: report/inputs.py).

    `absolute` is the form a sweep's subdir takes: Hydra joins it to the sweep folder, and an
    absolute path wins that join, so sweep points land where single runs of the same config do.
    """
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    if tree.get("task", "train") != "train":
        for key in ("run", "sweep"):
            if tree.get(key):
                return str(Path(tree[key]).expanduser().resolve())
    path = Path(tree.get("outputs", "outputs")).expanduser() / "runs" / run_name(tree)
    return str(path.resolve() if absolute else path)


def analysed_run(cfg: DictConfig | dict) -> Path:
    """The run a task=analyze works on: `run=`, or else the run this very config trains (so
    `vestige-run experiment=X task=analyze` analyses what `vestige-run experiment=X` trained)."""
    tree = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    if tree.get("run"):
        return Path(tree["run"]).expanduser().resolve()
    return Path(run_directory({**tree, "task": "train"})).resolve()


def sweep_directory(outputs: str, overrides: list[str]) -> str:
    """`outputs/sweeps/sweep-<hash>`, named by the sweep's overrides whatever their order, so
    the same sweep submitted again finds the same folder (see tasks/sweep.py)."""
    name = f"sweep-{short_hash(json.dumps(sorted(overrides)))}"
    return str(Path(outputs).expanduser().resolve() / "sweeps" / name)


class SweepDir:
    """The files of a sweep's folder:

    sweep.json      the command, and each point's overrides and run directory
    .submitit/      SLURM scripts and logs (hydra/launcher=slurm)
    collect.csv, collect_groups.csv, collect.md   the tables of `task=collect`
    failed/<run>.json   why a point failed (a resubmission skips it unless retry_failed=true)
    report/         `task=report sweep=<this folder>`
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    record = property(lambda self: self.path / "sweep.json")
    collect_csv = property(lambda self: self.path / "collect.csv")
    collect_groups_csv = property(lambda self: self.path / "collect_groups.csv")
    collect_md = property(lambda self: self.path / "collect.md")
    report = property(lambda self: self.path / "report")

    def failure(self, run: Path | str) -> Path:
        """The record of why the point that works in `run` failed (one file a point, so the
        array tasks of a SLURM sweep never write the same file)."""
        return self.path / "failed" / f"{Path(run).name}.json"

    def read_failure(self, run: Path | str) -> dict[str, Any] | None:
        path = self.failure(run)
        return json.loads(path.read_text()) if path.exists() else None

    def runs(self) -> list[tuple[Path, list[str] | None]]:
        """(run directory, overrides) of each point, in the sweep's order.

        A folder without a record (outputs/runs, or a folder of run directories gathered by
        hand) gives every run directory below it, without overrides; a recorded point may not
        exist yet.
        """
        if self.record.exists():
            points = json.loads(self.record.read_text())["points"]
            return [(Path(p["run"]), p["overrides"]) for p in points]
        found = {config.parent for config in self.path.glob(f"**/{CONFIG}")}
        nested = {run for run in found if any(parent in found for parent in run.parents)}
        return [(run, None) for run in sorted(found - nested)]


class RunDir:
    """The files of one run. Only rank 0 creates or writes any of them."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG)
    info = property(lambda self: self.path / "run.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    tracking = property(lambda self: self.path / "tracking.json")  # trackers' run ids
    log = property(lambda self: self.path / "log.txt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    snapshots = property(lambda self: self.path / "checkpoints" / "snapshots")
    resume = property(lambda self: self.path / "checkpoints" / "resume")
    forkable = property(lambda self: self.path / "checkpoints" / "forkable")
    manifest = property(lambda self: self.path / "checkpoints" / "manifest.json")
    lock = property(lambda self: self.path / "run.lock")
    report = property(lambda self: self.path / "report")

    def remove_unstarted(self) -> None:
        """Undo a start that failed before anything was trained: the lock and log go, and the
        directory too if nothing else is in it (`hydra.run.dir` may name a folder of yours)."""
        for made in (self.lock, self.log):
            made.unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            pass

    def read_info(self) -> dict[str, Any]:
        """run.json ({} before the run starts); DamagedFile if it is no longer valid JSON."""
        if not self.info.exists():
            return {}
        try:
            return json.loads(self.info.read_text())
        except json.JSONDecodeError:
            raise DamagedFile(
                f"{self.info} is damaged (not valid JSON): the same training command rewrites it"
            ) from None

    def update_info(self, **values: Any) -> None:
        atomic_write_json(self.info, {**self.read_info(), **values})

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the run's lock: a second process with the same config is refused, not interleaved.

        flock is released by the kernel when the holder dies, so a killed or requeued job never
        leaves a stale lock behind.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(
                    f"run directory {self.path} is in use by {holder}: wait for it to finish, "
                    "or change the config to start a different run"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def in_use(self) -> bool:
        """Whether a process holds the run's lock now. The holder names itself in the lock file
        and clears it on release, so an empty file is free without asking; flock is asked only
        for a named holder, which may have been killed (its name stays, its lock does not)."""
        try:
            with open(self.lock) as handle:
                if not handle.read().strip():
                    return False
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(handle, fcntl.LOCK_UN)
                return False
        except FileNotFoundError:
            return False

    def status(self) -> str:
        """complete, stopped, preempted or diverged as run.json records it; running while a
        process holds the lock; failed when run.json says running but no process does (a crash
        or a kill); not started before run.json is written."""
        recorded = self.read_info().get("status")
        if recorded not in (None, "running"):
            return recorded
        if self.in_use():
            return "running"
        return "failed" if recorded else "not started"


def snapshot_path(run: RunDir, step: int) -> Path:
    return step_file(run.snapshots, step, ".pt")


def checksum_path(path: Path) -> Path:
    """The SHA-256 written beside a snapshot or resume state, after it."""
    return path.with_suffix(".sha256")


def write_with_checksum(path: Path, data: bytes) -> None:
    """The file, then its SHA-256 beside it: a file without one was never finished."""
    atomic_write_bytes(path, data)
    atomic_write_text(checksum_path(path), hashlib.sha256(data).hexdigest() + "\n")


def matches_checksum(path: Path, data: bytes) -> bool | None:
    """Whether `data` (read from `path`) is what was written; None when no checksum was."""
    checksum = checksum_path(path)
    if not checksum.exists():
        return None
    return checksum.read_text().strip() == hashlib.sha256(data).hexdigest()


def read_manifest(run: RunDir) -> list[dict[str, Any]]:
    """Snapshots of a run, sorted by step: [{"step", "epoch", "path"}] (path relative to run).
    Without a manifest, the snapshot files say which there are (with a warning)."""
    if run.manifest.exists():
        entries = json.loads(run.manifest.read_text())["snapshots"]
        return sorted(entries, key=lambda s: s["step"])
    steps = step_files(run.snapshots, ".pt")
    if not steps:
        return []
    log.warning("%s is missing: listing the %d snapshot files instead", run.manifest, len(steps))
    per_epoch = run.read_info().get("iterations_per_epoch")
    return [
        {
            "step": step,
            "epoch": step / per_epoch if per_epoch else _stored_epoch(snapshot_path(run, step)),
            "path": str(snapshot_path(run, step).relative_to(run.path)),
        }
        for step in steps
    ]


def _stored_epoch(path: Path) -> float:
    return float(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A snapshot's weights, on the CPU (`weights_only`: nothing in the file is executed); a
    missing file, or one whose checksum differs from the one written with it, is DamagedFile."""
    if not path.exists():
        raise DamagedFile(f"snapshot {path} is listed in the run's manifest but missing")
    data = path.read_bytes()
    if matches_checksum(path, data) is False:  # snapshots of older runs carry none
        raise DamagedFile(
            f"snapshot {path} is damaged: its SHA-256 differs from {checksum_path(path).name}; "
            "analyses can skip it (analysis.skip_damaged=true)"
        )
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["model"]
    except pickle.UnpicklingError:
        raise DamagedFile(
            f"snapshot {path} holds more than tensors and plain values: vestige never runs the "
            "code a file may carry, so it is not loaded"
        ) from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every intact row. A torn last line (a kill in the middle of a write) is ignored; a damaged
    line before it is skipped with a warning naming it, and the rows after it are kept."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                log.warning("skipping damaged line %d of %s", number, path)
    return rows
