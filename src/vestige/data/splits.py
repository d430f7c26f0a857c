"""`DataSplits` and what every builder shares: the data root, and the one place that applies
`eval_split`, the size limits and epoch seeding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from vestige.config import DataConfig
from vestige.data.transforms import Augmentation, SeededTrainSet
from vestige.errors import ConfigError

EVAL_SPLITS = ("test", "train")

# (training images?, augment?) -> that split with its transform
SplitLoader = Callable[[bool, bool], Dataset]


@dataclass
class DataSplits:
    """Train/eval datasets of (normalised float32 C x H x W image, int label) and their shape."""

    train: Dataset
    eval: Dataset
    num_classes: int
    channels: int
    image_size: int


def data_root(cfg: DataConfig) -> Path:
    """`cfg.root` as a path; a dataset that reads files cannot do without it."""
    if cfg.root is None:
        raise ConfigError(f"data.root=None is invalid: data={cfg.name} reads files, set it")
    return Path(cfg.root).expanduser()


def train_augmentation(cfg: DataConfig) -> Augmentation:
    return Augmentation(cfg.randaugment, cfg.random_erasing)


def first(dataset: Dataset, limit: int | None) -> Dataset:
    """The first `limit` items (a laptop-scale subset), or all of them."""
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(limit))


def assemble_splits(
    cfg: DataConfig,
    seed: int,
    load: SplitLoader,
    num_classes: int,
    channels: int,
    image_size: int,
) -> DataSplits:
    """Build both splits from `load`; the train split is seeded, the eval split never augments."""
    if cfg.eval_split not in EVAL_SPLITS:
        raise ConfigError(
            f"data.eval_split={cfg.eval_split!r} is invalid: choose {' or '.join(EVAL_SPLITS)}"
        )
    train = SeededTrainSet(first(load(True, cfg.augment), cfg.train_limit), seed, cfg.augment)
    evaluation = first(load(cfg.eval_split == "train", False), cfg.eval_limit)
    return DataSplits(train, evaluation, num_classes, channels, image_size)
