"""`analysis=ablation`: how much the network needs its most class-selective units, at each
snapshot (docs/science.md §4).

Per stage, the k most selective units of each block (a ResNet's or T-CNN's block outputs, a VGG's
ReLU outputs, a "block" being one ReLU: `selectivity/units.py`), ranked by that block's own SI at
the same snapshot, are silenced, against k random units (fixed seeded subsets, the same at every
snapshot, `random_draws` of them), for every k of the grid; `scope=block` silences one block at a
time, `scope=unit` one unit at a time (the `top_units` most selective and as many random ones).
The SI comes from the run's selectivity store when it holds this snapshot (and the settings need
nothing else), otherwise from one measurement pass (`selectivity/index.py` either way).

With `analysis.bn_stats=recompute` the ranking and the ablations use the snapshot's network with
re-estimated BatchNorm statistics (analysis/batchnorm.py), and the results get their own folder.

Files, in `ablation/` (other settings than the defaults, re-estimated BatchNorm statistics
included: `ablation-<hash>/`, with `settings.json`):
    step_NNNNNNNN-<stage>.csv   one snapshot and stage, written atomically when done
    ablation.csv                every row of every snapshot, rebuilt by `finish`
    auc.csv                     area under each normalised curve, mean and spread over draws
Columns are described in docs/outputs.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Subset

from vestige.analysis.ablation.ablate import ablatable, sweep
from vestige.analysis.ablation.plan import (
    AUC_COLUMNS,
    COLUMNS,
    UnitRanking,
    auc_rows,
    plan_stage,
)
from vestige.analysis.base import AnalysisContext, settings_results_folder
from vestige.config import AblationConfig, RunConfig, flatten, in_identity
from vestige.data import ImageLoader, image_loader
from vestige.errors import ConfigError, failing
from vestige.io import (
    atomic_write_json,
    atomic_write_text,
    read_rows,
    step_file,
    step_files,
    table_text,
)
from vestige.results import Run, Snapshot
from vestige.selectivity.index import measure_selectivity
from vestige.selectivity.store import SelectivityStore
from vestige.selectivity.units import UnitLayer, measured_layers

RESULTS = "ablation"


def identity_settings_of(settings: AblationConfig, bn_stats: str = "running") -> dict[str, Any]:
    """The settings that change the numbers (the schema marks the others, `stages` and
    `masks_per_forward`, as outside the identity), with how the snapshots' BatchNorm statistics
    were obtained (analysis/batchnorm.py: `bn_label`)."""
    flat = flatten(OmegaConf.to_container(OmegaConf.create(settings)))
    chosen = {key: value for key, value in flat.items() if in_identity(key, AblationConfig)}
    return {**chosen, "bn_stats": bn_stats}


def results_folder(run_path: Path, settings: AblationConfig, bn_stats: str = "running") -> Path:
    """`ablation/` for the default settings, `ablation-<hash of the others>/` otherwise."""
    return settings_results_folder(run_path, RESULTS, settings, bn_stats)


class AblationAnalysis:
    @staticmethod
    def check(cfg: RunConfig, run: Run) -> None:
        """The ablation settings, and that the run's units are channels it can silence."""
        settings = cfg.analysis.ablation
        fail = failing("analysis.ablation")

        network = _skeleton(run)
        if not ablatable(network):
            raise ConfigError(
                "analysis=ablation needs a network with convolutional units (it silences channels "
                f"of block outputs or VGG ReLUs); run={run.path} is {run.config.model.name}: "
                "choose a ResNet, T-CNN or VGG run"
            )
        stages = _stages(measured_layers(network, "block_output"))
        if settings.stages is not None and not set(settings.stages) <= set(stages):
            fail("stages", settings.stages, f"choose among {', '.join(stages)}, or null for all")
        if settings.stages is not None and not settings.stages:
            fail("stages", settings.stages, "name at least one stage, or null for all")
        if settings.k is not None and settings.k_fractions is not None:
            fail("k", settings.k, "set k (channel counts) or k_fractions, not both")
        if settings.k is not None and (not settings.k or min(settings.k) < 0):
            fix = "use channel counts >= 0 such as [0, 16, 64], or null: paper grid"
            fail("k", settings.k, fix)
        fractions = settings.k_fractions
        if fractions is not None and (not fractions or not all(0 <= f <= 1 for f in fractions)):
            fail("k_fractions", fractions, "use fractions of C in [0, 1] such as [0, 0.5, 1]")
        for key, choices in (
            ("value", ("zero", "mean")),
            ("scope", ("stage", "block", "unit")),
            ("split", ("same", "heldout")),
        ):
            if getattr(settings, key) not in choices:
                fail(key, getattr(settings, key), f"choose {' or '.join(choices)}")
        for key in ("random_draws", "top_units", "masks_per_forward"):
            if getattr(settings, key) < 1:
                fail(key, getattr(settings, key), "use 1 or more")

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx
        self.settings = ctx.cfg.analysis.ablation
        self.folder = results_folder(ctx.run.path, self.settings, ctx.bn_label)
        self.layers = measured_layers(_skeleton(ctx.run), "block_output")
        every = _stages(self.layers)
        self.stages = [s for s in every if s in (self.settings.stages or every)]
        self.rank_loader, self.eval_loader = ctx.eval_loader, ctx.eval_loader
        if self.settings.split == "heldout":
            halves = (_half(ctx.eval_loader, first, ctx.device) for first in (0, 1))
            self.rank_loader, self.eval_loader = halves

    def _file(self, step: int, stage: str) -> Path:
        return step_file(self.folder, step, f"-{stage}.csv")

    def _done(self, stage: str) -> set[int]:
        return set(step_files(self.folder, f"-{stage}.csv"))

    def done_steps(self) -> set[int]:
        return set.intersection(*(self._done(stage) for stage in self.stages))

    def analyze(self, snapshot: Snapshot, model: nn.Module) -> dict[str, float]:
        todo = [s for s in self.stages if not self._file(snapshot.step, s).exists()]
        layers = [layer for layer in self.layers if layer.stage in todo]
        ranking = self._ranking(snapshot, model, layers)
        plans = [
            plan_stage(
                [layer for layer in layers if layer.stage == stage],
                ranking,
                self.settings,
                self.ctx.run.config.seed,
                self.ctx.device,
            )
            for stage in todo
        ]
        counts = sweep(
            model,
            self.eval_loader,
            [plan.distinct for plan in plans],
            self.ctx.num_classes,
            self.ctx.device,
            self.settings.masks_per_forward,
        )
        settings = identity_settings_of(self.settings, self.ctx.bn_label)
        atomic_write_json(self.folder / "settings.json", settings)
        numbers = {}
        for plan, stage_counts in zip(plans, counts, strict=True):
            table = plan.table(snapshot, stage_counts, ranking)
            text = table_text(table, COLUMNS, digits=6)
            atomic_write_text(self._file(snapshot.step, plan.stage), text)
            numbers |= _progress_numbers(plan.stage, table)
        return numbers

    def _ranking(
        self, snapshot: Snapshot, model: nn.Module, layers: list[UnitLayer]
    ) -> UnitRanking:
        """From the selectivity store when it has this snapshot and nothing more is needed;
        otherwise measured on the ranking images (§2)."""
        selectivity = self.ctx.cfg.selectivity
        if self.settings.split == "same" and self.settings.value == "zero":
            store = SelectivityStore(self.ctx.run.path, selectivity, self.ctx.bn_label)
            stored = _stored_ranking(store, snapshot.step, layers)
            if stored is not None:
                return stored
        result = measure_selectivity(
            model, self.rank_loader, layers, self.ctx.num_classes, self.ctx.device, selectivity
        )
        return UnitRanking.measured(result)

    def finish(self) -> None:
        every = _stages(self.layers)
        rows = [
            row
            for step, stage in sorted((s, i) for i, st in enumerate(every) for s in self._done(st))
            for row in read_rows(self._file(step, every[stage]))
        ]
        if rows:
            atomic_write_text(self.folder / "ablation.csv", table_text(rows, COLUMNS, digits=6))
            auc = table_text(auc_rows(rows), AUC_COLUMNS, digits=6)
            atomic_write_text(self.folder / "auc.csv", auc)


