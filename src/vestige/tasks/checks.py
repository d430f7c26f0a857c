"""Every check of a command's config, in one order, before any work: each section is checked by
the code that owns it, and this is the one place that composes those checks for each task."""

from __future__ import annotations

from vestige import data, models, tracking
from vestige.config import TASKS, RunConfig, describe_keys, unknown_key
from vestige.distributed import check_device
from vestige.errors import ConfigError, invalid
from vestige.report.collect import check_collect
from vestige.report.inputs import report_runs
from vestige.report.listing import check_list
from vestige.report.plotting import figure_style
from vestige.selectivity.checks import check_regularizer, check_selectivity
from vestige.tasks.analyze import check_analyze
from vestige.tasks.train import check_train
from vestige.train.checks import check_training


def check(cfg: RunConfig, world_size: int = 1, here: bool = True) -> None:
    """Raise a one-line ConfigError for the first bad value of the composed config; `here`: the
    command runs on this machine (not on the cluster node a launcher submits it to)."""
    unknown = unknown_key(cfg)
    if unknown:
        raise ConfigError(f"unknown config key '{unknown}': {describe_keys(unknown)}")
    if cfg.task not in TASKS:
        raise invalid("task", cfg.task, f"choose one of {', '.join(TASKS)}")
    if cfg.task == "train":
        check_train(cfg)
    if cfg.task in ("train", "analyze", "report"):
        tracking.check(cfg.logger)
    if cfg.task == "analyze":
        check_analyze(cfg)
    if cfg.task == "collect":
        check_collect(cfg)
    if cfg.task == "report":
        figure_style(cfg.report.style)
        report_runs(cfg)
    if cfg.task == "list":
        check_list(cfg)
    models.check(cfg.model)
    data.check(cfg.data)
    check_training(cfg, world_size)
    check_regularizer(cfg.regularizer, cfg.data)
    check_selectivity(cfg.selectivity)
    check_device(cfg.device, here)
