"""Normalisation, the two augmentation recipes, and the wrapper that makes augmentation resumable.

A resumed run must see bitwise the same augmented images as an uninterrupted one, whatever the
number of DataLoader workers. So no augmentation draws from a stream that depends on what came
before: `SeededTrainSet.__getitem__(i)` reseeds torch's CPU generator from (seed, epoch, i) for
the duration of that one item, and every random transform used here draws from that generator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

Transform = Callable[[Any], torch.Tensor]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure, well-mixed function of `parts` (stable across processes).

    Integer-like parts (numpy or tensor scalars) hash as the Python int of the same value.
    """
    canonical = tuple(part if isinstance(part, str) else int(part) for part in parts)
    digest = hashlib.blake2b(repr(canonical).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededTrainSet(Dataset):
    """A training split whose random transforms are a pure function of (seed, epoch, index).

    Call `set_epoch(e)` before iterating epoch `e` (and before the DataLoader starts its
    workers: workers hold a copy of this object, so persistent workers would keep a stale epoch).
    The caller's RNG state is untouched: the reseeding happens inside `torch.random.fork_rng`.
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with torch.random.fork_rng(devices=[]):
            # default_generator only: torch.manual_seed would also reseed (and clobber) CUDA.
            torch.default_generator.manual_seed(derive_seed(self.seed, self.epoch, index))
            return self.base[index]


class Normalise:
    """uint8 (0-255) or float image -> float32 `(x - mean) / std`, grey repeated to `channels`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.channels = channels

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float().div_(255) if image.dtype == torch.uint8 else image.float()
        x = (x - self.mean) / self.std
        return x.repeat(self.channels, 1, 1) if x.shape[0] == 1 and self.channels > 1 else x


def small_image_transform(
    normalise: Normalise, source_size: int, size: int, augment: bool
) -> Transform:
    """Tensor-only pipeline for in-memory images: optional resize, then (train) pad-4 crop + flip.

    Images whose stored size differs from `size` are resized (bilinear, antialiased) per item,
    so the in-memory copy stays at its native size.
    """
    steps: list[Transform] = []
    if source_size != size:
        steps.append(v2.Resize((size, size), antialias=True))
    if augment:
        steps += [v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()]
    return v2.Compose([*steps, normalise])


def folder_transform(normalise: Normalise, size: int, augment: bool) -> Transform:
    """PIL pipeline for image files: the ImageNet recipe, scaled so 224 px resizes to 256 px."""
    if augment:
        steps: list[Transform] = [
            v2.RandomResizedCrop(size, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        steps = [v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)]
    return v2.Compose([*steps, v2.PILToTensor(), normalise])
