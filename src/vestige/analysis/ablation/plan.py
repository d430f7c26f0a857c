"""What `analysis=ablation` silences and what the numbers mean (docs/science.md
§4): the k grid, the ablations of one stage as masks over its blocks' channels, and the table rows
and areas under the normalised curves they give.

Top-k selective = the k units of highest SI in each silenced block (that block's own ranking);
random = the first k of a fixed seeded permutation per block and draw, the same at every snapshot,
so the random subsets are nested in k like the selective ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vestige.analysis.ablation.ablate import AblationCounts, StageAblations
from vestige.config import AblationConfig
from vestige.results import Snapshot
from vestige.seeding import derive_seed
from vestige.selectivity.index import SelectivityResult
from vestige.selectivity.units import UnitLayer

COLUMNS = (
    "step", "epoch", "stage", "block", "condition", "draw", "k", "fraction", "channel", "si",
    "top1", "top5", "top1_norm", "top5_norm", "preferred_class_drop",
)  # fmt: skip
AUC_COLUMNS = (
    "step", "epoch", "stage", "block", "condition", "draws",
    "auc_top1", "auc_top1_std", "auc_top5", "auc_top5_std",
)  # fmt: skip


def paper_grid(channels: int) -> list[int]:
    """k for a stage of C channels: 0..C/2 in steps of 15, then C/2..C in steps of 40, then C
    (§4; the end point makes the curve reach k/C = 1)."""
    half = channels // 2
    return sorted({*range(0, half, 15), *range(half, channels + 1, 40), channels})


def k_grid(settings: AblationConfig, channels: int) -> list[int]:
    """The channel counts silenced per block, always with k = 0 (the unablated network)."""
    if settings.k is not None:
        ks = [min(int(k), channels) for k in settings.k]
    elif settings.k_fractions is not None:
        ks = [round(f * channels) for f in settings.k_fractions]
    else:
        ks = paper_grid(channels)
    return sorted({0, *ks})


def normalised_auc(fractions: list[float], accuracy: list[float]) -> float:
    """Trapezoid area under normalised accuracy vs k/C, divided by the span of k/C covered (§4:
    the public code sums over an uneven grid instead). Over the paper's grid (k/C from 0 to 1)
    this is the plain area; a flat curve gives 1 on any grid; NaN below two points."""
    x, y = np.asarray(fractions, dtype=float), np.asarray(accuracy, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) < 2 or x[-1] == x[0]:
        return math.nan
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


@dataclass
class UnitRanking:
    """What ablation needs of each unit, per layer: SI, preferred class, mean activation (the
    latter only when measured here: value=mean needs it, the selectivity store lacks it)."""

    si: dict[str, Tensor]
    preferred_class: dict[str, Tensor]
    mean: dict[str, Tensor] | None

    @classmethod
    def measured(cls, result: SelectivityResult) -> UnitRanking:
        """From a measurement; a unit's mean is that of its image activations (spatial means)."""
        weights = result.counts.double()
        mean = {
            name: (means.double().nan_to_num() @ weights / weights.sum()).float()
            for name, means in result.class_means.items()
        }
        return cls(result.si, result.preferred_class, mean)


@dataclass(frozen=True)
class Ablation:
    """One row of the table: which units of a stage are silenced."""

    block: str  # "all" (scope=stage) or the block's index
    condition: str  # selective | random
    draw: int  # which random subset (0 for selective)
    k: int  # units silenced per silenced block
    channel: int | None = None  # scope=unit: the one unit


def stage_ablations(
    layers: list[UnitLayer],
    ranking: UnitRanking,
    settings: AblationConfig,
    seed: int,
    device: torch.device,
) -> tuple[list[Ablation], Tensor]:
    """Every ablation of one stage that `settings` asks for: rows and (rows, blocks, C) masks."""
    channels = layers[0].channels
    si = torch.stack([ranking.si[layer.name] for layer in layers])
    selective = torch.argsort(si, dim=1, descending=True, stable=True)
    orders = {("selective", 0): selective}
    for draw in range(settings.random_draws):
        orders["random", draw] = torch.stack(
            [_random_order(channels, seed, f"ablation/{layer.name}/{draw}") for layer in layers]
        )
    rows, masks = [], []
    ks = torch.tensor(k_grid(settings, channels))
    for (condition, draw), order in orders.items():
        position = torch.argsort(order, dim=1)  # (blocks, C): rank of each channel
        if settings.scope == "unit":
            for b in range(len(layers)):
                for rank in range(min(settings.top_units, channels)):
                    channel = int(order[b, rank])
                    rows.append(Ablation(str(b), condition, draw, 1, channel))
                    masks.append(_in_block(position == rank, b))
            continue
        by_k = position[None] < ks[:, None, None]  # (ks, blocks, C)
        blocks = ["all"] if settings.scope == "stage" else [str(b) for b in range(len(layers))]
        for block in blocks:
            for k, mask in zip(ks.tolist(), by_k, strict=True):
                rows.append(Ablation(block, condition, draw, k))
                masks.append(mask if block == "all" else _in_block(mask, int(block)))
    return rows, torch.stack(masks).to(device)


