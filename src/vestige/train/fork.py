"""Forks: a run that continues another run's full training state from step k with different
settings (typically another alpha schedule), so a sweep over regularization windows shares the
common prefix instead of recomputing it.

The parent keeps full states at the steps its `checkpoint.forkable` rules name. A fork must agree
with its parent on everything that shaped the prefix (model, data, optimiser, schedule, seed,
batch); only the keys the schema marks `fork=True` may differ. The fork's identity names the
parent by its run hash (not its path) and the fork step. Its run directory starts with the
parent's history up to k: metrics rows, and hard links to the snapshots and per-snapshot
measurement files.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vestige.config import RunConfig, flatten, fork_may_change
from vestige.errors import ConfigError
from vestige.io import atomic_write_json, step_file
from vestige.rundir import RunDir, read_manifest, read_metrics
from vestige.step import Clock
from vestige.train import checkpoint
from vestige.train.metrics import write_rows

_PER_SNAPSHOT_FILE = re.compile(r"^step_(\d{8})\.(pt|npz)$")


def forkable_path(run: RunDir, step: int) -> Path:
    return step_file(run.forkable, step, ".pt")


def keep_forkable(run: RunDir, resume_file: Path, step: int) -> None:
    """Keep the resume state just written at `step` for good (a hard link: no extra space)."""
    target = forkable_path(run, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    for source, destination in (
        (resume_file, target),
        (resume_file.with_suffix(".sha256"), target.with_suffix(".sha256")),
    ):
        destination.unlink(missing_ok=True)
        _link_or_copy(source, destination)


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def fork_step(cfg: RunConfig) -> int:
    """The parent's absolute step that `fork.at` names."""
    parent = RunDir(Path(cfg.fork["from"]).expanduser())
    return Clock(parent.read_info()["iterations_per_epoch"]).iterations(cfg.fork["at"])


def source_run(name: str, section: Mapping[str, str | None], at: str) -> tuple[str, str] | None:
    """`(from, at)` of a `fork` or `init` section, None when unset; one-line errors for an
    unknown key or one of the two set without the other (`at`: an example step)."""
    unknown = sorted(set(section) - {"from", "at"})
    if unknown:
        raise ConfigError(
            f"unknown config key '{name}.{unknown[0]}': {name} takes {name}.from and {name}.at"
        )
    if section["from"] is None and section["at"] is None:
        return None
    if section["from"] is None or section["at"] is None:
        raise ConfigError(
            f"{name}.from and {name}.at go together: set both, "
            f"e.g. {name}.from=<run dir> {name}.at={at}"
        )
    return section["from"], section["at"]


def check_fork(cfg: RunConfig) -> None:
    """One-line errors for a fork that cannot start: no parent, no state at k, other settings."""
    given = source_run("fork", cfg.fork, "5ep")
    if given is None:
        return
    source, at = given
    parent = RunDir(Path(source).expanduser())
    if not parent.config.is_file() or "iterations_per_epoch" not in parent.read_info():
        raise ConfigError(f"fork.from={source!r} is invalid: point it at a vestige run directory")
    try:
        step = fork_step(cfg)
    except ValueError as err:
        raise ConfigError(f"fork.at={at!r} is invalid: {err}") from None
    total = parent.read_info().get("steps")
    if total is not None and step > total:
        raise ConfigError(
            f"fork.at={at!r} is invalid: step {step} is past the end of run {parent.path.name}, "
            f"which trains {total} steps; fork at or before its end"
        )
    if not forkable_path(parent, step).exists():
        raise ConfigError(
            f"fork.at={at!r} is invalid: run {parent.path.name} kept no full state at step {step}; "
            f"train it with checkpoint.forkable=[{at}]"
        )
    mine = flatten(OmegaConf.to_container(cfg, resolve=True))
    theirs = flatten(OmegaConf.to_container(OmegaConf.load(parent.config), resolve=True))
    for key in sorted(set(mine) | set(theirs)):
        if fork_may_change(key):
            continue
        if mine.get(key) != theirs.get(key):
            raise ConfigError(
                f"{key}={mine.get(key)!r} differs from the parent run's {theirs.get(key)!r}: "
                "a fork changes only regularizer, checkpoint, selectivity and trainer.epochs"
            )


def inherit_history(parent: RunDir, step: int, child: RunDir) -> None:
    """Start the child's files with the parent's history up to the fork step: metrics rows, and
    links to every step-named file up to it but resume states (rank 0 only; observers carry
    over the rest of their files, `Observer.inherit`)."""
    write_rows(child.metrics, [r for r in read_metrics(parent.metrics) if r["step"] <= step])
    for source in parent.path.rglob("step_*"):
        match = _PER_SNAPSHOT_FILE.match(source.name)
        states = source.is_relative_to(parent.resume) or source.is_relative_to(parent.forkable)
        if not match or int(match.group(1)) > step or states:
            continue
        destination = child.path / source.relative_to(parent.path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.unlink(missing_ok=True)
        _link_or_copy(source, destination)
    entries = [entry for entry in read_manifest(parent) if entry["step"] <= step]
    atomic_write_json(child.manifest, {"snapshots": entries})


def parent_state(parent: RunDir, step: int) -> dict[str, Any]:
    """The parent's full training state at the fork step."""
    state = checkpoint.load_resume_file(forkable_path(parent, step))
    if state is None:
        raise ConfigError(
            f"the full state of {parent.path.name} at step {step} is damaged; fork at another step"
        )
    return state
