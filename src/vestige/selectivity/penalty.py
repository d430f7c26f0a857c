"""The differentiable selectivity R of one mini-batch, for loss = CE - alpha * R
(docs/science.md §3). Only the math: schedules and loop hooks live elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from vestige.distributed import all_reduce_sum, world_size
from vestige.errors import ConfigError
from vestige.selectivity.index import (
    class_means,
    class_sums,
    network_mean,
    selectivity_index,
    stage_means,
)
from vestige.selectivity.units import UnitLayer


def regularized_layers(
    layers: Sequence[UnitLayer], stages: Sequence[str] | None = None
) -> list[UnitLayer]:
    """The layers of `stages`; by default every stage but the last, as Ranadive et al. (§3)."""
    names = list(dict.fromkeys(layer.stage for layer in layers))
    chosen = names[:-1] if stages is None else list(stages)
    unknown = [stage for stage in chosen if stage not in names]
    if unknown or not chosen:
        raise ConfigError(f"selectivity stages {chosen} must be a non-empty subset of {names}")
    return [layer for layer in layers if layer.stage in chosen]


def selectivity_penalty(
    acts: Mapping[str, Tensor],
    targets: Tensor,
    layers: Sequence[UnitLayer],
    num_classes: int,
    stages: Sequence[str] | None,
    eps: float,
    sync: bool,
) -> Tensor:
    """R: mean SI over units of a layer, then over the layers of a stage, then over stages (§3).

    `acts` are the (B, units) activations recorded with `keep_grad=True`. Class means use only the
    classes present in the batch, divided by their counts (with fewer than two, R is 0), and
    nothing waits for the device.
    `sync=False` (as the public code) uses this rank's batch; `sync=True` (the config's
    default, `regularizer.sync`) the global batch: class sums and counts of the other ranks enter
    as constants, and the gradient is scaled by the world size so that DDP's gradient averaging
    yields the gradient of R on the global batch (as one process would compute it); the value is
    the global R on every rank.
    """
    chosen = regularized_layers(layers, stages)
    chosen_acts = {layer.name: acts[layer.name] for layer in chosen}
    sums, counts = class_sums(chosen_acts, targets, num_classes)
    if sync:
        sums, counts = _global_sums(sums, counts)
    present = counts > 0
    per_layer = {
        name: selectivity_index(class_means(s, counts), eps, present).mean()
        for name, s in sums.items()
    }
    penalty = network_mean(stage_means(per_layer, chosen))
    if sync:
        penalty = penalty + (world_size() - 1) * (penalty - penalty.detach())
    return penalty


def _global_sums(sums: dict[str, Tensor], counts: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Sums and counts over all ranks in one all-reduce; gradients flow into the local part only."""
    local = [s.detach().flatten() for s in sums.values()]
    total = all_reduce_sum(torch.cat([counts.to(local[0].dtype), *local]))
    total_counts, *total_sums = total.split([counts.numel(), *(s.numel() for s in local)])
    synced = {
        name: t.view_as(s) + (s - s.detach())
        for (name, s), t in zip(sums.items(), total_sums, strict=True)
    }
    return synced, total_counts.round().long()
