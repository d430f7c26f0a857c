"""The built-in dataset: one smooth random prototype per class, shifted a little, seen through a
random mix of smooth patterns that every class shares (distractors), plus noise.

Prototypes alone are learnt in a few dozen steps and the task saturates; shared distractors
stronger than the class signal make the network first pick up the prototypes (its early layers'
units turn class-selective) and then learn to see past the distractors, so accuracy climbs over
the whole run and the early stages' selectivity rises, then recedes (docs/science.md §1).

Everything is generated from `cfg.synthetic` alone (not the run seed), so runs that differ only in
seed see the same images, and the same config always gives bitwise the same tensors. Labels are
drawn independently per image, so class counts are deliberately unequal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vestige.config import DataConfig
from vestige.data.splits import DataSplits
from vestige.data.tensors import tensor_splits
from vestige.seeding import derive_seed


def smooth_patterns(
    count: int, channels: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """count x C x size x size images: bicubically upsampled coarse noise, mean 0, std 1 each."""
    coarse_size = max(2, size // 8)
    coarse = torch.randn(count, channels, coarse_size, coarse_size, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    flat = smooth.flatten(1)
    flat = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)
    return flat.view_as(smooth)


def class_prototypes(num_classes: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """One smooth pattern per class (K x C x size x size)."""
    generator = torch.Generator().manual_seed(derive_seed("synthetic-prototypes", seed))
    return smooth_patterns(num_classes, channels, size, generator)


def distractor_mix(patterns: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` images, each a random Gaussian combination of the shared `patterns` with unit
    expected variance per pixel: structure that says nothing about the class."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(count, len(patterns), generator=generator) / math.sqrt(len(patterns))
    return torch.einsum("np,pchw->nchw", weights, patterns)


def sample_images(
    prototypes: torch.Tensor, count: int, size: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images: a random label's prototype seen through a randomly shifted window + noise.

    The prototypes are larger than `size` by twice the maximum shift; each image is a
    `size` x `size` window of its prototype at a random offset.
    """
    generator = torch.Generator().manual_seed(seed)
    num_classes, channels, canvas, _ = prototypes.shape
    labels = torch.randint(num_classes, (count,), generator=generator)
    offsets = torch.randint(canvas - size + 1, (count, 2), generator=generator)
    noise_images = noise * torch.randn(count, channels, size, size, generator=generator)
    pixels = torch.arange(size)
    rows = (offsets[:, 0, None] + pixels).view(count, 1, size, 1)
    cols = (offsets[:, 1, None] + pixels).view(count, 1, 1, size)
    channel = torch.arange(channels).view(1, channels, 1, 1)
    images = prototypes[labels.view(count, 1, 1, 1), channel, rows, cols] + noise_images
    return images, labels


def build_synthetic(cfg: DataConfig, seed: int) -> DataSplits:
    """Train and test splits from independent streams; `seed` only drives augmentation."""
    spec = cfg.synthetic
    size, channels = cfg.image_size, cfg.channels
    max_shift = max(1, size // 16)
    canvas = size + 2 * max_shift
    prototypes = class_prototypes(cfg.num_classes, channels, canvas, spec.prototype_seed)
    prototypes = spec.prototype_scale * prototypes
    distractors = None
    if spec.distractors:
        generator = torch.Generator().manual_seed(
            derive_seed("synthetic-distractors", spec.prototype_seed)
        )
        distractors = smooth_patterns(spec.distractors, channels, size, generator)

    def sample(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        stream = derive_seed("synthetic-samples", spec.prototype_seed, split)
        images, labels = sample_images(prototypes, count, size, spec.noise, stream)
        if distractors is not None:
            mix = derive_seed("synthetic-distractor-mix", spec.prototype_seed, split)
            images += spec.distractor_scale * distractor_mix(distractors, count, mix)
        return images, labels

    train, test = sample("train", spec.train_size), sample("test", spec.eval_size)
    # prototypes, distractor mixes and noise are independent with variances scale^2 and noise^2
    # per pixel: this makes pixels ~N(0, 1)
    scales = [spec.prototype_scale, spec.distractor_scale if spec.distractors else 0.0]
    std = math.sqrt(sum(scale**2 for scale in scales) + spec.noise**2)
    return tensor_splits(cfg, seed, train, test, [0.0], [std], cfg.num_classes)
