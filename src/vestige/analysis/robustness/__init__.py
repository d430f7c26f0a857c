"""`analysis=robustness`: corruption and adversarial robustness of every snapshot, and the
dimensionality of the representation change a perturbation causes (docs/science.md §7;
Leavitt & Morcos' robustness paper, ../shared/reference/class-selectivity.md §7).

Per snapshot, `robustness/step_N.json` (measure.py: `measure_robustness`). Per run, rebuilt by
`finish`: `summary.csv` (clean and mean corruption accuracy, relative corruption error, adversarial
accuracy per attack and epsilon), `corruptions.csv` (accuracy per corruption and severity),
`adversarial.csv` and `change.csv` (participation ratio and PCA count per stage). Other settings
than the defaults store apart, in `robustness-<hash>/`, as do re-estimated BatchNorm statistics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from vestige.analysis.base import AnalysisContext, settings_results_folder
from vestige.analysis.robustness.attacks import NORMS
from vestige.analysis.robustness.corruptions import CORRUPTIONS, SEVERITIES
from vestige.analysis.robustness.measure import ATTACKS, measure_robustness
from vestige.config import RobustnessConfig, RunConfig
from vestige.errors import ConfigError, failing
from vestige.io import (
    atomic_write_json,
    atomic_write_text,
    step_file,
    step_files,
    table_text,
)
from vestige.results import Run, Snapshot
from vestige.selectivity.units import UnitLayer, measured_layers

RESULTS = "robustness"


def robustness_folder(run_path: Path, settings: RobustnessConfig, bn_stats: str) -> Path:
    """`robustness/` for the default settings, `robustness-<hash of the others>/` otherwise."""
    return settings_results_folder(run_path, RESULTS, settings, bn_stats)


def last_block_of_each_stage(model: nn.Module, stages: list[str] | None) -> list[UnitLayer]:
    """The layer whose output stands for each stage (its last block's), in forward order."""
    last: dict[str, UnitLayer] = {}
    for layer in measured_layers(model):
        last[layer.stage] = layer
    return [layer for stage, layer in last.items() if stages is None or stage in stages]


class RobustnessAnalysis:
    @staticmethod
    def check(cfg: RunConfig, run: Run) -> None:
        """Every setting of `analysis.robustness`, and that the run's images have pixels."""
        s = cfg.analysis.robustness
        fail = failing("analysis.robustness")
        if run.config.data.name == "synthetic":
            raise ConfigError(
                f"analysis=robustness needs images with pixels in [0, 1]; {run.path.name} "
                "trained on data=synthetic, whose images have none: analyse a run on real images"
            )
        for key in ("images", "attack_images"):
            if s[key] is not None and s[key] <= 0:
                fail(key, s[key], "use a positive number of images, or null for all")
        unknown = [name for name in s.corruptions or [] if name not in CORRUPTIONS]
        if unknown:
            fail("corruptions", unknown[0], f"choose from {', '.join(CORRUPTIONS)}")
        if not s.severities or any(severity not in SEVERITIES for severity in s.severities):
            fail("severities", list(s.severities), "choose from 1, 2, 3, 4, 5")
        if any(attack not in ATTACKS for attack in s.attacks):
            fail("attacks", list(s.attacks), f"choose from {', '.join(ATTACKS)}, or []")
        if s.norm not in NORMS:
            fail("norm", s.norm, f"choose {' or '.join(NORMS)}")
        if any(epsilon < 0 for epsilon in s.epsilons) or (s.attacks and not s.epsilons):
            fail("epsilons", list(s.epsilons), "give one or more radii >= 0 (pixels in [0, 1])")
        if s.steps < 0:
            fail("steps", s.steps, "use 0 or more PGD steps")
        if s.step_size is not None and s.step_size <= 0:
            fail("step_size", s.step_size, "use a positive step, or null for 2.5 epsilon / steps")
        if s.change not in (*ATTACKS, *CORRUPTIONS):
            fail("change", s.change, f"choose {' or '.join(ATTACKS)}, or a corruption")
        if s.change_epsilon < 0:
            fail("change_epsilon", s.change_epsilon, "use a radius >= 0")
        if s.change_severity not in SEVERITIES:
            fail("change_severity", s.change_severity, "choose from 1, 2, 3, 4, 5")
        if s.change_images < 2:
            fail("change_images", s.change_images, "use at least 2 images")
        stages = {layer.stage for layer in measured_layers(run.build_model())}
        unknown = [stage for stage in s.change_stages or [] if stage not in stages]
        if unknown:
            fail("change_stages", unknown[0], f"choose from {', '.join(sorted(stages))}")

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx
        self.settings = ctx.cfg.analysis.robustness
        self.folder = robustness_folder(ctx.run.path, self.settings, ctx.bn_label)

    def done_steps(self) -> set[int]:
        return set(step_files(self.folder, ".json"))

    def analyze(self, snapshot: Snapshot, model: nn.Module) -> dict[str, float]:
        layers = last_block_of_each_stage(model, self.settings.change_stages)
        result = measure_robustness(
            model, self.ctx.eval_loader, self.ctx.normalise, self.ctx.device, self.settings, layers
        )
        record = {"step": snapshot.step, "epoch": snapshot.epoch, **result}
        atomic_write_json(step_file(self.folder, snapshot.step, ".json"), record)
        shown = {
            "clean": result["clean_accuracy"],
            "corrupted": result["mean_corruption_accuracy"],
        }
        for attack, accuracy in result.get("adversarial_accuracy", {}).items():
            shown[f"{attack}@{self.settings.epsilons[-1]:.3g}"] = accuracy[-1]
        return shown

    def finish(self) -> None:
        records = [self._load(step) for step in step_files(self.folder, ".json")]
        if not records:
            return
        for name, (rows, columns) in tables(records, self.settings).items():
            atomic_write_text(self.folder / f"{name}.csv", table_text(rows, columns, digits=6))

    def _load(self, step: int) -> dict[str, Any]:
        return json.loads(step_file(self.folder, step, ".json").read_text())


def tables(
    records: list[dict[str, Any]], settings: RobustnessConfig
) -> dict[str, tuple[list[dict[str, Any]], tuple[str, ...]]]:
    """The per-run tables of the step records: name -> (rows, columns)."""
    summary, corruptions, adversarial, change = [], [], [], []
    epsilons = list(settings.epsilons)
    for r in records:
        at = {"step": r["step"], "epoch": r["epoch"]}
        row = {
            **at,
            "clean_accuracy": r["clean_accuracy"],
            "mean_corruption_accuracy": r["mean_corruption_accuracy"],
            "relative_corruption_error": r["relative_corruption_error"],
        }
        for attack, accuracies in r.get("adversarial_accuracy", {}).items():
            for epsilon, accuracy in zip(epsilons, accuracies, strict=True):
                row[f"{attack}@{epsilon:.6g}"] = accuracy
                adversarial.append(
                    {**at, "attack": attack, "norm": settings.norm, "epsilon": epsilon,
                     "accuracy": accuracy}
                )
        summary.append(row)
        for name, accuracies in r["corruption_accuracy"].items():
            for severity, accuracy in zip(settings.severities, accuracies, strict=True):
                corruptions.append(
                    {**at, "corruption": name, "severity": severity, "accuracy": accuracy}
                )
        for stage, values in r["representation_change"].items():
            change.append({**at, "stage": stage, **values})
    found = {
        "summary": (summary, tuple(summary[0])),
        "corruptions": (corruptions, ("step", "epoch", "corruption", "severity", "accuracy")),
        "change": (change, ("step", "epoch", "stage", "participation_ratio", "components_90")),
    }
    if adversarial:
        columns = ("step", "epoch", "attack", "norm", "epsilon", "accuracy")
        found["adversarial"] = (adversarial, columns)
    return found
