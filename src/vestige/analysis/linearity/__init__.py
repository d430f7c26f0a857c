"""`analysis=linearity`: how close the network is to a linear regime, at every snapshot of a run
(docs/science.md §5; the paper's own measure is unconfirmed, so three are offered,
chosen by `analysis.linearity.probes`).

Each snapshot t+d is paired with a base snapshot t (`analysis.linearity.base`: the chosen
snapshot before it, or one fixed snapshot); all probes use the same first
`analysis.linearity.images` images of the evaluation split, in eval mode, in fp32.

- `linearized` (per pair): the network linearised in its weights around t,
  f_lin(w_{t+d}) = f(w_t) + J(w_t)(w_{t+d} - w_t) (see `linearized.py`), against
  f(w_{t+d}): `agreement` (share of images whose argmax agrees), `relative_error`
  ||f_lin - f(w_{t+d})|| / ||f(w_{t+d})|| and `relative_change` ||f(w_{t+d}) - f(w_t)|| /
  ||f(w_{t+d})|| (Frobenius norms over all images' logits), and top-1 accuracy of f_lin
  (`acc_linearized`), f(w_{t+d}) (`acc`) and f(w_t) (`acc_base`).
- `linear_classifier` (per snapshot): Kalimeris et al.'s performance correlation
  mu_Y(F;L) = I(F;L) - I(F;L|Y) in bits, between the network's predicted labels F and those of
  a softmax regression on the flattened images L, given the labels Y (see
  `mutual_information.py`); the regression is trained once per run and cached.
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

from dataclasses import asdict
from typing import Any

from torch import nn

from vestige.analysis.base import AnalysisContext
from vestige.analysis.linearity.linear_classifier import (
    ClassifierSettings,
    load_cached,
    save_cached,
    train_linear_classifier,
)
from vestige.analysis.linearity.linearized import BUFFER_CHOICES
from vestige.analysis.linearity.probes import PAIR_PROBES, first_images, measure_linearity
from vestige.analysis.linearity.records import LinearityRecords, linearity_folder
from vestige.config import LINEARITY_PROBES, RunConfig
from vestige.data import unaugmented_training_split
from vestige.errors import ConfigError, failing
from vestige.results import Run, Snapshot
from vestige.seeding import derive_seed
from vestige.selectivity.units import measured_layers
from vestige.step import Clock, Step


class LinearityAnalysis:
    @staticmethod
    def check(cfg: RunConfig, run: Run) -> None:
        settings = cfg.analysis.linearity
        fail = failing("analysis.linearity")

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
        self.records = LinearityRecords(self.folder)
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
        step = Clock(run.info["iterations_per_epoch"]).iterations(self.settings.base)
        if step not in {s.step for s in run.snapshots}:
            steps = ", ".join(str(s.step) for s in run.snapshots)
            raise ConfigError(
                f"analysis.linearity.base={self.settings.base!r} is invalid: run "
                f"{run.path.name} has no snapshot at step {step}; it has steps {steps}"
            )
        base = run.snapshot_at(step)
        return {s.step: (base if s.step != step else None) for s in chosen}

    def done_steps(self) -> set[int]:
        return {
            step
            for step, record in self.records.read(self.record_settings).items()
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
        self.records.write(record)
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
        path, settings = self.records.classifier, self._classifier_settings()
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
        records = self.records.read(self.record_settings)
        self.records.write_tables([records[step] for step in sorted(records)], self.probes)


def _step_of(snapshot: Snapshot | None) -> int | None:
    return snapshot.step if snapshot is not None else None