def plan_stage(
    layers: list[UnitLayer],
    ranking: UnitRanking,
    settings: AblationConfig,
    seed: int,
    device: torch.device,
) -> StagePlan:
    """The stage's ablations, each distinct mask once, the unablated network among them."""
    rows, masks = stage_ablations(layers, ranking, settings, seed, device)
    with_none = torch.cat([torch.zeros_like(masks[:1]), masks])
    distinct, inverse = torch.unique(with_none.flatten(1), dim=0, return_inverse=True)
    if settings.value == "mean":
        values = torch.stack([ranking.mean[layer.name] for layer in layers])
    else:
        values = torch.zeros(len(layers), layers[0].channels)
    ablations = StageAblations(layers, distinct.view(-1, *masks.shape[1:]), values.to(device))
    return StagePlan(layers, rows, masks, inverse[1:], int(inverse[0]), ablations)


def _random_order(channels: int, seed: int, purpose: str) -> Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, purpose, scheme="sha256"))
    return torch.randperm(channels, generator=generator)


def _in_block(mask: Tensor, block: int) -> Tensor:
    """`mask` (blocks, C) kept in one block only."""
    kept = torch.zeros_like(mask)
    kept[block] = mask[block]
    return kept


@dataclass
class StagePlan:
    """The ablations of one stage at one snapshot: the table's rows and masks, and the distinct
    masks actually run (`inverse` maps each row to one, `base` is the unablated network)."""

    layers: list[UnitLayer]
    rows: list[Ablation]
    masks: Tensor  # (rows, blocks, C) bool
    inverse: Tensor  # (rows,)
    base: int
    distinct: StageAblations

    @property
    def stage(self) -> str:
        return self.layers[0].stage

    def table(
        self, snapshot: Snapshot, counts: AblationCounts, ranking: UnitRanking
    ) -> list[dict[str, Any]]:
        """One dict per row, keys `COLUMNS` (docs/outputs.md)."""
        top1, top5 = counts.accuracy()
        class_accuracy = counts.class_accuracy()
        device = class_accuracy.device
        masks, inverse = self.masks.to(device).double(), self.inverse.to(device)
        preferred = torch.stack([ranking.preferred_class[layer.name] for layer in self.layers])
        by_class = F.one_hot(preferred.to(device), class_accuracy.shape[1]).double()
        # how many silenced units prefer each class, (rows, classes)
        silenced = torch.einsum("rbc,bck->rk", masks, by_class)
        drop = class_accuracy[self.base] - class_accuracy[inverse]
        preferred_drop = (silenced * drop).sum(dim=1) / silenced.sum(dim=1)
        si = torch.stack([ranking.si[layer.name] for layer in self.layers]).to(device)
        silenced_si = (masks * si).sum(dim=(1, 2)) / masks.sum(dim=(1, 2))
        channels, base = self.layers[0].channels, self.base
        table = []
        for r, ablation in enumerate(self.rows):
            u = int(inverse[r])
            table.append(
                {
                    "step": snapshot.step,
                    "epoch": snapshot.epoch,
                    "stage": self.stage,
                    "block": ablation.block,
                    "condition": ablation.condition,
                    "draw": ablation.draw,
                    "k": ablation.k,
                    "fraction": ablation.k / channels,
                    "channel": "" if ablation.channel is None else ablation.channel,
                    "si": float(silenced_si[r]),
                    "top1": float(top1[u]),
                    "top5": float(top5[u]),
                    "top1_norm": _ratio(top1[u], top1[base]),
                    "top5_norm": _ratio(top5[u], top5[base]),
                    "preferred_class_drop": float(preferred_drop[r]),
                }
            )
        return table


def _ratio(value: Tensor, reference: Tensor) -> float:
    return float(value / reference) if reference > 0 else math.nan


def auc_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per snapshot, stage, block and condition: the AUC of the normalised top-1 and top-5 curves
    (see `normalised_auc`), mean and standard deviation (n - 1) over the draws."""
    curves: dict[tuple, dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        if row["channel"] == "":
            key = (int(row["step"]), row["stage"], row["block"], row["condition"])
            curves.setdefault(key, {}).setdefault(int(row["draw"]), []).append(row)
    table = []
    for (step, stage, block, condition), draws in curves.items():
        first = next(iter(draws.values()))[0]
        out = {"step": step, "epoch": float(first["epoch"]), "stage": stage, "block": block}
        out |= {"condition": condition, "draws": len(draws)}
        for metric in ("top1", "top5"):
            areas = [
                normalised_auc(
                    [float(r["fraction"]) for r in curve],
                    [float(r[f"{metric}_norm"]) for r in curve],
                )
                for curve in draws.values()
            ]
            out[f"auc_{metric}"] = float(np.mean(areas))
            out[f"auc_{metric}_std"] = float(np.std(areas, ddof=1)) if len(areas) > 1 else 0.0
        table.append(out)
    return table
