"""The selectivity regularizer as a training-loop plug-in: loss = CE - alpha * R (§3).

docs/science.md §3: R is the mean class selectivity of the chosen stages on each
mini-batch, in train mode and differentiable (the math is `selectivity_penalty`); alpha < 0
suppresses selectivity, alpha > 0 promotes it, and alpha follows a schedule over the absolute step
(`vestige.selectivity.alpha`). The loop sees only the `Regularizer` protocol.

Choices made here:
- Units are the block outputs of `measured_layers` (the paper's); only the regularized stages are
  hooked, so the last stage costs nothing by default.
- At a step where alpha is exactly 0, R is still computed and logged, but without a graph
  (`torch.no_grad`), and the term added to the loss is a constant 0: the run trains exactly as
  without the regularizer, and the logged R shows the train-batch selectivity it would act on.
- R is computed in float32 with autocast off, whatever the training precision.
- The number of classes is the model's output width, read from its first forward pass (the
  dataset can discover its classes; absent classes are masked, see `selectivity_penalty`).
- With gradient accumulation, R is computed per micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn

from vestige.config import RegularizerConfig
from vestige.errors import ConfigError
from vestige.selectivity.alpha import AlphaSchedule, ResolvedAlphaSchedule
from vestige.selectivity.penalty import regularized_layers, selectivity_penalty
from vestige.selectivity.units import (
    UnitLayer,
    measured_layers,
    record_unit_activations,
    unwrap,
)


class SelectivityRegularizer:
    """Adds -alpha(step) * R to the loss and logs `reg/alpha` and `reg/R` (detached tensors)."""

    def __init__(self, cfg: RegularizerConfig, negative: str) -> None:
        """`negative`: how negative unit outputs (GELU) are treated, as when selectivity is
        measured (`selectivity.negative`, see `unit_activations`)."""
        self.negative = negative
        self.schedule = AlphaSchedule.parse(cfg.alpha)
        self.stages = None if cfg.stages is None else list(cfg.stages)
        self.eps, self.sync = cfg.eps, cfg.sync
        self.alpha: ResolvedAlphaSchedule | None = None
        self.layers: list[UnitLayer] = []
        self.num_classes = 0
        self._acts: dict[str, Tensor] = {}

    @contextmanager
    def attach(self, model: nn.Module, iterations_per_epoch: int) -> Iterator[None]:
        """Resolve the schedule and hook the regularized stages for the whole of training."""
        self.alpha = self.schedule.resolve(iterations_per_epoch)
        self.layers = measured_layers(model)

        def remember_num_classes(module: nn.Module, args: tuple, output: Tensor) -> None:
            self.num_classes = output.shape[-1]

        with ExitStack() as hooks:
            layers = self.regularized_layers()
            recording = record_unit_activations(model, layers, self.negative, keep_grad=True)
            self._acts = hooks.enter_context(recording)
            hooks.callback(unwrap(model).register_forward_hook(remember_num_classes).remove)
            hooks.callback(self._acts.clear)
            yield

    def inactive_until(self, iterations_per_epoch: int) -> int | None:
        """The first step of a window whose alpha is not 0 (None: alpha is 0 throughout)."""
        windows = self.schedule.resolve(iterations_per_epoch).windows
        starts = [w.start for w in windows if w.alpha != 0.0 or w.alpha_start != 0.0]
        return min(starts) if starts else None

    def penalty(self, step: int, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """-alpha * R for the forward pass just made; R's graph only when alpha is not 0."""
        if self.alpha is None or not self._acts:
            raise RuntimeError("penalty needs a forward pass of the model inside attach()")
        alpha = self.alpha.alpha_at(step)
        acts = dict(self._acts)
        self._acts.clear()  # the next forward refills it; the graph is not held until then
        with torch.autocast(targets.device.type, enabled=False):
            with torch.set_grad_enabled(alpha != 0.0 and torch.is_grad_enabled()):
                r = selectivity_penalty(
                    acts, targets, self.layers, self.num_classes, self.stages, self.eps, self.sync
                )
            term = -alpha * r if alpha != 0.0 else r.new_zeros(())
        logs = {"reg/alpha": torch.tensor(alpha, dtype=torch.float64), "reg/R": r.detach()}
        return term, logs

    def regularized_layers(self) -> list[UnitLayer]:
        """The layers of `regularizer.stages` (default: every stage but the last, §3)."""
        try:
            return regularized_layers(self.layers, self.stages)
        except ConfigError as err:
            raise ConfigError(f"regularizer.stages={self.stages!r} is invalid: {err}") from None
