"""Starting a run's model from another run's snapshot: `init.from=<run dir> init.at=<step>`.

Unlike a fork (train/fork.py), only the weights carry over: the new run has its own optimiser,
schedule, data order and step count, as fine-tuning does. With `model=tcnn` the snapshot is of
the T-CNN's ResNet, converted after loading (models/tcnn.py), which is how a Transformed CNN
starts from a partially trained CNN (docs/science.md §16). The run's identity names the source
by its run hash and the step (rundir.py), not by the path given.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from torch import Tensor

from vestige.config import RunConfig, flatten
from vestige.errors import ConfigError, DamagedFile, invalid
from vestige.models import base_config
from vestige.rundir import RunDir, load_weights, read_manifest, snapshot_path
from vestige.step import Clock
from vestige.train.fork import source_run


def source_step(cfg: RunConfig) -> int:
    """The source run's step that `init.at` names."""
    source = RunDir(Path(cfg.init["from"]).expanduser())
    return Clock(source.read_info()["iterations_per_epoch"]).iterations(cfg.init["at"])


def check_init(cfg: RunConfig) -> None:
    """One-line errors for a start that cannot be made: no source run, no snapshot at the step,
    a snapshot of another network or number of classes."""
    given = source_run("init", cfg.init, "2ep")
    if given is None:
        return
    origin, at = given
    if cfg.fork["from"] is not None:
        raise invalid("init.from", origin, "a fork carries its parent's weights: drop init.*")
    source = RunDir(Path(origin).expanduser())
    if not source.config.is_file() or "iterations_per_epoch" not in source.read_info():
        raise invalid("init.from", origin, "point it at a vestige run directory")
    try:
        step = source_step(cfg)
    except ValueError as err:
        raise ConfigError(f"init.at={at!r} is invalid: {err}") from None
    steps = [entry["step"] for entry in read_manifest(source)]
    if step not in steps:
        shown = ", ".join(str(s) for s in steps[:12]) + (", ..." if len(steps) > 12 else "")
        raise ConfigError(
            f"init.at={at!r} is invalid: run {source.path.name} has no snapshot at step {step}; "
            f"its snapshots are at steps {shown or 'none yet'}"
        )
    theirs = OmegaConf.load(source.config)
    mine = flatten(OmegaConf.to_container(OmegaConf.structured(base_config(cfg.model))))
    network = flatten(OmegaConf.to_container(theirs.model))
    for key in sorted(mine):
        if mine[key] != network.get(key):
            raise ConfigError(
                f"model.{key}={mine[key]!r} differs from run {source.path.name}'s "
                f"{network.get(key)!r}: init.from needs a snapshot of the same network"
            )
    if theirs.data.num_classes != cfg.data.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.data.num_classes} differs from run {source.path.name}'s "
            f"{theirs.data.num_classes}: init.from needs a snapshot with the same classifier"
        )


def initial_weights(cfg: RunConfig) -> dict[str, Tensor] | None:
    """The source snapshot's weights (checked by `check_init`), or None without `init.from`."""
    if cfg.init["from"] is None:
        return None
    source = RunDir(Path(cfg.init["from"]).expanduser())
    try:
        return load_weights(snapshot_path(source, source_step(cfg)))
    except DamagedFile as err:
        raise ConfigError(f"init.at={cfg.init['at']!r} cannot be used: {err}") from None
