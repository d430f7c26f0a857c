"""Class selectivity measured at every evaluation of a training run, as an observer.

It rides along the run's own evaluation pass (docs/science.md §2: eval mode, the
evaluation split), adds stage and network means to the metrics row, and stores the per-unit
values of each snapshot through `SelectivityStore`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from vestige import distributed
from vestige.config import SelectivityConfig
from vestige.selectivity.index import SelectivityProbe
from vestige.selectivity.store import STORE, UNITS, SelectivityStore
from vestige.selectivity.units import UnitLayer, measured_layers


class SelectivityObserver:
    def __init__(self, cfg: SelectivityConfig, run: Path) -> None:
        self.cfg, self.store = cfg, SelectivityStore(run, cfg)
        self.layers: list[UnitLayer] = []
        self.num_classes = 0

    def on_train_start(self, model: nn.Module, num_classes: int, step: int) -> None:
        self.layers, self.num_classes = measured_layers(model, self.cfg.units), num_classes
        if distributed.is_main():
            self.store.drop_after(step)
            self.store.write_units(self.layers)

    def probe(self, model: nn.Module) -> SelectivityProbe:
        return SelectivityProbe(model, self.layers, self.num_classes, self.cfg)

    def on_evaluation(self, step: int, epoch: float, probe: Any) -> dict[str, float]:
        result = probe.result()
        if distributed.is_main():
            self.store.write_snapshot(step, epoch, result)
            self.store.rebuild_summary()
        stages = {layer.stage for layer in self.layers} | {"mean"}
        return {k: v for k, v in result.summary().items() if k.removeprefix("si/") in stages}

    def inherit(self, parent: Path, step: int, child: Path) -> None:
        """The unit tables of the parent's selectivity folders (their per-snapshot files are
        linked with the rest of the parent's history)."""
        for units in parent.glob(f"{STORE}*/{UNITS}"):
            (child / units.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(units, child / units.parent.name / units.name)
