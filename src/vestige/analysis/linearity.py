"""`analysis=linearity`: how close the network is to a linear regime, at every snapshot of a run
(reference/class-selectivity.md §5; the paper's own measure is unconfirmed, so three are offered,
chosen by `analysis.linearity.probes`).

Each snapshot t+d is paired with a base snapshot t (`analysis.linearity.base`: the chosen
snapshot before it, or one fixed snapshot); all probes use the same first
`analysis.linearity.images` images of the evaluation split, in eval mode, in fp32.

- `linearized` (per pair): the network linearised in its weights around t,
  f_lin(w_{t+d}) = f(w_t) + J(w_t)(w_{t+d} - w_t) (see `vestige.analysis.linearized`), against
  f(w_{t+d}): `agreement` (share of images whose argmax agrees), `relative_error`
  ||f_lin - f(w_{t+d})|| / ||f(w_{t+d})|| and `relative_change` ||f(w_{t+d}) - f(w_t)|| /
  ||f(w_{t+d})|| (Frobenius norms over all images' logits), and top-1 accuracy of f_lin
  (`acc_linearized`), f(w_{t+d}) (`acc`) and f(w_t) (`acc_base`).
- `linear_classifier` (per snapshot): Kalimeris et al.'s performance correlation
  mu_Y(F;L) = I(F;L) - I(F;L|Y) in bits, between the network's predicted labels F and those of
  a softmax regression on the flattened images L, given the labels Y (see
  `vestige.analysis.mutual_information`); the regression is trained once per run and cached.
- `relu_flips` (per pair): the fraction of on/off states (output > 0, per element: channel and
  position, or token and hidden unit) at the measured layers (`selectivity.units`) that differ
  between t and t+d on the same images; over all layers and per stage, every state counting
  once. For GELU units (ConViT/DeiT) "on" is a positive output, i.e. a positive input.

With `analysis.bn_stats=recompute` both snapshots of a pair use re-estimated BatchNorm
statistics (analysis/batchnorm.py), and the files go to `linearity-recompute/`.

Files in `linearity/`: `step_N.json` per snapshot (the settings it was measured with, its base,
the numbers); `linearized.csv`, `linear_classifier.csv`, `relu_flips.csv` rebuilt by `finish`,
one row per snapshot (pair); `linear_classifier.pt` the cached regression. A snapshot counts as
done when its file has the current settings and base; the base snapshot itself has no pair row.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vestige.analysis.base import AnalysisContext
from vestige.analysis.linear_classifier import (
    ClassifierSettings,
    load_cached,
    save_cached,
    train_linear_classifier,
)
from vestige.analysis.linearized import BUFFER_CHOICES, linear_term, weight_step
from vestige.analysis.mutual_information import performance_correlation
from vestige.config import LINEARITY_PROBES
from vestige.data import unaugmented_training_split
from vestige.errors import ConfigError, invalid
from vestige.io import atomic_write_text, settings_folder
from vestige.precision import full_precision
from vestige.results import Run, Snapshot
from vestige.seeding import derive_seed
from vestige.selectivity.units import UnitLayer, measured_layers, record_unit_states
from vestige.step import Step

PAIR_PROBES = ("linearized", "relu_flips")


def linearity_folder(run_path: Path, bn_stats: str = "running") -> Path:
    """`linearity/`, or `linearity-<bn_stats>/` for snapshots with re-estimated BatchNorm
    statistics (analysis/batchnorm.py: `bn_label`)."""
    return settings_folder(run_path, "linearity", bn_stats if bn_stats != "running" else "")


_STEP_FILE = re.compile(r"^step_(\d{8})\.json$")


class LinearizedTally:
    """Sums over images for the `linearized` probe, kept on the device."""

    def __init__(self, device: torch.device) -> None:
        # images, agreeing argmax, ||f_lin - f||^2, ||f||^2, ||f - f_base||^2, three top-1 counts
        self.sums = torch.zeros(8, dtype=torch.float64, device=device)

    def add(self, targets: Tensor, logits: Tensor, base_logits: Tensor, change: Tensor) -> None:
        linearized = base_logits + change
        predicted = logits.argmax(1)
        self.sums += torch.stack(
            [
                torch.tensor(float(len(targets)), device=logits.device),
                (linearized.argmax(1) == predicted).sum(),
                (linearized - logits).square().sum(),
                logits.square().sum(),
                (logits - base_logits).square().sum(),
                (linearized.argmax(1) == targets).sum(),
                (predicted == targets).sum(),
                (base_logits.argmax(1) == targets).sum(),
            ]
        ).double()

    def result(self) -> dict[str, float]:
        images, agree, error, norm, change, lin, net, base = self.sums.tolist()
        return {
            "agreement": agree / images,
            "relative_error": (error / norm) ** 0.5,
            "relative_change": (change / norm) ** 0.5,
            "acc_linearized": lin / images,
            "acc": net / images,
            "acc_base": base / images,
        }


class ReluFlipTally:
    """Flipped and total on/off states per stage, kept on the device."""

    def __init__(self, layers: list[UnitLayer], device: torch.device) -> None:
        self.stage_of = {layer.name: layer.stage for layer in layers}
        self.stages = list(dict.fromkeys(self.stage_of.values()))
        self.flips = torch.zeros(len(self.stages), dtype=torch.float64, device=device)
        self.states = torch.zeros(len(self.stages), dtype=torch.float64, device=device)

    def add(self, states: dict[str, Tensor], base_states: dict[str, Tensor]) -> None:
        for name, on in states.items():
            stage = self.stages.index(self.stage_of[name])
            self.flips[stage] += (on != base_states[name]).sum()
            self.states[stage] += on.numel()

    def result(self) -> dict[str, float]:
        flips, states = self.flips.tolist(), self.states.tolist()
        per_stage = {
            f"flip_fraction/{stage}": f / n
            for stage, f, n in zip(self.stages, flips, states, strict=True)
        }
        return {"flip_fraction": sum(flips) / sum(states), **per_stage}


def first_images(
    loader: Iterable[tuple[Tensor, Tensor]], images: int | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of `loader` cut to its first `images` images (all of them for None)."""
    seen = 0
    for inputs, targets in loader:
        if images is not None:
            inputs, targets = inputs[: images - seen], targets[: images - seen]
        seen += len(targets)
        if len(targets):
            yield inputs, targets
        if images is not None and seen >= images:
            return


