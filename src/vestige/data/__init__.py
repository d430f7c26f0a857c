"""Dataset registry: `data.name` -> how to build its train and eval splits.

Every builder returns `DataSplits` whose items are (normalised float32 C x H x W image, int label)
and whose train split has `set_epoch(epoch)`: its random augmentation is a pure function of
(seed, epoch, index), so a run resumed mid-epoch sees the same images (see `transforms.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from omegaconf import OmegaConf
from torch.utils.data import Dataset

from vestige.config import DataConfig
from vestige.data.encoded import ImageLoader, image_loader
from vestige.data.folders import build_cifar, build_image_folder
from vestige.data.idx import build_fashion_mnist
from vestige.data.splits import DataSplits
from vestige.data.synthetic import build_synthetic
from vestige.errors import ConfigError, invalid

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetSpec",
    "ImageLoader",
    "build_datasets",
    "check",
    "image_loader",
    "known_train_size",
    "unaugmented_training_split",
]


@dataclass(frozen=True)
class DatasetSpec:
    build: Callable[[DataConfig, int], DataSplits]  # (cfg, seed) -> splits
    needs_root: bool  # reads files from cfg.root
    downloads: bool = False  # data.download=true fetches the files into cfg.root (torchvision)
    decodes_on_device: bool = False  # data.decode=gpu: image files decoded in batches on device


DATASETS: dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec(build_synthetic, needs_root=False),
    "fashion_mnist": DatasetSpec(build_fashion_mnist, needs_root=True),
    "cifar10": DatasetSpec(partial(build_cifar, 10), needs_root=True, downloads=True),
    "cifar100": DatasetSpec(partial(build_cifar, 100), needs_root=True, downloads=True),
    "imagenet": DatasetSpec(build_image_folder, needs_root=True, decodes_on_device=True),
    "tiny_imagenet": DatasetSpec(build_image_folder, needs_root=True, decodes_on_device=True),
    "image_folder": DatasetSpec(build_image_folder, needs_root=True, decodes_on_device=True),
}
DECODES = ("cpu", "gpu")


def check(cfg: DataConfig) -> None:
    """One-line ConfigError for the first bad value of the `data` section."""
    if cfg.name not in DATASETS:
        raise invalid("data", cfg.name, f"choose one of {', '.join(sorted(DATASETS))}")
    if cfg.root is not None and not Path(cfg.root).expanduser().is_dir():
        raise invalid("data.root", cfg.root, "point it at an existing directory with the dataset")
    if cfg.download and not DATASETS[cfg.name].downloads:
        fix = f"vestige downloads only cifar10 and cifar100; put {cfg.name}'s files in data.root"
        raise invalid("data.download", True, fix)
    if cfg.decode not in DECODES:
        raise invalid("data.decode", cfg.decode, f"choose {' or '.join(DECODES)}")
    if cfg.decode == "gpu" and not DATASETS[cfg.name].decodes_on_device:
        folders = ", ".join(name for name, spec in DATASETS.items() if spec.decodes_on_device)
        fix = f"only folder datasets ({folders}) decode on the device; set data.decode=cpu"
        raise invalid("data.decode", cfg.decode, fix)
    if cfg.decode == "gpu" and (cfg.randaugment or cfg.random_erasing):
        fix = "it crops, resizes and flips only: set data.randaugment=false and "
        raise invalid("data.decode", cfg.decode, fix + "data.random_erasing=0, or data.decode=cpu")
    if DATASETS[cfg.name].needs_root and cfg.root is None:
        raise invalid("data.root", None, f"data={cfg.name} reads files: set data.root=/path/to/it")
    for key in ("num_classes", "channels", "image_size"):
        if getattr(cfg, key) <= 0:
            raise invalid(f"data.{key}", getattr(cfg, key), "use a positive integer")
    if (cfg.randaugment or cfg.random_erasing) and not cfg.augment:
        fix = "RandAugment and random erasing need data.augment=true"
        raise invalid("data.augment", cfg.augment, fix)
    if cfg.randaugment and cfg.name == "synthetic":
        raise invalid(
            "data.randaugment", True, "RandAugment needs uint8 images: not data=synthetic"
        )
    for key in ("noise", "prototype_scale", "distractors", "distractor_scale"):
        if getattr(cfg.synthetic, key) < 0:
            raise invalid(f"data.synthetic.{key}", getattr(cfg.synthetic, key), "use 0 or more")
    for key in ("random_erasing", "mixup", "cutmix"):
        if getattr(cfg, key) < 0 or (key == "random_erasing" and cfg.random_erasing > 1):
            fix = "use 0 (off) or a positive value (erasing: <= 1)"
            raise invalid(f"data.{key}", getattr(cfg, key), fix)
    for key in ("train_limit", "eval_limit"):
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise invalid(f"data.{key}", value, "use a positive number of images, or null for all")
    if cfg.fraction is not None and not 0 < cfg.fraction <= 1:
        fix = "use a fraction of every class in (0, 1], or null"
        raise invalid("data.fraction", cfg.fraction, fix)
    if cfg.fraction is not None and cfg.train_limit is not None:
        fix = "set data.fraction or data.train_limit, not both"
        raise invalid("data.fraction", cfg.fraction, fix)


def known_train_size(cfg: DataConfig) -> int | None:
    """At most how many training images the config gives, when it says without reading files
    (the synthetic set's size, a limit); None when only the data know."""
    sizes = [cfg.train_limit] if cfg.train_limit is not None else []
    if cfg.name == "synthetic":
        sizes.append(cfg.synthetic.train_size)
    return min(sizes) if sizes else None


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
