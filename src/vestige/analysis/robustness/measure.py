"""One snapshot's robustness (docs/science.md §7): accuracy on the clean and the corrupted first
images of the evaluation split, accuracy under FGSM and PGD per epsilon, and the dimensionality of
the change of each stage's output that a perturbation causes.

Everything streams: one batch of images, its corrupted or attacked versions and, for the change,
the rows of the bounded sample (`ChangeSample`) are all that is held. Every random draw is seeded
per image by (seed, what is drawn, the image's index in the split), so every snapshot, batch size
and device sees the same corrupted images and the same random starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vestige.analysis.robustness.attacks import PixelSpace, fgsm, pgd
from vestige.analysis.robustness.corruptions import CORRUPTIONS, corrupt
from vestige.analysis.robustness.dimensionality import (
    ChangeSample,
    components_for_variance,
    participation_ratio,
    variance_spectrum,
)
from vestige.config import RobustnessConfig
from vestige.data import ImageLoader
from vestige.data.transforms import Normalise
from vestige.precision import full_precision
from vestige.seeding import derive_seed
from vestige.selectivity.units import UnitLayer, record_layer_outputs

ATTACKS = ("fgsm", "pgd")
VARIANCE_EXPLAINED = 0.9  # the PCA count reported with the participation ratio


@dataclass(frozen=True)
class Batch:
    """Pixel images in [0, 1] on the device, their labels, and their indices in the split."""

    pixels: Tensor
    labels: Tensor
    indices: range


def pixel_batches(
    loader: ImageLoader, pixels: PixelSpace, limit: int | None, device: torch.device
) -> Iterator[Batch]:
    """The first `limit` images of the loader (null: all), back in pixel space."""
    count = 0
    for images, labels in loader:
        take = len(labels) if limit is None else min(len(labels), limit - count)
        if take <= 0:
            return
        normalised = images[:take].to(device)
        yield Batch(pixels.pixels(normalised), labels[:take].to(device), range(count, count + take))
        count += take


def image_seeds(seed: int, what: str, indices: range) -> Tensor:
    """One seed per image, a pure function of (seed, what is drawn, its index in the split)."""
    return torch.tensor([derive_seed(seed, what, index) for index in indices], dtype=torch.int64)


def step_size(settings: RobustnessConfig, epsilon: float) -> float:
    """PGD's step: the setting, or 2.5 epsilon / steps (Madry et al. 2018)."""
    if settings.step_size is not None:
        return settings.step_size
    return 2.5 * epsilon / max(settings.steps, 1)


def attacked(
    forward: PixelSpace, batch: Batch, attack: str, epsilon: float, settings: RobustnessConfig
) -> Tensor:
    """The batch's images after `attack` at radius `epsilon` (0: the images themselves)."""
    if epsilon == 0:
        return batch.pixels
    if attack == "fgsm":
        return fgsm(forward, batch.pixels, batch.labels, epsilon, settings.norm)
    seeds = image_seeds(settings.seed, f"pgd start {epsilon}", batch.indices).tolist()
    return pgd(
        forward,
        batch.pixels,
        batch.labels,
        epsilon,
        settings.steps,
        step_size(settings, epsilon),
        settings.norm,
        settings.random_start,
        seeds,
    )


def perturbed(forward: PixelSpace, batch: Batch, settings: RobustnessConfig) -> Tensor:
    """The batch under the perturbation whose representation change is measured."""
    if settings.change in ATTACKS:
        return attacked(forward, batch, settings.change, settings.change_epsilon, settings)
    seeds = image_seeds(settings.seed, settings.change, batch.indices)
    return corrupt(batch.pixels, settings.change, settings.change_severity, seeds)


def correct(forward: PixelSpace, pixels: Tensor, labels: Tensor) -> int:
    with torch.no_grad():
        return int((forward(pixels).argmax(1) == labels).sum())


