"""task=analyze: run one analysis over the chosen snapshots of a run, resumably; its summary
values then go to the run's experiment trackers (tasks/trackers.py)."""

from __future__ import annotations

import logging

from vestige.analysis import ANALYSES
from vestige.analysis.base import AnalysisContext, check_analysis
from vestige.analysis.batchnorm import estimation_batches
from vestige.config import RunConfig
from vestige.data import build_datasets, image_loader, unaugmented_training_split
from vestige.distributed import select_device
from vestige.errors import ConfigError, DamagedFile, invalid
from vestige.report.run_figures import RUN_FIGURES
from vestige.results import load_run
from vestige.rundir import RunDir, analysed_run
from vestige.seeding import derive_seed
from vestige.step import Clock
from vestige.tasks.trackers import log_analysis
from vestige.train.progress import Countdown

log = logging.getLogger(__name__)


def check_analyze(cfg: RunConfig) -> None:
    """The analysed run exists, an analysis is chosen, and it can run on that run."""
    run = analysed_run(cfg)
    if cfg.run is not None and not RunDir(run).config.is_file():
        raise ConfigError(
            f"run={cfg.run!r} is invalid: task=analyze needs run=<a run directory with config.yaml>"
        )
    if not RunDir(run).config.is_file():
        raise ConfigError(
            f"run=None is invalid: this config's run ({run}) has not been trained; train it "
            "first (the same command without task=analyze), or set run=<a run directory>"
        )
    if cfg.analysis is None or cfg.analysis.name not in ANALYSES:
        name = None if cfg.analysis is None else cfg.analysis.name
        raise invalid("analysis", name, f"choose one of {', '.join(sorted(ANALYSES))}")
    loaded = load_run(run)
    check_analysis(cfg.analysis, loaded)
    ANALYSES[cfg.analysis.name].check(cfg, loaded)


def analyze(cfg: RunConfig) -> None:
    """Measure the snapshots of a run (run=<dir>) with one analysis (analysis=<name>), resumably."""
    run = load_run(analysed_run(cfg))
    data = run.config.data
    splits = build_datasets(data, derive_seed(run.config.seed, "augment", scheme="sha256"))
    device = select_device(cfg.device)
    loader = image_loader(
        splits.eval, device, batch_size=cfg.analysis.batch_size, num_workers=data.num_workers
    )
    snapshots = run.snapshots
    if cfg.analysis.snapshots:
        clock = Clock(run.info["iterations_per_epoch"], snapshots[-1].step)
        chosen = set(clock.schedule(cfg.analysis.snapshots))
        snapshots = [s for s in snapshots if s.step in chosen]
    bn_batches = None
    if cfg.analysis.bn_stats == "recompute":
        bn_batches = estimation_batches(
            unaugmented_training_split(data),
            cfg.analysis.bn_images,
            run.config.trainer.batch_size,
            data.num_workers,
            device,
        )
    ctx = AnalysisContext(
        run, cfg, device, loader, splits.num_classes, splits.normalise, snapshots, bn_batches
    )
    analysis = ANALYSES[cfg.analysis.name](ctx)
    done = analysis.done_steps()
    todo = [s for s in snapshots if s.step not in done]
    print(
        f"{cfg.analysis.name}: {len(todo)} of {len(snapshots)} snapshots of {run.path.name} to do",
        flush=True,
    )
    countdown = Countdown(cfg.analysis.name, len(todo), cfg.trainer.progress)
    try:
        for snapshot in todo:
            countdown.begin(f"step {snapshot.step}")
            try:
                model = ctx.load_model(snapshot, on_batch=countdown.batch)
            except DamagedFile as err:
                if not cfg.analysis.skip_damaged:
                    raise
                countdown.finish(f"step {snapshot.step:>8d}  skipped: {err}")
                continue
            numbers = analysis.analyze(snapshot, model)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in numbers.items())
            countdown.finish(f"step {snapshot.step:>8d}  epoch {snapshot.epoch:7.3f}  {shown}")
    finally:
        countdown.close()
    analysis.finish()
    if (draw := RUN_FIGURES.get(cfg.analysis.name)) is not None:
        draw(analysis.folder, run.path.name)
    log_analysis(cfg, run, cfg.analysis.name, analysis.folder)
    print(f"{cfg.analysis.name}: done; results in {run.path}")
