"""The class selectivity index and its streaming measurement (docs/science.md §2).

Per-class sums and counts are accumulated on the device over an evaluation pass (all layers in one
pass, memory O(units x classes)), reduced over ranks once at the end, and only then divided into
class means: means, not sums, so unbalanced splits are measured correctly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vestige.config import SelectivityConfig
from vestige.distributed import all_reduce_sum
from vestige.precision import autocast, full_precision
from vestige.selectivity.units import UnitLayer, record_unit_activations, unit_table


def selectivity_index(class_means: Tensor, eps: float, present: Tensor | None = None) -> Tensor:
    """SI per unit of (units, classes) means: (mu_max - mu_rest) / (mu_max + mu_rest + eps).

    mu_rest is the mean of the other class means, not the second largest (§2). `present` (classes,
    bool) marks the classes that have samples: the others are left out of mu_max and mu_rest, since
    counting a mean of no samples as 0 would inflate SI; a mask, not indexing, so the regularizer
    never waits for the device. Differentiable; a dead unit gives 0, and so does every unit when
    fewer than two classes are present (no class to compare with).
    """
    if present is None:
        present = torch.ones(class_means.shape[-1], dtype=torch.bool, device=class_means.device)
    absent = ~present
    num_present = present.sum()
    mu_max = class_means.masked_fill(absent, float("-inf")).max(dim=-1).values
    mu_max = torch.where(num_present > 0, mu_max, 0.0)
    others = (num_present - 1).clamp(min=1)
    mu_rest = (class_means.masked_fill(absent, 0.0).sum(dim=-1) - mu_max) / others
    si = (mu_max - mu_rest) / (mu_max + mu_rest + eps)
    return torch.where(num_present > 1, si, 0.0)


def class_sums(
    acts: Mapping[str, Tensor], targets: Tensor, num_classes: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Per-layer (classes, units) activation sums and the (classes,) sample counts of a batch.

    one_hot(y)^T @ acts (§2 "Efficient form"): a matmul, deterministic on GPUs (unlike atomic
    index_add_). Sums are at least float32 so low-precision (AMP) activations do not lose mass.
    """
    device = next(iter(acts.values())).device
    one_hot = F.one_hot(targets.to(device=device, dtype=torch.long), num_classes)
    sums = {}
    for name, layer_acts in acts.items():
        dtype = torch.promote_types(layer_acts.dtype, torch.float32)
        sums[name] = one_hot.to(dtype).T @ layer_acts.to(dtype)
    return sums, one_hot.sum(dim=0)


def class_means(sums: Tensor, counts: Tensor) -> Tensor:
    """(units, classes) means of (classes, units) sums: divided by the counts, not sums (§2).

    A class without samples gets 0 rather than 0/0, whose NaN would poison gradients; mask it with
    `present=counts > 0` in `selectivity_index`.
    """
    return (sums / counts.clamp(min=1).to(sums).unsqueeze(1)).T


def stage_means(
    layer_values: Mapping[str, Tensor], layers: Sequence[UnitLayer]
) -> dict[str, Tensor]:
    """Each stage's mean of its layers' values, in forward order (§2 "Reported aggregates")."""
    by_stage: dict[str, list[Tensor]] = {}
    for layer in layers:
        by_stage.setdefault(layer.stage, []).append(layer_values[layer.name])
    return {stage: torch.stack(values).mean() for stage, values in by_stage.items()}


def network_mean(stage_values: Mapping[str, Tensor]) -> Tensor:
    """Mean of the stage means: every stage counts equally, whatever its number of blocks."""
    return torch.stack(list(stage_values.values())).mean()