def _skeleton(run: Run) -> nn.Module:
    """The run's network on the meta device: its modules without weights, all that says where
    its units are, built at no cost (a VGG-16 has 138M weights to initialise)."""
    with torch.device("meta"):
        return run.build_model()


def _stages(layers: list[UnitLayer]) -> list[str]:
    """The stages of `layers`, in forward order."""
    return list(dict.fromkeys(layer.stage for layer in layers))


def _stored_ranking(
    store: SelectivityStore, step: int, layers: list[UnitLayer]
) -> UnitRanking | None:
    if step not in store.steps():
        return None
    units, values = store.units(), store.snapshot(step)
    si, preferred = {}, {}
    for layer in layers:
        rows = units["layer"] == layer.name
        if rows.sum() != layer.channels:
            return None
        si[layer.name] = torch.from_numpy(values["si"][rows]).float()
        preferred[layer.name] = torch.from_numpy(values["preferred_class"][rows]).long()
    return UnitRanking(si, preferred, None)


def _half(loader: ImageLoader, first: int, device: torch.device) -> ImageLoader:
    """The even- (first=0) or odd-numbered (first=1) images of the loader's dataset."""
    half = Subset(loader.dataset, range(first, len(loader.dataset), 2))
    return image_loader(
        half, device, batch_size=loader.batch_size, num_workers=loader.num_workers
    )


def _progress_numbers(stage: str, table: list[dict[str, Any]]) -> dict[str, float]:
    """Mean AUC over blocks (scope=unit: mean normalised top-1) per condition, for the log."""
    numbers = {}
    for condition in ("selective", "random"):
        if table and table[0]["channel"] == "":
            values = [r["auc_top1"] for r in auc_rows(table) if r["condition"] == condition]
            name = "auc"
        else:
            values = [r["top1_norm"] for r in table if r["condition"] == condition]
            name = "top1_norm"
        numbers[f"{stage}/{name}_{condition}"] = float(np.mean(values))
    return numbers
