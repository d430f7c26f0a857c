"""`DataSplits` and what every builder shares: the data root, and the one place that applies
`eval_split`, the subsets (data/subsets.py) and epoch seeding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from vestige.config import DataConfig
from vestige.data.subsets import class_counts, fraction_per_class, limit_per_class
from vestige.data.transforms import Augmentation, Normalise, SeededTrainSet
from vestige.errors import ConfigError
from vestige.seeding import derive_seed

EVAL_SPLITS = ("test", "train")

# (training images?, augment?) -> that split with its transform
SplitLoader = Callable[[bool, bool], Dataset]


@dataclass
class DataSplits:
    """Train/eval datasets of (normalised float32 C x H x W image, int label), their shape, and
    the normalisation that maps their pixels to what the network sees (attacks and corruptions
    work on the pixels: analysis/robustness)."""

    train: Dataset
    eval: Dataset
    num_classes: int
    channels: int
    image_size: int
    normalise: Normalise

    def class_counts(self) -> dict[str, list[int]]:
        """Images per class of each split: what a run saw (recorded in its run.json)."""
        return {
            "train_class_counts": class_counts(self.train.labels, self.num_classes),
            "eval_class_counts": class_counts(self.eval.labels, self.num_classes),
        }


def data_root(cfg: DataConfig) -> Path:
    """`cfg.root` as a path; a dataset that reads files cannot do without it."""
    if cfg.root is None:
        raise ConfigError(f"data.root=None is invalid: data={cfg.name} reads files, set it")
    return Path(cfg.root).expanduser()


def train_augmentation(cfg: DataConfig) -> Augmentation:
    return Augmentation(cfg.randaugment, cfg.random_erasing)


def assemble_splits(
    cfg: DataConfig,
    seed: int,
    load: SplitLoader,
    num_classes: int,
    normalise: Normalise,
    image_size: int,
) -> DataSplits:
    """Build both splits from `load`; the train split is seeded, the eval split never augments."""
    if cfg.eval_split not in EVAL_SPLITS:
        raise ConfigError(
            f"data.eval_split={cfg.eval_split!r} is invalid: choose {' or '.join(EVAL_SPLITS)}"
        )
    train = load(True, cfg.augment)
    train = limit_per_class(train, cfg.train_limit, derive_seed(cfg.subset_seed, "train"))
    train = SeededTrainSet(fraction_per_class(train, cfg.fraction), seed, cfg.augment)
    evaluation = load(cfg.eval_split == "train", False)
    evaluation = limit_per_class(evaluation, cfg.eval_limit, derive_seed(cfg.subset_seed, "eval"))
    return DataSplits(train, evaluation, num_classes, normalise.channels, image_size, normalise)
