"""Class selectivity measured at every evaluation of a training run, as an observer.

It rides along the run's own evaluation pass (reference/class-selectivity.md §2: eval mode, the
evaluation split), adds stage and network means to the metrics row, and keeps the per-unit values
of each snapshot in `selectivity/step_N.npz` beside a `selectivity/units.npz` unit table.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from torch import nn

from vestige.config import SelectivityConfig
from vestige.rundir import RunDir, atomic_write_bytes
from vestige.selectivity.index import SelectivityProbe
from vestige.selectivity.units import UnitLayer, measured_layers, unit_table
from vestige.train import distributed


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


class SelectivityObserver:
    def __init__(self, cfg: SelectivityConfig, run: RunDir) -> None:
        self.cfg, self.folder = cfg, run.path / "selectivity"
        self.layers: list[UnitLayer] = []
        self.num_classes = 0

    def on_train_start(self, model: nn.Module, num_classes: int) -> None:
        self.layers, self.num_classes = measured_layers(model, self.cfg.units), num_classes
        if distributed.is_main():
            atomic_write_bytes(self.folder / "units.npz", _npz(**unit_table(self.layers)))

    def probe(self, model: nn.Module) -> SelectivityProbe:
        return SelectivityProbe(model, self.layers, self.num_classes, self.cfg.eps)

    def on_evaluation(self, step: int, epoch: float, probe: Any) -> dict[str, float]:
        result = probe.result()
        if distributed.is_main():
            table = result.unit_table()
            atomic_write_bytes(
                self.folder / f"step_{step:08d}.npz",
                _npz(
                    si=table["si"].astype(np.float32),
                    preferred_class=table["preferred_class"].astype(np.int32),
                ),
            )
        stages = {layer.stage for layer in self.layers}
        return {
            key: value
            for key, value in result.summary().items()
            if key.removeprefix("si/") in stages | {"mean"}
        }
