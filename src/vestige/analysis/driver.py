"""task=analyze: run one analysis over the chosen snapshots of a run, resumably."""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import DataLoader

from vestige.analysis import ANALYSES
from vestige.analysis.base import AnalysisContext
from vestige.analysis.batchnorm import estimation_batches, has_batch_norm
from vestige.data import build_datasets, unaugmented_training_split
from vestige.errors import ConfigError
from vestige.results import load_run
from vestige.rundir import analysed_run
from vestige.step import snapshot_iterations
from vestige.train.loop import select_device
from vestige.train.seeding import derive_seed

log = logging.getLogger(__name__)


def analyze_run(cfg: Any) -> None:
    run = load_run(analysed_run(cfg))
    data = run.config.data
    splits = build_datasets(data, derive_seed(run.config.seed, "augment"))
    device = select_device(cfg.device)
    loader = DataLoader(splits.eval, cfg.analysis.batch_size, num_workers=data.num_workers)
    snapshots = run.snapshots
    if cfg.analysis.snapshots:
        ipe, last = run.info["iterations_per_epoch"], snapshots[-1].step
        chosen = set(snapshot_iterations(list(cfg.analysis.snapshots), ipe, last))
        snapshots = [s for s in snapshots if s.step in chosen]
    bn_batches = None
    if cfg.analysis.bn_stats == "recompute":
        if not has_batch_norm(run.build_model()):
            raise ConfigError(
                f"analysis.bn_stats=recompute is invalid: {run.path.name} has no BatchNorm "
                "layers to re-estimate; use analysis.bn_stats=running"
            )
        bn_batches = estimation_batches(
            unaugmented_training_split(data),
            cfg.analysis.bn_images,
            run.config.trainer.batch_size,
            data.num_workers,
        )
    ctx = AnalysisContext(run, cfg, device, loader, splits.num_classes, snapshots, bn_batches)
    analysis = ANALYSES[cfg.analysis.name](ctx)
    done = analysis.done_steps()
    todo = [s for s in snapshots if s.step not in done]
    print(
        f"{cfg.analysis.name}: {len(todo)} of {len(snapshots)} snapshots of {run.path.name} to do"
    )
    for snapshot in todo:
        model = ctx.load_model(snapshot)
        numbers = analysis.analyze(snapshot, model)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in numbers.items())
        print(f"step {snapshot.step:>8d}  epoch {snapshot.epoch:7.3f}  {shown}", flush=True)
    analysis.finish()
    print(f"{cfg.analysis.name}: done; results in {run.path}")