@torch.no_grad()
def measure_linearity(
    model: nn.Module,
    base: nn.Module | None,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    probes: list[str],
    layers: list[UnitLayer],
    classifier: nn.Module | None = None,
    buffers: str = "expand",
) -> dict[str, Any]:
    """The chosen probes for one snapshot `model` (and its `base`, None for none): a dict of
    probe name -> its numbers, plus `images`. Pair probes are left out without a base."""
    pairs = [p for p in probes if p in PAIR_PROBES] if base is not None else []
    step = weight_step(base, model, buffers) if "linearized" in pairs else {}
    watched = layers if "relu_flips" in pairs else []
    linearized, flips = LinearizedTally(device), ReluFlipTally(watched, device)
    network, linear, labels = [], [], []
    images = 0
    with full_precision():
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            images += len(targets)
            with record_unit_states(model, watched) as states:
                logits = model(inputs)
            if pairs:
                with record_unit_states(base, watched) as base_states:
                    base_logits = base(inputs)
                flips.add(states, base_states)
            if "linearized" in pairs:
                linearized.add(targets, logits, base_logits, linear_term(base, step, inputs))
            if "linear_classifier" in probes:
                network.append(logits.argmax(1).cpu())
                linear.append(classifier(inputs.flatten(1)).argmax(1).cpu())
                labels.append(targets.cpu())
    if not images:
        raise ConfigError("analysis=linearity needs evaluation images: the eval split is empty")
    result: dict[str, Any] = {"images": images}
    if "linearized" in pairs:
        result["linearized"] = linearized.result()
    if "relu_flips" in pairs:
        result["relu_flips"] = flips.result()
    if "linear_classifier" in probes:
        f, lin, y = (torch.cat(column).numpy() for column in (network, linear, labels))
        correlation = asdict(performance_correlation(f, lin, y))
        accuracy = {"acc": float((f == y).mean()), "acc_linear": float((lin == y).mean())}
        result["linear_classifier"] = {**correlation, **accuracy}
    return result


