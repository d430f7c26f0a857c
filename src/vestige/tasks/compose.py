"""Compose configs the way Hydra does, for any number of points, before Hydra starts a job.

A command line (and an experiment preset's `hydra.sweeper.params`) expands into points; each
point is composed with Hydra's compose API. Points that differ only in plain value overrides
(`seed=3`, `optim.lr=0.05`) share one composition of their config groups, and the rest is
applied the way Hydra applies overrides; so a sweep of thousands of points is composed in
seconds, and every point is checked and recorded. Composition errors become one line.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vestige.config import describe_keys, register_configs
from vestige.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def parse_overrides(overrides: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(
            f"could not parse the override(s) {' '.join(overrides)}: {first}"
        ) from None


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Every point of a sweep as a list of plain overrides (a single run: one point)."""
    choices = []
    for override in parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        choices.append([f"{key}={value}" for value in values])
    return [list(point) for point in itertools.product(*choices)]


def with_preset_sweep(command_line: list[str], params: Mapping[str, Any] | None) -> list[str]:
    """The overrides a sweep runs: an experiment preset's `hydra.sweeper.params`, then the
    command line's, which wins for a key both set (as Hydra's basic sweeper combines them)."""
    combined = {key: f"{key}={value}" for key, value in (params or {}).items()}
    for override in command_line:
        combined[override.partition("=")[0]] = override
    return list(combined.values())


def sweep_overrides(command_line: list[str], multirun: bool) -> list[str]:
    """The overrides of a command line, with a preset's own sweep when it is a `-m` sweep."""
    if not multirun:
        return command_line
    params = compose_point(expand_sweep(command_line)[0], with_hydra=True).hydra.sweeper.params
    return with_preset_sweep(command_line, params)


def check_group_choices(point: list[str]) -> None:
    """`model=resnet19` -> one line listing the options that exist in conf/model/; a list of
    choices (`logger=[tensorboard,mlflow]`) is checked choice by choice."""
    for override in point:
        key, _, value = override.lstrip("+~").partition("=")
        group = CONF_DIR / key.split("@")[0]
        chosen = value.removeprefix("[").removesuffix("]").split(",")
        if "." in key or not group.is_dir() or all((group / f"{c}.yaml").exists() for c in chosen):
            continue
        options = sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))
        raise ConfigError(f"{key}={value!r} is invalid: choose one of {', '.join(options)}")


def is_hydra_override(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def _is_plain_value(override: Override) -> bool:
    """`key=value` for a key that is not a config group: applied after composition."""
    key = override.key_or_group
    return (
        override.package is None
        and not override.is_add()
        and not override.is_delete()
        and not (CONF_DIR / key.split(".")[0]).is_dir()
    )


def compose_point(point: list[str], with_hydra: bool = False) -> Any:
    """One run's config, composed as Hydra would compose it; errors become one line.

    `with_hydra` also composes the `hydra.*` overrides (launcher settings, for instance), to
    check them; the `hydra` node is then left unresolved. Callers get their own copy.
    """
    check_group_choices(point)
    if with_hydra:
        return copy.deepcopy(_composed(tuple(point), True))
    parsed = parse_overrides([o for o in point if not is_hydra_override(o)])
    groups = tuple(o.input_line for o in parsed if not _is_plain_value(o))
    values = [o for o in parsed if _is_plain_value(o)]
    cfg = copy.deepcopy(_composed(groups, False))
    try:
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(describe_composition_error(err)) from None
    return cfg


@functools.cache
def _composed(overrides: tuple[str, ...], with_hydra: bool) -> DictConfig:
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="config", overrides=list(overrides), return_hydra_config=with_hydra
            )
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(describe_composition_error(err)) from None
    except AssertionError:  # OmegaConf's way of refusing a key under a section that is null
        raise ConfigError(describe_key_under_empty_section(list(overrides))) from None
    finally:
        GlobalHydra.instance().clear()


def describe_key_under_empty_section(overrides: list[str]) -> str:
    """`analysis.ablation.k=[0]` without `analysis=ablation`: the section is null, so say which
    group choice to add."""
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        section = key.partition(".")[0]
        if "." in key and (CONF_DIR / section).is_dir():
            options = sorted(p.stem for p in (CONF_DIR / section).glob("*.yaml"))
            return (
                f"{key} is invalid here: no {section} is chosen, so it has no settings; "
                f"add {section}=<{' | '.join(options)}>"
            )
    return f"could not apply the overrides {' '.join(overrides)}: check them one by one"


def describe_composition_error(err: BaseException) -> str:
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    full_key = getattr(cause, "full_key", None)
    schema = getattr(cause, "object_type", None)
    if full_key and "not in" in str(cause) and str(full_key).startswith("hydra.") and schema:
        known = ", ".join(f.name for f in fields(schema) if not f.name.startswith("_"))
        parent = str(full_key).rpartition(".")[0]
        return f"unknown config key '{full_key}': check its spelling; keys under {parent}: {known}"
    if full_key and "not in" in str(cause):
        return f"unknown config key '{full_key}': {describe_keys(str(full_key))}"
    if full_key:
        message = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
        return f"{full_key}: {message}"
    return str(err).strip().splitlines()[0]
