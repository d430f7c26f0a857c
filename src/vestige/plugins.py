"""Which regularizers and observers a config asks for: the only place that wires them."""

from __future__ import annotations

from typing import Any

from vestige.rundir import RunDir
from vestige.selectivity.observer import SelectivityObserver
from vestige.selectivity.training import SelectivityRegularizer
from vestige.train.plugins import Observer, Regularizer


def build_observers(cfg: Any, run: RunDir) -> list[Observer]:
    return [SelectivityObserver(cfg.selectivity, run)] if cfg.selectivity.enabled else []


def build_regularizers(cfg: Any) -> list[Regularizer]:
    selective = cfg.regularizer.name == "selectivity"
    return [SelectivityRegularizer(cfg.regularizer, cfg.selectivity.negative)] if selective else []
