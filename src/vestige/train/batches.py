"""Data order as a pure function of (seed, epoch): resumable mid-epoch, sharded over ranks.

Training batches come from torch's DistributedSampler (also with one rank) seeded from the run's
seed, batched, and started at any batch of the epoch: a resumed run skips the batches it already
saw without loading them. Evaluation shards the split into contiguous, non-overlapping pieces, so
all-reduced sums equal a single process's. Both loaders are made by `data.image_loader`, so a
split read with data.decode=gpu arrives decoded on this rank's device.

The global batch of a step is the same set of images whatever the world size W. The permutation
of an epoch depends only on (seed, epoch); rank r takes its positions r, r + W, r + 2W, ... and
cuts them into per-rank batches of B / W, so step k's per-rank batches together hold exactly
positions [kB, (k + 1)B) of the permutation, the batch one process takes at step k. Only the order
inside the global batch differs, so a model without BatchNorm follows the same trajectory on any
number of ranks, up to float summation order (tests/test_ddp.py checks 1 rank against 2).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, Sampler, Subset

from vestige.data import ImageLoader, image_loader
from vestige.errors import ConfigError


class EpochBatches(Sampler[list[int]]):
    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int, world: int) -> None:
        self.sampler = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size = batch_size
        self.first_batch = 0

    def set_position(self, epoch: int, first_batch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.first_batch = first_batch

    def __iter__(self) -> Iterator[list[int]]:
        batches = BatchSampler(self.sampler, self.batch_size, drop_last=True)
        return itertools.islice(iter(batches), self.first_batch, None)

    def __len__(self) -> int:
        """Batches in a whole epoch (the schedule's iterations per epoch)."""
        return len(self.sampler) // self.batch_size


def train_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    rank: int,
    world: int,
    workers: int,
    device: torch.device,
) -> tuple[ImageLoader, EpochBatches]:
    """This rank's training batches; `device`: the rank's, where a split read with
    data.decode=gpu is decoded (on a GPU, other batches come in pinned memory)."""
    batches = EpochBatches(dataset, batch_size, seed, rank, world)
    loader = image_loader(
        dataset,
        device,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=own_generator(seed),
    )
    return loader, batches


def own_generator(seed: int) -> torch.Generator:
    """A loader draws a seed for its workers each time it is iterated; from its own generator,
    that draw leaves torch's global stream (dropout, stochastic depth) alone, so a run resumed
    mid-epoch, which starts its epoch's iterator at another moment, draws the same masks."""
    return torch.Generator().manual_seed(seed)


def eval_loader(
    dataset: Dataset, batch_size: int, rank: int, world: int, workers: int, device: torch.device
) -> ImageLoader:
    n = len(dataset)
    if n < world:
        raise ConfigError(
            f"the evaluation split has {n} images, fewer than the {world} ranks: every rank "
            "needs at least one; use more evaluation data or fewer ranks"
        )
    shard = Subset(dataset, range(n * rank // world, n * (rank + 1) // world))
    return image_loader(
        shard,
        device,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=own_generator(0),
    )