class ClassConditionalStats:
    """Per-class activation sums of every measured layer and per-class counts, streamed.

    Every update carries every layer, so one `counts` vector serves all layers. Tensors live on
    the device of the first update's activations.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.sums: dict[str, Tensor] = {}
        self.counts = torch.zeros(num_classes, dtype=torch.long)

    def update(self, acts: Mapping[str, Tensor], targets: Tensor) -> None:
        """Add a batch of (B, units) activations per layer with their (B,) class targets."""
        if self.sums and acts.keys() != self.sums.keys():
            raise ValueError(f"update has layers {sorted(acts)}, expected {sorted(self.sums)}")
        sums, counts = class_sums(acts, targets, self.num_classes)
        for name, layer_sums in sums.items():
            self.sums[name] = self.sums[name].add_(layer_sums) if name in self.sums else layer_sums
        self.counts = counts + self.counts.to(counts.device)

    def all_reduce(self) -> ClassConditionalStats:
        """The statistics summed over all ranks, on every rank; this object is left unchanged."""
        total = ClassConditionalStats(self.num_classes)
        total.sums = {name: all_reduce_sum(sums.clone()) for name, sums in self.sums.items()}
        total.counts = all_reduce_sum(self.counts.clone())
        return total

    def class_means(self) -> dict[str, Tensor]:
        """(units, classes) means per layer; NaN for a class without samples (it has no mean)."""
        absent = self.counts == 0
        return {
            name: class_means(sums, self.counts).masked_fill(absent, float("nan"))
            for name, sums in self.sums.items()
        }


@dataclass
class SelectivityResult:
    """Selectivity of every measured unit, with the class statistics it came from (on the CPU)."""

    layers: list[UnitLayer]
    si: dict[str, Tensor]  # (units,) per layer
    preferred_class: dict[str, Tensor]  # (units,) the class with the largest mean
    class_means: dict[str, Tensor]  # (units, classes); NaN where a class had no samples
    counts: Tensor  # (classes,)

    @classmethod
    def from_stats(
        cls, stats: ClassConditionalStats, layers: Sequence[UnitLayer], eps: float
    ) -> SelectivityResult:
        """SI over the classes that have samples (see `selectivity_index`)."""
        present = stats.counts > 0
        si, preferred = {}, {}
        for layer in layers:
            means = class_means(stats.sums[layer.name], stats.counts)
            si[layer.name] = selectivity_index(means, eps, present).cpu()
            preferred[layer.name] = means.masked_fill(~present, float("-inf")).argmax(dim=1).cpu()
        means = {name: m.cpu() for name, m in stats.class_means().items()}
        return cls(list(layers), si, preferred, means, stats.counts.cpu())

    def summary(self) -> dict[str, float]:
        """`si/<layer>`: mean of its units; `si/<stage>`: of its layers; `si/mean`: of stages."""
        per_layer = {layer.name: self.si[layer.name].mean() for layer in self.layers}
        per_stage = stage_means(per_layer, self.layers)
        rows = {**per_layer, **per_stage, "mean": network_mean(per_stage)}
        return {f"si/{name}": float(value) for name, value in rows.items()}

    def unit_table(self) -> dict[str, np.ndarray]:
        """One row per unit: layer, stage, block, channel, si, preferred_class."""
        table = unit_table(self.layers)
        table["si"] = torch.cat([self.si[layer.name] for layer in self.layers]).numpy()
        table["preferred_class"] = torch.cat(
            [self.preferred_class[layer.name] for layer in self.layers]
        ).numpy()
        return table


class SelectivityProbe:
    """Selectivity measured alongside an ordinary evaluation pass, at the cost of its hooks only.

    Usage::

        with SelectivityProbe(model, layers, num_classes, cfg.selectivity) as probe:
            for images, targets in loader:
                logits = model(images)
                probe.after_forward(targets)
        result = probe.result()  # reduced over ranks

    `settings` (the `selectivity` config section, whose defaults are the only ones): `eps`,
    `negative` (how negative unit outputs, GELU's, are treated: see `unit_activations`) and
    `precision`, which the evaluation pass carrying the probe runs at (train/evaluate.py).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[UnitLayer],
        num_classes: int,
        settings: SelectivityConfig,
    ) -> None:
        self.model, self.layers = model, list(layers)
        self.eps, self.negative = settings.eps, settings.negative
        self.precision: str | None = settings.precision
        self.stats = ClassConditionalStats(num_classes)
        self._hooks = ExitStack()
        self._acts: dict[str, Tensor] = {}

    def __enter__(self) -> SelectivityProbe:
        self._acts = self._hooks.enter_context(
            record_unit_activations(self.model, self.layers, self.negative)
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._hooks.close()

    def after_forward(self, targets: Tensor) -> None:
        """Count the forward pass just made inside the with-block, whose labels are `targets`."""
        if len(self._acts) != len(self.layers):
            raise RuntimeError("after_forward needs a forward pass of the model inside the probe")
        self.stats.update(self._acts, targets)
        self._acts.clear()

    def result(self) -> SelectivityResult:
        """SI from the statistics of all ranks (a collective: call it on every rank)."""
        return SelectivityResult.from_stats(self.stats.all_reduce(), self.layers, self.eps)


def measure_selectivity(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    layers: Sequence[UnitLayer],
    num_classes: int,
    device: torch.device,
    settings: SelectivityConfig,
) -> SelectivityResult:
    """SI over a whole loader in eval mode without gradients (§2), at `settings.precision`
    (exact fp32, or bf16 autocast); the model's mode is restored."""
    was_training = model.training
    model.eval()
    probe = SelectivityProbe(model, layers, num_classes, settings)
    exact = full_precision() if settings.precision == "fp32" else nullcontext()
    try:
        with torch.no_grad(), exact, probe:
            for inputs, targets in loader:
                with autocast(device, settings.precision == "bf16"):
                    model(inputs.to(device))
                probe.after_forward(targets)
    finally:
        model.train(was_training)
    return probe.result()
