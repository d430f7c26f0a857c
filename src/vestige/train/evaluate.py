"""One evaluation pass: loss and top-1/top-5 over a split, summed on the device, all-reduced.

Under DDP every rank evaluates its own contiguous shard of the split (`batches.eval_loader`) with
rank 0's network, buffers included, so the all-reduced sums are those of one process evaluating
the saved snapshot on the whole split. Observers' probes ride along in the same pass, so a
measurement such as class selectivity costs only its hooks on top of the evaluation the run does
anyway; a probe that names a precision gets the whole pass at it (exact fp32 by default for
selectivity, whatever the training's autocast: precision.py).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vestige import distributed, precision
from vestige.train.plugins import EvalProbe


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    probes: list[EvalProbe],
    autocast: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    distributed.broadcast_buffers(model)
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    wanted = {probe.precision for probe in probes} - {None}
    if len(wanted) > 1:
        raise ValueError(f"probes want different precisions {sorted(wanted)} in one pass")
    required = wanted.pop() if wanted else None
    bf16 = required == "bf16" if required else autocast
    with ExitStack() as stack:
        if required == "fp32":  # the probes' class sums too: TF32 would round activations
            stack.enter_context(precision.full_precision())
        for probe in probes:
            stack.enter_context(probe)
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            if channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with precision.autocast(device, bf16):
                logits = model(inputs)
            for probe in probes:
                probe.after_forward(targets)
            logits = logits.float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top.eq(targets[:, None])
            totals += torch.stack(
                [
                    F.cross_entropy(logits, targets, reduction="sum").double(),
                    hits[:, 0].sum().double(),
                    hits.any(dim=1).sum().double(),
                    torch.tensor(float(len(targets)), dtype=torch.float64, device=device),
                ]
            )
    model.train(was_training)
    loss, top1, top5, count = distributed.all_reduce_sum(totals).tolist()
    count = max(count, 1.0)
    return {"eval_loss": loss / count, "eval_acc": top1 / count, "eval_acc5": top5 / count}
