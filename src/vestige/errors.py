"""The exception type that reaches a user as a single line instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from omegaconf import OmegaConf


class ConfigError(Exception):
    """A user mistake: bad config value, missing data, a run directory that cannot be used."""


class DamagedFile(ConfigError):
    """A file a run keeps is missing or no longer what was written (its checksum differs)."""


def invalid(key: str, value: Any, fix: str) -> ConfigError:
    """`key=value is invalid: fix`, the shape of every one-line error about a setting (a config
    list or dict is shown as plain Python)."""
    shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return ConfigError(f"{key}={shown!r} is invalid: {fix}")


def failing(section: str) -> Callable[[str, Any, str], NoReturn]:
    """`fail(key, value, fix)` for the checks of one config section: raises `invalid` with the
    section's keys written in full (`failing("analysis.ablation")("k", [], "...")`)."""

    def fail(key: str, value: Any, fix: str) -> NoReturn:
        raise invalid(f"{section}.{key}", value, fix)

    return fail
