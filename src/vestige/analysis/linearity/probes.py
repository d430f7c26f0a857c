"""The three linear-regime probes of one snapshot against its base (docs/science.md
§5), measured together on the same images in exact fp32: `measure_linearity`. Their definitions:
the package's docstring (analysis/linearity/__init__.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from vestige.analysis.linearity.linearized import linear_term, weight_step
from vestige.analysis.linearity.mutual_information import performance_correlation
from vestige.errors import ConfigError
from vestige.precision import full_precision
from vestige.selectivity.units import UnitLayer, record_unit_states

PAIR_PROBES = ("linearized", "relu_flips")  # the probes that compare a snapshot with its base


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
