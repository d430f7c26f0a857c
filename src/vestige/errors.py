"""The one exception type that reaches a user as a single line instead of a traceback."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


class ConfigError(Exception):
    """A user mistake: bad config value, missing data, a run directory that cannot be used."""


def invalid(key: str, value: Any, fix: str) -> ConfigError:
    """`key=value is invalid: fix`, the shape of every one-line error about a setting (a config
    list or dict is shown as plain Python)."""
    shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return ConfigError(f"{key}={shown!r} is invalid: {fix}")
