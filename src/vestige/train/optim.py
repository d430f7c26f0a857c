"""Optimisers with the usual weight-decay exclusions, and learning-rate schedules.

The schedule is a pure function of the absolute iteration (warm-up, then constant / step /
multistep / cosine), so a resumed or forked run lands on exactly the same learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vestige.config import OptimConfig, SchedConfig
from vestige.step import Clock

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine")


def parameter_groups(model: nn.Module, weight_decay: float, exclusions: bool) -> list[dict]:
    """Split parameters into decayed and not decayed: biases, norm weights and other 1-D
    parameters, and whatever the model lists in `no_weight_decay()` (position embeddings, class
    tokens) are not decayed when `exclusions` is on."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not exclusions:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay = [p for name, p in named if p.ndim > 1 and name not in skip]
    no_decay = [p for name, p in named if p.ndim <= 1 or name in skip]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.decay_exclusions)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_factor(
    cfg: SchedConfig, base_lr: float, iterations_per_epoch: int, total: int
) -> Callable[[int], float]:
    """The multiplier of the base learning rate at absolute iteration `it`."""
    clock = Clock(iterations_per_epoch, total)
    warmup = clock.iterations(cfg.warmup)
    step_size = max(1, clock.iterations(cfg.step_size))
    milestones = sorted(clock.iterations(m) for m in cfg.milestones)
    floor = cfg.min_lr / base_lr

    def after_warmup(it: int) -> float:
        if cfg.name == "step":
            return cfg.gamma ** (it // step_size)
        if cfg.name == "multistep":
            return cfg.gamma ** sum(it >= m for m in milestones)
        if cfg.name == "cosine":
            progress = min(1.0, (it - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    def factor(it: int) -> float:
        if it < warmup:
            start = cfg.warmup_start_factor
            return start + (1 - start) * it / warmup
        return after_warmup(it)

    return factor


def build_scheduler(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, clock: Clock
) -> torch.optim.lr_scheduler.LambdaLR:
    base_lr = optimizer.param_groups[0]["lr"]
    factor = lr_factor(cfg, base_lr, clock.iterations_per_epoch, clock.total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
