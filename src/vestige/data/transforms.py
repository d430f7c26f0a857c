"""Normalisation, the two augmentation recipes, and the wrapper that makes augmentation resumable.

A resumed run must see bitwise the same augmented images as an uninterrupted one, whatever the
number of DataLoader workers. So no augmentation draws from a stream that depends on what came
before: `SeededTrainSet.__getitem__(i)` reseeds torch's CPU generator from (seed, epoch, i) for
the duration of that one item, and every random transform used here draws from that generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vestige.seeding import derive_seed

Transform = Callable[[Any], torch.Tensor]


class SeededTrainSet(Dataset):
    """A training split whose random transforms are a pure function of (seed, epoch, index).

    Call `set_epoch(e)` before iterating epoch `e` (and before the DataLoader starts its
    workers: workers hold a copy of this object, so persistent workers would keep a stale epoch).
    The caller's RNG state is untouched: the generator state is restored after each item.
    """

    def __init__(self, base: Dataset, seed: int, random: bool = True) -> None:
        self.base = base
        self.seed = seed
        self.random = random  # False: the transform draws nothing, so reseeding would be wasted
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    @property
    def labels(self) -> torch.Tensor:
        return self.base.labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not self.random:
            return self.base[index]
        # default_generator only: torch.manual_seed would also reseed (and clobber) CUDA.
        # Saving and restoring its state by hand costs half of what fork_rng does per item.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(derive_seed(self.seed, self.epoch, index))
        try:
            return self.base[index]
        finally:
            generator.set_state(state)


class Normalise:
    """uint8 (0-255) or float image -> float32 `(x - mean) / std`, grey repeated to `channels`.

    An image or a batch of them (... x C x H x W), on any device: data.decode=gpu normalises
    whole batches on the run's device with the same numbers (data/encoded.py).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.channels = channels

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float().div_(255) if image.dtype == torch.uint8 else image.float()
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        grey = x.shape[-3] == 1 and self.channels > 1
        return x.repeat_interleave(self.channels, dim=-3) if grey else x


@dataclass(frozen=True)
class Augmentation:
    """What the training split adds to the geometric augmentation: the DeiT recipe's
    RandAugment (2 ops, magnitude 9) and random erasing (docs/science.md §12)."""

    randaugment: bool = False
    erasing: float = 0.0

    def before_normalise(self) -> list[Transform]:
        return [v2.RandAugment(num_ops=2, magnitude=9)] if self.randaugment else []

    def after_normalise(self) -> list[Transform]:
        return [v2.RandomErasing(p=self.erasing)] if self.erasing > 0 else []


def small_image_transform(
    normalise: Normalise, source_size: int, size: int, augmentation: Augmentation | None
) -> Transform:
    """Tensor-only pipeline for in-memory images: optional resize, then (train) pad-4 crop + flip.

    Images whose stored size differs from `size` are resized (bilinear, antialiased) per item,
    so the in-memory copy stays at its native size. `augmentation=None`: no augmentation.
    """
    steps: list[Transform] = []
    if source_size != size:
        steps.append(v2.Resize((size, size), antialias=True))
    if augmentation is None:
        return v2.Compose([*steps, normalise])
    steps += [v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()]
    steps += augmentation.before_normalise()
    return v2.Compose([*steps, normalise, *augmentation.after_normalise()])


def centre_crop(size: int) -> Transform:
    """The ImageNet evaluation recipe, scaled so 224 px resizes to 256 px: the shorter side to
    `size` x 256/224, then the centre `size` x `size` (on a PIL image or a uint8 tensor)."""
    return v2.Compose([v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)])


def random_resized_crop(size: int) -> v2.RandomResizedCrop:
    """The ImageNet training crop (area 8-100%, aspect 3/4-4/3), resized to `size` x `size`."""
    return v2.RandomResizedCrop(size, antialias=True)


def folder_transform(
    normalise: Normalise, size: int, augmentation: Augmentation | None
) -> Transform:
    """PIL pipeline for image files: the ImageNet recipe (`centre_crop`, `random_resized_crop`)."""
    if augmentation is None:
        return v2.Compose([centre_crop(size), v2.PILToTensor(), normalise])
    steps = [random_resized_crop(size), v2.RandomHorizontalFlip()]
    steps += augmentation.before_normalise()
    return v2.Compose([*steps, v2.PILToTensor(), normalise, *augmentation.after_normalise()])


def batch_mixing(mixup: float, cutmix: float, num_classes: int) -> Transform | None:
    """Mixup and/or CutMix on a training batch, giving soft targets (docs/science.md §12:
    Mixup 0.8 + CutMix 1.0, one of the two per batch). Draws from torch's global generator,
    whose state every resume checkpoint holds."""
    choices: list[Transform] = []
    if mixup > 0:
        choices.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        choices.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    return v2.RandomChoice(choices) if choices else None
