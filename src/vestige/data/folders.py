"""Datasets torchvision reads from disk: CIFAR-10/100 and the ImageFolder family.

CIFAR is small enough to hold in memory as uint8 tensors, so it shares the fast tensor path of
Fashion-MNIST. ImageFolder sets (ImageNet, Tiny ImageNet, any `root/{train,val}/<class>/*`) are
decoded per item with PIL, or with data.decode=gpu read as bytes and decoded in batches on the
run's device (data/encoded.py); Tiny ImageNet's `val/images` + `val/val_annotations.txt` layout is
recognised as well.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.folder import default_loader

from vestige.config import DataConfig
from vestige.data.encoded import DeviceDecoding, read_bytes
from vestige.data.splits import DataSplits, assemble_splits, data_root, train_augmentation
from vestige.data.tensors import Labelled, tensor_splits
from vestige.data.transforms import Normalise, Transform, folder_transform
from vestige.errors import ConfigError

# Per-channel pixel mean and std in [0, 1] of each training set.
CIFAR = {
    10: (datasets.CIFAR10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: (datasets.CIFAR100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_cifar(cfg: DataConfig, classes: int, train: bool) -> tuple[Labelled, int]:
    """uint8 N x 3 x 32 x 32 images and labels of one split, and the number of classes."""
    dataset_class = CIFAR[classes][0]
    root = data_root(cfg)
    try:
        dataset = dataset_class(str(root), train=train, download=cfg.download)
    except RuntimeError:
        raise ConfigError(
            f"CIFAR-{classes} not found in {root / dataset_class.base_folder}: "
            "set data.download=true, or data.root to the folder that holds it"
        ) from None
    except (OSError, URLError) as err:  # offline, or the server refused: nothing to train on
        reason = getattr(err, "reason", None) or err.strerror or err
        raise ConfigError(
            f"data.download=true could not fetch CIFAR-{classes} into {root} ({reason}): "
            "download it where there is a network and set data.root to it"
        ) from None
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return (images, torch.tensor(dataset.targets)), len(dataset.classes)


def build_cifar(classes: int, cfg: DataConfig, seed: int) -> DataSplits:
    """CIFAR-10 (`classes=10`) or CIFAR-100 from torchvision's python-pickle files."""
    (train, num_classes), (test, _) = (read_cifar(cfg, classes, split) for split in (True, False))
    _, mean, std = CIFAR[classes]
    return tensor_splits(cfg, seed, train, test, mean, std, num_classes)


class LabelledFiles(Dataset):
    """Items `(transform(loader(path)), label)` for a list of `(path, label)`: by default the
    transformed RGB image; with data.decode=gpu, its bytes as `DeviceDecoding` leaves them."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        transform: Transform | DeviceDecoding,
        loader: Callable[[str], Any] = default_loader,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(self.loader(path)), label


def class_folder_files(directory: Path) -> list[tuple[str, str]]:
    """`(path, class name)` for every image under `directory/<class>/`."""
    try:
        folder = datasets.ImageFolder(str(directory))
    except FileNotFoundError as err:
        raise ConfigError(
            f"{directory} has no class folders of images ({err}): data.root needs "
            "train/ and val/, each with one folder of images per class"
        ) from None
    return [(path, folder.classes[label]) for path, label in folder.samples]


def annotated_files(directory: Path) -> list[tuple[str, str]]:
    """`(path, class name)` from Tiny ImageNet's `val_annotations.txt` (file<TAB>class<TAB>box)."""
    lines = (directory / "val_annotations.txt").read_text().splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    return [(str(directory / "images" / row[0]), row[1]) for row in rows]


def build_image_folder(cfg: DataConfig, seed: int) -> DataSplits:
    """`root/train` and `root/val`; val classes are matched to train classes by folder name."""
    root = data_root(cfg)
    train_files = class_folder_files(root / "train")
    classes = sorted({name for _, name in train_files})
    index = {name: i for i, name in enumerate(classes)}
    val_dir = root / "val"
    annotated = (val_dir / "val_annotations.txt").is_file()
    val_files = annotated_files(val_dir) if annotated else class_folder_files(val_dir)
    unknown = sorted({name for _, name in val_files} - index.keys())
    if unknown:
        raise ConfigError(
            f"{val_dir} has classes {unknown[:3]} that {root / 'train'} lacks: "
            "use the same class folders in train/ and val/"
        )
    splits = {  # training images? -> (path, label)
        True: [(path, index[name]) for path, name in train_files],
        False: [(path, index[name]) for path, name in val_files],
    }
    normalise = Normalise(IMAGENET_MEAN, IMAGENET_STD, 3)

    def load(train_images: bool, augment: bool) -> LabelledFiles:
        if cfg.decode == "gpu":
            decoding = DeviceDecoding(normalise, cfg.image_size, augment)
            return LabelledFiles(splits[train_images], decoding, read_bytes)
        transform = folder_transform(
            normalise, cfg.image_size, train_augmentation(cfg) if augment else None
        )
        return LabelledFiles(splits[train_images], transform)

    return assemble_splits(cfg, seed, load, len(classes), normalise, cfg.image_size)
