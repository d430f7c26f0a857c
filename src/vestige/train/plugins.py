"""The loop's two plug-in points, after composer's split of algorithms and callbacks.

A `Regularizer` changes the training state: it adds a term to the loss. An `Observer` only
measures: it may attach a probe to each evaluation pass and adds numbers to the metrics row; one
that is also a `RowSink` is handed the finished row.
The loop calls these interfaces and knows nothing about what is behind them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


class EvalProbe(Protocol):
    """Attached (as a context) during one evaluation pass; sees every batch's targets.

    `precision`: the precision the pass must run at (precision.py: "fp32" exact, "bf16"
    autocast), or None for the training's own.
    """

    precision: str | None

    def __enter__(self) -> EvalProbe: ...

    def __exit__(self, *exc: object) -> None: ...

    def after_forward(self, targets: torch.Tensor) -> None: ...


class Observer(Protocol):
    def on_train_start(self, model: nn.Module, num_classes: int, step: int) -> None:
        """Once, before the first evaluation, at `step` (> 0 when resuming: anything the
        observer wrote for later steps belongs to an abandoned trajectory)."""

    def probe(self, model: nn.Module) -> EvalProbe | None:
        """A probe for the next evaluation pass, or None to skip this one."""

    def on_evaluation(self, step: int, epoch: float, probe: EvalProbe | None) -> dict[str, Any]:
        """Called on every rank after the pass (probes are already all-reduced); returns
        metrics for the row. Only rank 0 writes files."""

    def inherit(self, parent: Path, step: int, child: Path) -> None:
        """A run (directory `child`) starting from the state of run `parent` at `step` (a fork,
        a shared prefix): carry over what the observer needs of the parent's files besides the
        step-named ones, which train/fork.py links already (rank 0 only)."""


@runtime_checkable
class RowSink(Protocol):
    """An observer that also wants each whole metrics row (an experiment tracker: the row holds
    the loop's own numbers and every observer's); the loop calls it on rank 0, in step order,
    once the row is in metrics.jsonl."""

    def on_row(self, row: dict[str, Any]) -> None: ...


class Regularizer(Protocol):
    def attach(self, model: nn.Module, iterations_per_epoch: int) -> AbstractContextManager:
        """Hooks that live for the whole of training (removed on exit); schedules written in
        epochs are resolved with `iterations_per_epoch`."""

    def inactive_until(self, iterations_per_epoch: int) -> int | None:
        """The first step at which it changes the training (0: from the start), or None if it
        never does: before that step the run computes what it would without it."""

    def penalty(
        self, step: int, targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The term added to the loss for the forward pass just made (at absolute iteration
        `step`), and scalar tensors to log as their mean per step (e.g. "reg/alpha")."""
