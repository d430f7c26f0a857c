"""Dataset registry: `data.name` -> how to build its train and eval splits.

Every builder returns `DataSplits` whose items are (normalised float32 C x H x W image, int label)
and whose train split has `set_epoch(epoch)`: its random augmentation is a pure function of
(seed, epoch, index), so a run resumed mid-epoch sees the same images (see `transforms.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from omegaconf import OmegaConf
from torch.utils.data import Dataset

from vestige.config import DataConfig
from vestige.data.folders import build_cifar, build_image_folder
from vestige.data.idx import build_fashion_mnist
from vestige.data.splits import DataSplits
from vestige.data.synthetic import build_synthetic
from vestige.errors import ConfigError

__all__ = ["DATASETS", "DataSplits", "DatasetSpec", "build_datasets", "unaugmented_training_split"]


@dataclass(frozen=True)
class DatasetSpec:
    build: Callable[[DataConfig, int], DataSplits]  # (cfg, seed) -> splits
    needs_root: bool  # reads files from cfg.root


DATASETS: dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec(build_synthetic, needs_root=False),
    "fashion_mnist": DatasetSpec(build_fashion_mnist, needs_root=True),
    "cifar10": DatasetSpec(partial(build_cifar, 10), needs_root=True),
    "cifar100": DatasetSpec(partial(build_cifar, 100), needs_root=True),
    "imagenet": DatasetSpec(build_image_folder, needs_root=True),
    "tiny_imagenet": DatasetSpec(build_image_folder, needs_root=True),
    "image_folder": DatasetSpec(build_image_folder, needs_root=True),
}


def build_datasets(cfg: DataConfig, seed: int) -> DataSplits:
    """The splits of `cfg.name`; `seed` drives the train split's augmentation."""
    if cfg.name not in DATASETS:
        raise ConfigError(
            f"data={cfg.name!r} is invalid: choose one of {', '.join(sorted(DATASETS))}"
        )
    return DATASETS[cfg.name].build(cfg, seed)


def unaugmented_training_split(cfg: DataConfig) -> Dataset:
    """The training split as a run saw it (its subset included), without augmentation: what
    analyses fit on (the linear classifier, re-estimated BatchNorm statistics)."""
    plain = OmegaConf.merge(cfg, {"augment": False, "randaugment": False, "random_erasing": 0.0})
    return build_datasets(plain, seed=0).train  # the seed only drives augmentation
