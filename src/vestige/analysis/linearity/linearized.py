"""The network linearised in its weights around one snapshot (docs/science.md §5).

Between snapshots t and t+d:

    f_lin(w_{t+d}) = f(w_t) + J(w_t) (w_{t+d} - w_t)

where J(w_t) is the Jacobian of the logits in the weights at w_t. J is never materialised: the
product J v is one forward-mode pass (`torch.func.jvp` through `functional_call`), in eval mode
(attention in its plain-ops form: the fused kernels have no forward-mode rule).

BatchNorm running statistics (`buffers`): in eval mode they are part of what the network computes,
and they move between snapshots as much as the weights do early in training.
- `expand` (default): they are expanded with the weights, as if they were weights
  (tangent = their change); the comparison then asks how linear the eval-mode network is in
  everything that training changed. Forward-mode AD has no rule for `batch_norm` in its running
  statistics, so during the expansion BatchNorm runs as the same formula in plain ops.
- `base`: they stay at snapshot t's values in the expansion, while f(w_{t+d}) uses its own; the
  drift of the statistics then counts as error of the linearisation.
The zero-order term is the network's own forward pass at t, so d = 0 gives exactly f.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm

BUFFER_CHOICES = ("expand", "base")
RUNNING_STATISTICS = ("running_mean", "running_var")


def weight_step(base: nn.Module, target: nn.Module, buffers: str = "expand") -> dict[str, Tensor]:
    """w_{t+d} - w_t for every parameter (and BatchNorm running statistic with `expand`),
    keyed by name: the direction the network is expanded along."""
    names = [name for name, _ in base.named_parameters()]
    if buffers == "expand":
        names += [
            f"{path}.{stat}" if path else stat
            for path, module in base.named_modules()
            if isinstance(module, _BatchNorm) and module.track_running_stats
            for stat in RUNNING_STATISTICS
        ]
    before, after = base.state_dict(keep_vars=True), target.state_dict(keep_vars=True)
    return {name: (after[name] - before[name]).detach() for name in names}


@torch.no_grad()
def linear_term(base: nn.Module, step: dict[str, Tensor], inputs: Tensor) -> Tensor:
    """J(w_t) (w_{t+d} - w_t) for a batch of inputs: how the logits change to first order."""
    state = base.state_dict(keep_vars=True)
    names = list(step)

    def logits(*values: Tensor) -> Tensor:
        return functional_call(base, dict(zip(names, values, strict=True)), (inputs,))

    with batch_norm_in_plain_ops(base), sdpa_kernel(SDPBackend.MATH):
        _, change = jvp(logits, tuple(state[name].detach() for name in names), tuple(step.values()))
    return change


def linearized_logits(base: nn.Module, step: dict[str, Tensor], inputs: Tensor) -> Tensor:
    """f_lin(w_{t+d}) = f(w_t) + J(w_t) (w_{t+d} - w_t), the base network in eval mode."""
    with torch.no_grad():
        return base(inputs) + linear_term(base, step, inputs)


@contextmanager
def batch_norm_in_plain_ops(model: nn.Module) -> Iterator[None]:
    """While inside, every BatchNorm of `model` computes its eval-mode output with plain tensor
    ops, which forward-mode AD can differentiate in the running statistics."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for norm in norms:
        norm.forward = _eval_batch_norm.__get__(norm)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def _eval_batch_norm(self: _BatchNorm, x: Tensor) -> Tensor:
    """(x - running_mean) / sqrt(running_var + eps) * weight + bias, per channel."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    out = (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.eps)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    return out
