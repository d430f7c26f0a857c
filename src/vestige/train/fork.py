"""Forks: a run that continues another run's full training state from step k with different
settings (typically another alpha schedule), so a sweep over regularization windows shares the
common prefix instead of recomputing it.

The parent keeps full states at the steps its `checkpoint.forkable` rules name. A fork must agree
with its parent on everything that shaped the prefix (model, data, optimiser, schedule, seed,
batch); only the keys in `FORK_MAY_CHANGE` may differ. The fork's identity names the parent by
its run hash (not its path) and the fork step. Its run directory starts with the parent's history
up to k: metrics rows, and hard links to the snapshots and per-snapshot measurement files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vestige.errors import ConfigError
from vestige.rundir import RunDir, atomic_write_json, atomic_write_text
from vestige.step import Step
from vestige.train import checkpoint, metrics

FORK_MAY_CHANGE = (
    "fork.",
    "regularizer.",
    "checkpoint.",
    "selectivity.",
    "trainer.epochs",
    "trainer.max_steps",
)
_PER_SNAPSHOT_FILE = re.compile(r"^step_(\d{8})\.(pt|npz)$")


def forkable_path(run: RunDir, step: int) -> Path:
    return run.checkpoints / "forkable" / f"step_{step:08d}.pt"


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


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {
            k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()
        }
    return {prefix[:-1]: tree}


def fork_step(cfg: Any) -> int:
    """The parent's absolute step that `fork.at` names."""
    parent = RunDir(Path(cfg.fork["from"]).expanduser())
    return Step.parse(cfg.fork["at"]).to_iterations(parent.read_info()["iterations_per_epoch"])


def check_fork(cfg: Any) -> None:
    """One-line errors for a fork that cannot start: no parent, no state at k, other settings."""
    from vestige.config import NON_IDENTITY_KEYS

    source, at = cfg.fork["from"], cfg.fork["at"]
    if source is None and at is None:
        return
    if source is None or at is None:
        raise ConfigError(
            "fork.from and fork.at go together: set both, e.g. fork.from=<run dir> fork.at=5ep"
        )
    parent = RunDir(Path(source).expanduser())
    if not parent.config.is_file() or "iterations_per_epoch" not in parent.read_info():
        raise ConfigError(f"fork.from={source!r} is invalid: point it at a vestige run directory")
    try:
        step = fork_step(cfg)
    except ValueError as err:
        raise ConfigError(f"fork.at={at!r} is invalid: {err}") from None
    if not forkable_path(parent, step).exists():
        raise ConfigError(
            f"fork.at={at!r} is invalid: run {parent.path.name} kept no full state at step {step}; "
            f"train it with checkpoint.forkable=[{at}]"
        )
    mine = _flat(OmegaConf.to_container(cfg, resolve=True))
    theirs = _flat(OmegaConf.to_container(OmegaConf.load(parent.config), resolve=True))
    for key in sorted(set(mine) | set(theirs)):
        if key in NON_IDENTITY_KEYS or key.startswith(FORK_MAY_CHANGE):
            continue
        if mine.get(key) != theirs.get(key):
            raise ConfigError(
                f"{key}={mine.get(key)!r} differs from the parent run's {theirs.get(key)!r}: "
                "a fork changes only regularizer, checkpoint, selectivity and trainer.epochs"
            )


def parent_hash(source: str) -> str:
    return RunDir(Path(source).expanduser()).read_info()["run_hash"]


def inherit_history(parent: RunDir, step: int, child: RunDir) -> None:
    """Start the child's files with the parent's history up to the fork step (rank 0 only)."""
    rows = [row for row in metrics.read_metrics(parent.metrics) if row["step"] <= step]
    atomic_write_text(
        child.metrics, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    )
    for source in parent.path.rglob("step_*"):
        match = _PER_SNAPSHOT_FILE.match(source.name)
        relative = source.relative_to(parent.path)
        if (
            not match
            or int(match.group(1)) > step
            or relative.parts[:2] in (("checkpoints", "resume"), ("checkpoints", "forkable"))
        ):
            continue
        destination = child.path / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.unlink(missing_ok=True)
        _link_or_copy(source, destination)
    for units in parent.path.glob("selectivity*/units.npz"):
        (child.path / units.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(units, child.path / units.parent.name / units.name)
    entries = [entry for entry in checkpoint.read_manifest(parent) if entry["step"] <= step]
    atomic_write_json(child.manifest, {"snapshots": entries})


def parent_state(parent: RunDir, step: int) -> dict[str, Any]:
    """The parent's full training state at the fork step."""
    state = checkpoint.load_resume_file(forkable_path(parent, step))
    if state is None:
        raise ConfigError(
            f"the full state of {parent.path.name} at step {step} is damaged; fork at another step"
        )
    return state


def shared_prefix(cfg: Any, iterations_per_epoch: int) -> tuple[RunDir, int] | None:
    """Where a regularized run can start instead of step 0: its alpha = 0 baseline's kept state.

    A run whose alpha is 0 for its first k steps computes exactly what the same config with
    alpha = 0 computes up to k (tests/test_fork.py), so when that baseline has run and kept a
    full state at some step s <= k (`checkpoint.forkable`), starting from it changes nothing but
    the time taken. Without such a state the run trains from step 0; either way its identity
    and results are those of the run from scratch. The regularization-windows sweep relies on
    this to share the common prefix with its baseline.
    """
    from vestige.rundir import run_directory
    from vestige.selectivity.alpha import AlphaSchedule

    if cfg.fork["from"] is not None or cfg.regularizer.name == "none":
        return None
    schedule = AlphaSchedule.parse(cfg.regularizer.alpha).resolve(iterations_per_epoch)
    active = [w.start for w in schedule.windows if w.alpha != 0.0 or w.alpha_start != 0.0]
    if not active or min(active) == 0:
        return None
    tree = OmegaConf.to_container(cfg, resolve=True)
    tree["regularizer"]["alpha"] = 0.0
    baseline = RunDir(Path(run_directory(tree)).resolve())
    kept = [
        int(path.stem.removeprefix("step_"))
        for path in (baseline.checkpoints / "forkable").glob("step_*.sha256")  # written last
    ]
    usable = [step for step in kept if 0 < step <= min(active)]
    return (baseline, max(usable)) if usable else None
