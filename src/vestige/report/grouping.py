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
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from vestige.errors import ConfigError
from vestige.report.tables import Curve, RunRecord
from vestige.results import setting_text
from vestige.rundir import SOURCE_RUNS, condition_settings
from vestige.selectivity.alpha import KEY as ALPHA_KEY
from vestige.selectivity.alpha import AlphaSchedule, AlphaWindow
from vestige.step import Step

BAND_SE = 2.0  # the band is mean +- 2 standard errors over seeds
_ABSENT = object()


@dataclass
class Group:
    """Runs of one condition (seeds), sorted by seed; `name` says in words what sets it apart
    (figures and tables), `overrides` the same settings as written on the command line."""

    settings: dict[str, Any]
    runs: list[RunRecord]
    name: str = ""
    overrides: str = ""

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


def group_by_seed(records: Sequence[RunRecord]) -> list[Group]:
    """Groups in the order their first run was given, each named by the settings that vary
    between groups (or by its run's model and data when there is one group)."""
    groups: dict[str, Group] = {}
    for record in records:
        settings = condition_settings(record.identity, record.config)
        key = json.dumps(settings, sort_keys=True, default=str)
        groups.setdefault(key, Group(settings, [])).runs.append(record)
    result = list(groups.values())
    for group in result:
        group.runs.sort(key=lambda run: run.seed)
    if len(result) == 1:
        result[0].name = _model_and_data(result[0].runs[0].name)
        return result
    for group, shown in zip(result, varying_settings(result), strict=True):
        group.name = ", ".join(readable(k, v) for k, v in shown.items()) or "defaults"
        group.overrides = overrides_text(shown)
    return result


def varying_settings(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """Per group, every setting that is not the same in all groups: its own value or, where it
    left the key at its default, the default (from its resolved config); a key its config
    lacks (`model.depth` of a ResNet) is left out. The settings of a run another started from
    (`fork.parent.*`, `init.source.*`) group runs but are not shown."""
    inherited = tuple(f"{named}." for named, _ in SOURCE_RUNS)
    keys = sorted({k for g in groups for k in g.settings if not k.startswith(inherited)})
    values = [{k: _setting(group, k) for k in keys} for group in groups]
    varying = [k for k in keys if len({setting_text(shown[k]) for shown in values}) > 1]
    return [{k: shown[k] for k in varying if shown[k] is not _ABSENT} for shown in values]


def readable(key: str, value: Any) -> str:
    """One setting in words for a legend: `optim.lr=0.1` -> `lr = 0.1`, `model.name=deit_ti`
    -> `model = deit_ti` (the key's last part, or its section's for a `name`); an alpha
    schedule in the paper's words (`alpha_words`)."""
    if key == ALPHA_KEY:
        return alpha_words(value)
    section, _, last = key.rpartition(".")
    word = section.rpartition(".")[2] if last == "name" and section else last
    return f"{word} = {_short(value)}"


def alpha_words(value: Any) -> str:
    """`-20@0ep..5ep` -> `alpha = -20 in epochs 0-4` (a window ends where its last epoch does,
    docs/science.md §3); `-20@5ep` -> `alpha = -20 from epoch 5`;
    several windows joined by `; `, windows of alpha 0 left out (alpha is 0 outside every
    window), and no window left: `baseline (alpha = 0)`."""
    try:
        windows = AlphaSchedule.parse(value).windows
    except ConfigError:
        return f"alpha = {setting_text(value)}"
    shown = [w for w in windows if w.alpha != 0 or w.alpha_start != 0]
    if not shown:
        return "baseline (alpha = 0)"
    return "alpha = " + "; ".join(_window_words(window) for window in shown)


def _window_words(window: AlphaWindow) -> str:
    words = f"{window.alpha:g}"
    if window.until is not None:
        words += f" {_span(window.start, window.until)}"
    elif window.start != Step():
        words += f" from {_point(window.start)}"
    if window.ramp != Step():
        words += f" (ramp {window.ramp} from {window.alpha_start:g})"
    return words


def _point(step: Step) -> str:
    if not step.iterations:
        return f"epoch {step.epochs}"
    return f"iteration {step.iterations}" if not step.epochs else f"step {step}"


def _span(start: Step, until: Step) -> str:
    """The window's epochs or iterations counted inclusively, as the papers name them."""
    if not (start.iterations or until.iterations):
        first, last, unit = start.epochs, until.epochs - 1, "epoch"
    elif not (start.epochs or until.epochs):
        first, last, unit = start.iterations, until.iterations - 1, "iteration"
    else:
        return f"from step {start} until {until}"
    return f"in {unit} {first}" if first == last else f"in {unit}s {first}-{last}"


def overrides_text(settings: dict[str, Any]) -> str:
    """Settings as written on the command line: `optim.lr=0.01 regularizer.alpha=-20@5ep`."""
    return " ".join(f"{key}={setting_text(value)}" for key, value in settings.items())


def _setting(group: Group, key: str) -> Any:
    """The group's value of a setting; _ABSENT where its config has no such key."""
    if key in group.settings:
        return group.settings[key]
    value = OmegaConf.select(group.runs[0].config, key, default=_ABSENT)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _model_and_data(name: str) -> str:
    """`resnet18-synthetic-22b77fd37a` -> `resnet18-synthetic` (the hash says nothing to a
    reader; the seeds of one group have different hashes anyway)."""
    return name.rpartition("-")[0] or name


def _short(value: Any) -> str:
    """A setting for a reader: `-20` for -20.0, otherwise as on the command line."""
    return f"{value:g}" if isinstance(value, float) else setting_text(value)


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
