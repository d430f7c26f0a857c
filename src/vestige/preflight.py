"""Check a command line before Hydra starts: every run it would launch composes and validates.

Hydra reports composition errors as several lines and only after creating the output directory;
here the same overrides are composed first (each point of a `-m` sweep), and the first mistake
becomes one line naming the key, the value and the fix, with nothing written to disk.
"""

from __future__ import annotations

import itertools
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


def compose_point(point: list[str]) -> Any:
    """Compose one run's config with Hydra's own machinery; errors become one line."""
    check_group_choices(point)
    register_configs()
    task_overrides = [o for o in point if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=task_overrides)
        OmegaConf.resolve(cfg)
        return cfg
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(describe_composition_error(err)) from None
    finally:
        GlobalHydra.instance().clear()


def describe_composition_error(err: BaseException) -> str:
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and "not in" in str(cause):
        return f"unknown config key '{full_key}': {describe_keys(str(full_key))}"
    if full_key:
        message = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
        return f"{full_key}: {message}"
    return str(err).strip().splitlines()[0]


def preflight(argv: list[str]) -> None:
    """Raise ConfigError for the first point of the command line that would fail."""
    overrides, _, info = split_command_line(argv)
    if info:
        return
    world = launched_world_size()
    for point in expand_sweep(overrides):
        validate(compose_point(point), world_size=world)
