"""Check a command line before Hydra starts: every run it would launch composes and validates.

Hydra reports composition errors as several lines and only after creating the output directory;
here the same overrides are composed first (each point of a `-m` sweep), and the first mistake
becomes one line naming the key, the value and the fix, with nothing written to disk.
"""

from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vestige.config import describe_keys, register_configs, validate
from vestige.errors import ConfigError
from vestige.launch.sweep import with_preset_sweep
from vestige.train.distributed import launched_world_size

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Hydra's own flags: anything after them that is not an override is left to Hydra.
_FLAG_WITH_VALUE = {
    "-cn",
    "--config-name",
    "-cp",
    "--config-path",
    "-cd",
    "--config-dir",
    "-p",
    "--package",
}
_INFO_FLAGS = {
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--help",
    "-h",
    "--hydra-help",
    "--shell-completion",
    "-sc",
}
MAX_CHECKED_POINTS = 1024


def split_command_line(argv: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, is_multirun, is_info_request) from vestige-run's arguments."""
    overrides, multirun, info = [], False, False
    args = iter(argv)
    for arg in args:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in _FLAG_WITH_VALUE:
            next(args, None)
        elif arg in _INFO_FLAGS or arg.startswith("--info="):
            info = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun, info


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Every point of a sweep as a list of plain overrides (a single run: one point)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(
            f"could not parse the override(s) {' '.join(overrides)}: {first}"
        ) from None
    choices = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        choices.append([f"{key}={value}" for value in values])
    return [
        list(point) for point in itertools.islice(itertools.product(*choices), MAX_CHECKED_POINTS)
    ]


def check_group_choices(point: list[str]) -> None:
    """`model=resnet19` -> one line listing the options that exist in conf/model/."""
    for override in point:
        key, _, value = override.lstrip("+~").partition("=")
        group = CONF_DIR / key.split("@")[0]
        if "." in key or not group.is_dir() or (group / f"{value}.yaml").exists():
            continue
        options = sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))
        raise ConfigError(f"{key}={value!r} is invalid: choose one of {', '.join(options)}")


def is_hydra_override(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def compose_point(point: list[str], with_hydra: bool = False) -> Any:
    """Compose one run's config with Hydra's own machinery; errors become one line.

    `with_hydra` also composes the `hydra.*` overrides (launcher settings, for instance), to
    check them; the `hydra` node is then left unresolved. Each point is composed once per
    process (preflight checks it, the sweep record names its run directory); callers get a copy.
    """
    check_group_choices(point)
    overrides = point if with_hydra else [o for o in point if not is_hydra_override(o)]
    return copy.deepcopy(_composed(tuple(overrides), with_hydra))


@functools.lru_cache(maxsize=MAX_CHECKED_POINTS)
def _composed(overrides: tuple[str, ...], with_hydra: bool) -> Any:
    register_configs()
    overrides = list(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)
        if not with_hydra:
            OmegaConf.resolve(cfg)
        return cfg
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(describe_composition_error(err)) from None
    except AssertionError:  # OmegaConf's way of refusing a key under a section that is null
        raise ConfigError(describe_key_under_empty_section(overrides)) from None
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


def preflight(argv: list[str]) -> None:
    """Raise ConfigError for the first point of the command line that would fail."""
    overrides, multirun, info = split_command_line(argv)
    if info:
        return
    world = launched_world_size()
    points = expand_sweep(overrides)
    if multirun:  # a preset may define the sweep itself (hydra.sweeper.params)
        params = compose_point(points[0], with_hydra=True).hydra.sweeper.params
        points = expand_sweep(with_preset_sweep(overrides, params))
    for point in points:
        validate(compose_point(point), world_size=world)
    if any(is_hydra_override(o) for o in points[0]):
        compose_point(points[0], with_hydra=True)
