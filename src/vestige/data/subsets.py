"""Subsets that keep every class: `data.train_limit` / `data.eval_limit` and `data.fraction`.

Folder datasets (ImageNet, Tiny ImageNet) and CIFAR-style files are stored sorted by class, so the
first N items would keep a handful of classes. A limit instead keeps N images spread over the
classes as evenly as the data allows: every class gets the same share, a class with fewer images
than its share gives the rest to the others, and the last few images left over go to classes
chosen by the seed; within a class the images are drawn by a seeded permutation. A fraction f keeps
the first floor(f x n_c) images of each class in the dataset's order, which is how the ConViT
paper made its sample-efficiency subsets (docs/science.md §13).

Every dataset in vestige exposes `labels` (an int64 tensor, one per item), so nothing here loads
an image. Kept items stay in the dataset's order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from vestige.seeding import derive_seed


class ClassSubset(Subset):
    """A `Subset` that keeps the `labels` of its items."""

    @property
    def labels(self) -> Tensor:
        return self.dataset.labels[torch.as_tensor(self.indices, dtype=torch.long)]


def class_counts(labels: Tensor, num_classes: int) -> list[int]:
    """Images per class, for classes 0..num_classes-1."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def class_quotas(counts: list[int], limit: int, seed: int) -> list[int]:
    """How many images of each class a subset of `limit` keeps: as equal as `counts` allow.

    The level t is the largest with sum(min(n_c, t)) <= limit; the remaining images (fewer than
    the classes that still have more than t) go one each to classes drawn by the seed.
    """
    if limit >= sum(counts):
        return list(counts)
    level = 0
    while sum(min(n, level + 1) for n in counts) <= limit:
        level += 1
    quotas = [min(n, level) for n in counts]
    open_classes = torch.tensor([c for c, n in enumerate(counts) if n > level], dtype=torch.long)
    generator = torch.Generator().manual_seed(derive_seed(seed, "quota"))
    extra = limit - sum(quotas)
    for c in open_classes[torch.randperm(len(open_classes), generator=generator)[:extra]]:
        quotas[int(c)] += 1
    return quotas


def limit_per_class(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """`limit` images spread over the classes (see `class_quotas`), or the whole dataset."""
    if limit is None or limit >= len(dataset):
        return dataset
    labels = dataset.labels
    counts = class_counts(labels, int(labels.max()) + 1)
    kept = []
    for c, quota in enumerate(class_quotas(counts, limit, seed)):
        members = torch.nonzero(labels == c).flatten()
        generator = torch.Generator().manual_seed(derive_seed(seed, "class", c))
        kept.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return ClassSubset(dataset, torch.cat(kept).sort().values.tolist())


def fraction_per_class(dataset: Dataset, fraction: float | None) -> Dataset:
    """The first floor(`fraction` x n_c) images of every class c, or the whole dataset."""
    if fraction is None or fraction >= 1:
        return dataset
    labels = dataset.labels
    kept = []
    for c in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == c).flatten()
        kept.append(members[: math.floor(fraction * len(members) + 1e-9)])  # 0.29 x 100 = 29
    return ClassSubset(dataset, torch.cat(kept).sort().values.tolist())
