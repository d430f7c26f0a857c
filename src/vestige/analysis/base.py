"""What every analysis is: something that measures one snapshot and knows which ones it has done."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import OmegaConf
from torch import nn

from vestige.analysis.batchnorm import bn_label, has_batch_norm, recompute_batchnorm_statistics
from vestige.config import BN_STATS, AnalysisConfig, RunConfig, flatten, identity_settings
from vestige.data import ImageLoader
from vestige.data.transforms import Normalise
from vestige.errors import ConfigError, invalid
from vestige.io import settings_folder, short_hash
from vestige.results import Run, Snapshot
from vestige.step import check_snapshot_specs


@dataclass
class AnalysisContext:
    """What an analysis may use: the run, the config of this command, the device, the run's
    evaluation split, its number of classes and normalisation (what turns its pixels into the
    network's input), the snapshots this command analyses (chosen by
    `analysis.snapshots`, done or not, in step order) and, with `analysis.bn_stats=recompute`,
    the training batches that BatchNorm statistics are re-estimated on."""

    run: Run
    cfg: RunConfig  # this command's
    device: torch.device
    eval_loader: ImageLoader
    num_classes: int
    normalise: Normalise
    snapshots: list[Snapshot] = field(default_factory=list)
    bn_batches: ImageLoader | None = None

    @property
    def bn_label(self) -> str:
        """`running` or `recompute[N]`: names the results folder of measurements that depend
        on BatchNorm statistics (analysis/batchnorm.py)."""
        return bn_label(self.cfg.analysis)

    def load_model(
        self, snapshot: Snapshot, on_batch: Callable[[], None] | None = None
    ) -> nn.Module:
        """A snapshot's network on the device in eval mode, with its stored BatchNorm statistics
        or, with `analysis.bn_stats=recompute`, re-estimated ones; `on_batch` is called each
        time a batch enters the network's first layer (progress for a person watching)."""
        model = self.run.load_model(snapshot).to(self.device)
        if self.bn_batches is not None:
            model = recompute_batchnorm_statistics(model, self.bn_batches, self.device)
        if on_batch is not None:
            first = next(m for m in model.modules() if not list(m.children()))
            first.register_forward_pre_hook(lambda module, inputs: on_batch())
        return model


def settings_results_folder(run_path: Path, name: str, settings: Any, bn_stats: str) -> Path:
    """`name/` for an analysis's default settings (a dataclass section of `AnalysisConfig`),
    `name-<hash of the others>/` otherwise, re-estimated BatchNorm statistics included: results
    measured differently never share a folder."""
    flat = flatten(OmegaConf.to_container(OmegaConf.create(settings)))
    differs = identity_settings(flat, OmegaConf.get_type(settings))
    if bn_stats != "running":
        differs["bn_stats"] = bn_stats
    digest = short_hash(json.dumps(differs, sort_keys=True), 8) if differs else ""
    return settings_folder(run_path, name, digest)


def check_analysis(settings: AnalysisConfig, run: Run) -> None:
    """What every analysis reads of `analysis.*`: one-line ConfigError for the first bad value."""
    for key, fix in (("images", "use a positive number"), ("batch_size", "use a positive size")):
        if settings[key] <= 0:
            raise invalid(f"analysis.{key}", settings[key], fix)
    if settings.name != "attention" and settings.images != AnalysisConfig.images:
        fix = "it counts analysis=attention's images; the linearity probes take "
        fix += "analysis.linearity.images, the other analyses the whole eval split"
        raise invalid("analysis.images", settings.images, fix)
    if settings.bn_stats not in BN_STATS:
        raise invalid("analysis.bn_stats", settings.bn_stats, f"choose {' or '.join(BN_STATS)}")
    if settings.bn_images <= 0:
        raise invalid("analysis.bn_images", settings.bn_images, "use a positive number")
    check_snapshot_specs("analysis.snapshots", settings.snapshots or [])
    if settings.bn_stats == "recompute" and not has_batch_norm(run.build_model()):
        raise ConfigError(
            f"analysis.bn_stats=recompute is invalid: {run.path.name} has no BatchNorm layers to "
            "re-estimate; use analysis.bn_stats=running"
        )


class Analysis(Protocol):
    folder: Path  # where its results go, in the run directory

    def __init__(self, ctx: AnalysisContext) -> None: ...

    @staticmethod
    def check(cfg: RunConfig, run: Run) -> None:
        """One-line ConfigError for what this analysis cannot do with `cfg` on `run`, before
        any work (after `check_analysis`)."""

    def done_steps(self) -> set[int]:
        """Snapshots already analysed (their results are on disk)."""

    def analyze(self, snapshot: Snapshot, model: nn.Module) -> dict[str, float]:
        """Measure one snapshot (model in eval mode on the device), write its results
        atomically, return a few numbers for the progress line."""

    def finish(self) -> None:
        """After the last snapshot: rebuild the run's table(s) for this analysis."""