class LinearityAnalysis:
    @staticmethod
    def check(cfg: Any, run: Run) -> None:
        settings = cfg.analysis.linearity

        def fail(key: str, value: Any, fix: str) -> None:
            raise invalid(f"analysis.linearity.{key}", value, fix)

        probes = list(settings.probes)
        if not probes or not set(probes) <= set(LINEARITY_PROBES) or len(set(probes)) < len(probes):
            fail("probes", probes, f"choose one or more of {', '.join(LINEARITY_PROBES)}")
        if settings.images is not None and settings.images <= 0:
            fail("images", settings.images, "use a positive number of images, or null for all")
        if settings.base != "previous":
            try:
                Step.parse(settings.base)
            except ValueError as err:
                fail("base", settings.base, f"use previous, or a snapshot's step: {err}")
        if settings.buffers not in BUFFER_CHOICES:
            fail("buffers", settings.buffers, f"choose {' or '.join(BUFFER_CHOICES)}")
        c = settings.classifier
        for key in ("epochs", "batch_size"):
            if getattr(c, key) <= 0:
                fail(f"classifier.{key}", getattr(c, key), "use a positive integer")
        if c.lr <= 0:
            fail("classifier.lr", c.lr, "use a positive learning rate such as 1e-3")
        if c.weight_decay < 0:
            fail("classifier.weight_decay", c.weight_decay, "use 0 or a positive value")
        if c.train_images is not None and c.train_images <= 0:
            fix = "use a positive number, or null for all"
            fail("classifier.train_images", c.train_images, fix)

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx
        self.settings = ctx.cfg.analysis.linearity
        self.probes = [p for p in LINEARITY_PROBES if p in self.settings.probes]
        self.folder = linearity_folder(ctx.run.path, ctx.bn_label)
        self.bases = self._bases()
        self.record_settings = self._record_settings()
        self._kept: tuple[int, nn.Module] | None = None  # the last base model loaded or seen
        self._classifier: nn.Module | None = None

    def _classifier_settings(self) -> ClassifierSettings:
        c = self.settings.classifier
        seed = derive_seed(self.ctx.run.config.seed, "linear_classifier", scheme="sha256")
        return ClassifierSettings(
            c.epochs, c.lr, c.weight_decay, c.batch_size, c.train_images, seed
        )

    def _record_settings(self) -> dict[str, Any]:
        """What a snapshot's numbers depend on, besides its base: stored with them."""
        settings: dict[str, Any] = {"probes": self.probes, "images": self.settings.images}
        if "linearized" in self.probes:
            settings["buffers"] = self.settings.buffers
        if "relu_flips" in self.probes:
            settings["units"] = self.ctx.cfg.selectivity.units
        if "linear_classifier" in self.probes:
            settings["classifier"] = asdict(self._classifier_settings())
        return settings

    def _bases(self) -> dict[int, Snapshot | None]:
        """The base snapshot of each chosen snapshot (None: no pair)."""
        chosen = self.ctx.snapshots
        if not set(self.probes) & set(PAIR_PROBES):
            return {s.step: None for s in chosen}
        if self.settings.base == "previous":
            return {s.step: (chosen[i - 1] if i else None) for i, s in enumerate(chosen)}
        run = self.ctx.run
        step = Step.parse(self.settings.base).to_iterations(run.info["iterations_per_epoch"])
        if step not in {s.step for s in run.snapshots}:
            steps = ", ".join(str(s.step) for s in run.snapshots)
            raise ConfigError(
                f"analysis.linearity.base={self.settings.base!r} is invalid: run "
                f"{run.path.name} has no snapshot at step {step}; it has steps {steps}"
            )
        base = run.snapshot_at(step)
        return {s.step: (base if s.step != step else None) for s in chosen}

    def _records(self) -> dict[int, dict[str, Any]]:
        """Every stored snapshot measured with the current settings, by step."""
        if not self.folder.is_dir():
            return {}
        records = {}
        for path in sorted(self.folder.iterdir()):
            if _STEP_FILE.match(path.name):
                record = json.loads(path.read_text())
                if record["settings"] == self.record_settings:
                    records[record["step"]] = record
        return records

    def done_steps(self) -> set[int]:
        return {
            step
            for step, record in self._records().items()
            if step in self.bases and record["base_step"] == _step_of(self.bases[step])
        }

    def analyze(self, snapshot: Snapshot, model: nn.Module) -> dict[str, float]:
        base = self.bases[snapshot.step]
        result = measure_linearity(
            model,
            self._base_model(base) if base is not None else None,
            first_images(self.ctx.eval_loader, self.settings.images),
            self.ctx.device,
            self.probes,
            measured_layers(model, self.ctx.cfg.selectivity.units),
            self._linear_classifier() if "linear_classifier" in self.probes else None,
            self.settings.buffers,
        )
        record = {
            "step": snapshot.step,
            "epoch": snapshot.epoch,
            "base_step": _step_of(base),
            "base_epoch": base.epoch if base is not None else None,
            "settings": self.record_settings,
            **result,
        }
        text = json.dumps(record, indent=2)  # in the order written: the tables' column order
        atomic_write_text(self.folder / f"step_{snapshot.step:08d}.json", text + "\n")
        if self.settings.base == "previous":
            self._kept = (snapshot.step, model)
        shown = {
            "agreement": result.get("linearized", {}).get("agreement"),
            "rel_error": result.get("linearized", {}).get("relative_error"),
            "mu": result.get("linear_classifier", {}).get("mu"),
            "flips": result.get("relu_flips", {}).get("flip_fraction"),
        }
        return {key: value for key, value in shown.items() if value is not None}

    def _base_model(self, base: Snapshot) -> nn.Module:
        """The base network: the one analysed just before when it is the base, else loaded."""
        if self._kept is None or self._kept[0] != base.step:
            self._kept = (base.step, self.ctx.load_model(base))
        return self._kept[1]

    def _linear_classifier(self) -> nn.Module:
        """The run's cached softmax regression, trained first if there is none for the current
        settings (on the training split without augmentation)."""
        if self._classifier is not None:
            return self._classifier
        path, settings = self.folder / "linear_classifier.pt", self._classifier_settings()
        self._classifier = load_cached(path, settings, self.ctx.device)
        if self._classifier is None:
            data = self.ctx.run.config.data
            train = unaugmented_training_split(data)
            count = min(len(train), settings.train_images or len(train))
            print(f"linearity: training the linear classifier on {count} images", flush=True)
            self._classifier = train_linear_classifier(
                train, self.ctx.num_classes, settings, self.ctx.device, data.num_workers
            )
            save_cached(path, self._classifier, settings)
        return self._classifier

    def finish(self) -> None:
        records = sorted(self._records().values(), key=lambda r: r["step"])
        for probe in self.probes:
            rows = [_row(record, probe) for record in records if probe in record]
            if rows:
                atomic_write_text(self.folder / f"{probe}.csv", _csv(rows))


def _step_of(snapshot: Snapshot | None) -> int | None:
    return snapshot.step if snapshot is not None else None


def _row(record: dict[str, Any], probe: str) -> dict[str, Any]:
    pair = {"base_step": record["base_step"], "base_epoch": record["base_epoch"]}
    return {
        "step": record["step"],
        "epoch": record["epoch"],
        **(pair if probe in PAIR_PROBES else {}),
        "images": record["images"],
        **record[probe],
    }


def _csv(rows: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows
    )
    return text.getvalue()
