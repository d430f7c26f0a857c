"""The checks of the `selectivity` and `regularizer` sections: one-line ConfigErrors, before any
work (tasks/checks.py runs them)."""

from __future__ import annotations

from dataclasses import fields

from vestige.config import DataConfig, RegularizerConfig, SelectivityConfig
from vestige.errors import ConfigError, invalid
from vestige.selectivity.alpha import AlphaSchedule
from vestige.selectivity.units import NEGATIVE_CHOICES, UNIT_CHOICES

REGULARIZERS = ("none", "selectivity")


def check_selectivity(cfg: SelectivityConfig) -> None:
    if cfg.precision not in ("fp32", "bf16"):
        raise invalid("selectivity.precision", cfg.precision, "choose fp32 or bf16")
    if cfg.negative not in NEGATIVE_CHOICES:
        raise invalid("selectivity.negative", cfg.negative, "choose keep, clamp or abs")
    if cfg.units not in UNIT_CHOICES:
        raise invalid("selectivity.units", cfg.units, "choose block_output or all_relu")


def check_regularizer(cfg: RegularizerConfig, data: DataConfig) -> None:
    """The regularizer's settings, and that the data keeps each image's own class (§3: R is
    taken over the class means of a mini-batch)."""
    if cfg.name not in REGULARIZERS:
        raise invalid("regularizer", cfg.name, f"choose one of {', '.join(REGULARIZERS)}")
    if cfg.name == "none":
        defaults = RegularizerConfig()
        for field in fields(RegularizerConfig):
            value = getattr(cfg, field.name)
            if field.name != "name" and value != getattr(defaults, field.name):
                raise ConfigError(
                    f"regularizer.{field.name}={value!r} is invalid: regularizer=none ignores it; "
                    "add regularizer=selectivity"
                )
        return
    AlphaSchedule.parse(cfg.alpha)
    if cfg.eps <= 0:
        raise invalid("regularizer.eps", cfg.eps, "use a small positive number such as 1e-6")
    if cfg.stages is not None and len(cfg.stages) == 0:
        raise ConfigError(
            "regularizer.stages=[] is invalid: list stage names such as [layer1, layer2], or "
            "null for all but the last"
        )
    if data.mixup or data.cutmix:
        raise invalid(
            "regularizer",
            cfg.name,
            "R needs each image's own class, which Mixup/CutMix blend away: set data.mixup=0 "
            "and data.cutmix=0, or regularizer=none",
        )
