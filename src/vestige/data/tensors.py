"""Splits held in memory as one image tensor each, transformed per item (no PIL round trip)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from vestige.config import DataConfig
from vestige.data.splits import DataSplits, assemble_splits, train_augmentation
from vestige.data.transforms import Normalise, Transform, small_image_transform

Labelled = tuple[torch.Tensor, torch.Tensor]  # N x C x H x W images, N int64 labels


class TensorImages(Dataset):
    """Items `(transform(images[i]), int(labels[i]))`.

    Several instances may share one `images` tensor (e.g. the training images with and without
    augmentation), so the pixels are held once.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"need N x C x H x W images and N labels, got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def tensor_splits(
    cfg: DataConfig,
    seed: int,
    train: Labelled,
    test: Labelled,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
) -> DataSplits:
    """DataSplits over in-memory images, resized per item to `cfg.image_size`.

    Grey images are repeated to `cfg.channels`; colour images keep their own channels.
    """
    images = train[0]
    channels = cfg.channels if images.shape[1] == 1 else images.shape[1]
    normalise = Normalise(mean, std, channels)

    def load(train_images: bool, augment: bool) -> TensorImages:
        augmentation = train_augmentation(cfg) if augment else None
        transform = small_image_transform(normalise, images.shape[-1], cfg.image_size, augmentation)
        return TensorImages(*(train if train_images else test), transform)

    return assemble_splits(cfg, seed, load, num_classes, normalise, cfg.image_size)
