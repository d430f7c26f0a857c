"""What every analysis is: something that measures one snapshot and knows which ones it has done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from vestige.analysis.batchnorm import bn_label, recompute_batchnorm_statistics
from vestige.results import Run, Snapshot


@dataclass
class AnalysisContext:
    """What an analysis may use: the run, the config of this command, the device, the run's
    evaluation split, its number of classes, the snapshots this command analyses (chosen by
    `analysis.snapshots`, done or not, in step order) and, with `analysis.bn_stats=recompute`,
    the training batches that BatchNorm statistics are re-estimated on."""

    run: Run
    cfg: Any
    device: torch.device
    eval_loader: DataLoader
    num_classes: int
    snapshots: list[Snapshot] = field(default_factory=list)
    bn_batches: DataLoader | None = None

    @property
    def bn_label(self) -> str:
        """`running` or `recompute[N]`: names the results folder of measurements that depend
        on BatchNorm statistics (analysis/batchnorm.py)."""
        return bn_label(self.cfg.analysis)

    def load_model(self, snapshot: Snapshot) -> nn.Module:
        """A snapshot's network on the device in eval mode, with its stored BatchNorm statistics
        or, with `analysis.bn_stats=recompute`, re-estimated ones."""
        model = self.run.load_model(snapshot).to(self.device)
        if self.bn_batches is None:
            return model
        return recompute_batchnorm_statistics(model, self.bn_batches, self.device)


class Analysis(Protocol):
    def __init__(self, ctx: AnalysisContext) -> None: ...

    def done_steps(self) -> set[int]:
        """Snapshots already analysed (their results are on disk)."""

    def analyze(self, snapshot: Snapshot, model: nn.Module) -> dict[str, float]:
        """Measure one snapshot (model in eval mode on the device), write its results
        atomically, return a few numbers for the progress line."""

    def finish(self) -> None:
        """After the last snapshot: rebuild the run's table(s) for this analysis."""
