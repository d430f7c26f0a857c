"""Seeds of one condition, grouped: runs whose settings differ only in `seed` form one group, and
a group's curves are summarised as the mean over seeds with a band of two standard errors.

A run's settings are its identity (run.json: what differs from the defaults, rundir.py). A fork
names its parent by run hash, which differs between the seeds of the parent; so for grouping the
hash is replaced by the parent's own seed-free settings (read from the parent directory named by
`fork.from`), and forks of different seeds of one baseline group together.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from vestige.report.tables import Curve, RunRecord
from vestige.rundir import RunDir

BAND_SE = 2.0  # the band is mean +- 2 standard errors over seeds
NAME_CHARS = 60  # longer labels are named #1, #2, ... in figures (the runs table has both)
_ABSENT = object()


@dataclass
class Group:
    """Runs of one condition (seeds), sorted by seed; `label` says what sets it apart, `name`
    is the label or, when some label is too long for a legend, `#n`."""

    settings: dict[str, Any]
    runs: list[RunRecord]
    label: str = ""
    name: str = ""

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


@dataclass(frozen=True)
class Band:
    """Mean over seeds at each x, its spread (BAND_SE standard errors; NaN with one seed) and
    the number of seeds that had a value there."""

    x: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    count: np.ndarray


def condition_settings(identity: dict[str, Any], parent: Path | None) -> dict[str, Any]:
    """A run's identity without `seed`; a fork's `fork.parent` hash replaced by the parent's
    settings (as `fork.parent.<key>`) when the parent directory is there and still that run."""
    settings = {key: value for key, value in identity.items() if key != "seed"}
    parent_hash = settings.get("fork.parent")
    if parent_hash is None or parent is None:
        return settings
    info = RunDir(parent).read_info()
    if info.get("run_hash") != parent_hash:
        return settings
    grandparent = OmegaConf.select(OmegaConf.load(RunDir(parent).config), "fork.from")
    inherited = condition_settings(
        info.get("identity", {}), Path(grandparent).expanduser() if grandparent else None
    )
    del settings["fork.parent"]
    settings.update({f"fork.parent.{key}": value for key, value in inherited.items()})
    return dict(sorted(settings.items()))


def group_by_seed(records: Sequence[RunRecord]) -> list[Group]:
    """Groups in the order their first run was given, each labelled by the settings that vary
    between groups (or by its run's name when there is one group)."""
    groups: dict[str, Group] = {}
    for record in records:
        settings = condition_settings(record.identity, record.parent)
        key = json.dumps(settings, sort_keys=True, default=str)
        groups.setdefault(key, Group(settings, [])).runs.append(record)
    result = list(groups.values())
    for group in result:
        group.runs.sort(key=lambda run: run.seed)
    labels = condition_labels(result)
    short = all(len(label) <= NAME_CHARS for label in labels)
    for n, (group, label) in enumerate(zip(result, labels, strict=True)):
        group.label, group.name = label, label if short else f"#{n + 1}"
    return result


def condition_labels(groups: Sequence[Group]) -> list[str]:
    """`key=value` for every setting that is not the same in all groups; a group that left such
    a key at its default shows the default (from its resolved config). What a fork inherits
    from its parent (`fork.parent.*`) groups runs but is left out of labels."""
    if len(groups) == 1:
        return [_model_and_data(groups[0].runs[0].name)]
    keys = sorted({k for g in groups for k in g.settings if not k.startswith("fork.parent.")})
    shown = [{k: _setting(group, k) for k in keys} for group in groups]
    varying = [k for k in keys if len({values[k] for values in shown}) > 1]
    return [
        " ".join(f"{k}={values[k]}" for k in varying if values[k] is not None) or "defaults"
        for values in shown
    ]


def _setting(group: Group, key: str) -> str | None:
    """The group's value of a setting as text; None where its config has no such key (e.g.
    `model.depth` of a ResNet)."""
    if key in group.settings:
        return _text(group.settings[key])
    value = OmegaConf.select(group.runs[0].config, key, default=_ABSENT)
    if value is _ABSENT:
        return None
    return _text(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def _model_and_data(name: str) -> str:
    """`resnet18-synthetic-e2e43e2ae9` -> `resnet18-synthetic` (the hash says nothing to a
    reader; the seeds of one group have different hashes anyway)."""
    return name.rpartition("-")[0] or name


def _text(value: Any) -> str:
    """A setting as it is written on the command line: `[{from:5ep,alpha:-20.0}]`."""
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":")).replace('"', "")
    return str(value)


def mean_and_spread(values: Sequence[float], errors: float = BAND_SE) -> tuple[float, float]:
    """The mean of seeds' values and `errors` standard errors of it (NaN for a single seed)."""
    if len(values) < 2:
        return float(np.mean(values)), math.nan
    return float(np.mean(values)), errors * float(np.std(values, ddof=1)) / math.sqrt(len(values))


def seed_band(curves: Sequence[Curve]) -> Band:
    """Mean and spread over the curves at every x any of them has (seeds of one config share
    their snapshot steps; a shorter, unfinished seed only drops out where it has no value)."""
    values: dict[float, list[float]] = {}
    for curve in curves:
        for x, y in zip(curve.x.tolist(), curve.y.tolist(), strict=True):
            values.setdefault(x, []).append(y)
    xs = sorted(values)
    mean, spread = np.array([mean_and_spread(values[x]) for x in xs]).reshape(-1, 2).T
    return Band(np.array(xs), mean, spread, np.array([len(values[x]) for x in xs]))


def group_band(group: Group, curve_of: Callable[[RunRecord], Curve | None]) -> Band | None:
    """The band of one quantity over a group's seeds; None when no run has it."""
    curves = [curve for run in group.runs if (curve := curve_of(run)) is not None]
    return seed_band(curves) if curves else None
