"""`analysis=selectivity`: class selectivity of every unit at every snapshot of a run.

The same measurement as during training (docs/science.md §2), through the same
store, so snapshots measured while training are skipped and sub-epoch snapshots, or a run trained
with selectivity off, get filled in. With `analysis.bn_stats=recompute` each snapshot is measured
with re-estimated BatchNorm statistics (analysis/batchnorm.py), stored apart
(`selectivity-recompute/`).
"""

from __future__ import annotations

from torch import nn

from vestige.analysis.base import AnalysisContext
from vestige.config import RunConfig
from vestige.results import Run, Snapshot
from vestige.selectivity.index import SelectivityProbe
from vestige.selectivity.store import SelectivityStore
from vestige.selectivity.units import measured_layers
from vestige.train.evaluate import evaluate


class SelectivityAnalysis:
    @staticmethod
    def check(cfg: RunConfig, run: Run) -> None:
        """Nothing beyond the `selectivity` section's own checks."""

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx
        self.settings = ctx.cfg.selectivity
        self.store = SelectivityStore(ctx.run.path, self.settings, ctx.bn_label)
        self.folder = self.store.folder

    def done_steps(self) -> set[int]:
        return set(self.store.steps()) if (self.store.folder / "units.npz").exists() else set()

    def analyze(self, snapshot: Snapshot, model: nn.Module) -> dict[str, float]:
        layers = measured_layers(model, self.settings.units)
        probe = SelectivityProbe(model, layers, self.ctx.num_classes, self.settings)
        evaluate(model, self.ctx.eval_loader, self.ctx.device, [probe])
        result = probe.result()
        self.store.write_units(layers)
        self.store.write_snapshot(snapshot.step, snapshot.epoch, result)
        return {"si/mean": result.summary()["si/mean"]}

    def finish(self) -> None:
        if self.store.steps():
            self.store.rebuild_summary()