def corruption_accuracy(
    forward: PixelSpace, loader: ImageLoader, device: torch.device, settings: RobustnessConfig
) -> dict[str, Any]:
    """Clean accuracy and accuracy per corruption and severity on the first `images` images."""
    names = settings.corruptions or list(CORRUPTIONS)
    counts = {name: [0] * len(settings.severities) for name in names}
    clean = images = 0
    for batch in pixel_batches(loader, forward, settings.images, device):
        clean += correct(forward, batch.pixels, batch.labels)
        images += len(batch.labels)
        for name in names:
            seeds = image_seeds(settings.seed, name, batch.indices)
            for i, severity in enumerate(settings.severities):
                corrupted = corrupt(batch.pixels, name, severity, seeds)
                counts[name][i] += correct(forward, corrupted, batch.labels)
    accuracy = {name: [c / images for c in row] for name, row in counts.items()}
    mean = sum(map(sum, accuracy.values())) / (len(names) * len(settings.severities))
    clean_accuracy = clean / images
    return {
        "images": images,
        "clean_accuracy": clean_accuracy,
        "corruption_accuracy": accuracy,
        "mean_corruption_accuracy": mean,
        # Hendrycks & Dietterich's relative corruption error, unnormalised: the mean error under
        # corruption minus the same snapshot's clean error
        "relative_corruption_error": (1 - mean) - (1 - clean_accuracy),
    }


def adversarial_accuracy(
    forward: PixelSpace, loader: ImageLoader, device: torch.device, settings: RobustnessConfig
) -> dict[str, Any]:
    """Accuracy per attack and epsilon on the first `attack_images` images."""
    counts = {attack: [0] * len(settings.epsilons) for attack in settings.attacks}
    clean = images = 0
    for batch in pixel_batches(loader, forward, settings.attack_images, device):
        clean += correct(forward, batch.pixels, batch.labels)
        images += len(batch.labels)
        for attack in settings.attacks:
            for i, epsilon in enumerate(settings.epsilons):
                adversarial = attacked(forward, batch, attack, epsilon, settings)
                counts[attack][i] += correct(forward, adversarial, batch.labels)
    return {
        "attack_images": images,
        "attack_clean_accuracy": clean / images,
        "adversarial_accuracy": {a: [c / images for c in row] for a, row in counts.items()},
    }


def representation_change(
    forward: PixelSpace,
    loader: ImageLoader,
    device: torch.device,
    settings: RobustnessConfig,
    layers: list[UnitLayer],
) -> dict[str, dict[str, float]]:
    """Per stage: participation ratio and PCA components for 90% of the variance of the change
    of its last block's output, over the first `change_images` images."""
    samples = {layer.name: ChangeSample(settings.change_images) for layer in layers}
    for batch in pixel_batches(loader, forward, settings.change_images, device):
        changed = perturbed(forward, batch, settings)
        with torch.no_grad(), record_layer_outputs(forward.model, layers) as outputs:
            forward(batch.pixels)
            clean = dict(outputs)
            forward(changed)
            for layer in layers:
                samples[layer.name].add(clean[layer.name], outputs[layer.name])
    result = {}
    for layer in layers:
        spectrum = variance_spectrum(samples[layer.name].changes())
        result[layer.stage] = {
            "participation_ratio": participation_ratio(spectrum),
            "components_90": components_for_variance(spectrum, VARIANCE_EXPLAINED),
        }
    return result


def measure_robustness(
    model: nn.Module,
    loader: ImageLoader,
    normalise: Normalise,
    device: torch.device,
    settings: RobustnessConfig,
    layers: list[UnitLayer],
) -> dict[str, Any]:
    """All of one snapshot's numbers (model in eval mode on the device), in exact fp32.
    `layers`: the block whose output each stage's change is measured at."""
    model.requires_grad_(False)  # attacks need gradients in the images only
    forward = PixelSpace(model, normalise)
    with full_precision():
        result = corruption_accuracy(forward, loader, device, settings)
        if settings.attacks:
            result |= adversarial_accuracy(forward, loader, device, settings)
        result["representation_change"] = representation_change(
            forward, loader, device, settings, layers
        )
    return result
