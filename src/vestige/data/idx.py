"""Fashion-MNIST from its IDX `.gz` files (the format of LeCun's MNIST page), read with numpy.

Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32; the big-endian payload follows.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from vestige.config import DataConfig
from vestige.data.splits import DataSplits, data_root
from vestige.data.tensors import tensor_splits
from vestige.errors import ConfigError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_MNIST_FILES = {  # train? -> (images, labels)
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Mean and std of the 60,000 training images' pixels scaled to [0, 1].
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


def read_idx(path: Path) -> np.ndarray:
    """The array stored in a gzipped IDX file, in native byte order; ConfigError if malformed."""
    if not path.is_file():
        raise ConfigError(f"{path} is missing: set data.root to the folder that holds it")

    def corrupt(why: str) -> ConfigError:
        return ConfigError(f"{path} is not a valid IDX file ({why}): download it again")

    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise corrupt(f"gzip: {err}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise corrupt(f"bad magic {raw[:4].hex()}")
    ndim, dtype = raw[3], np.dtype(IDX_TYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(f"header of {ndim} dimensions is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise corrupt(f"{len(raw)} bytes where shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_fashion_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x 1 x 28 x 28 images and int64 labels of one split."""
    image_file, label_file = FASHION_MNIST_FILES[train]
    images = read_idx(root / image_file)
    labels = read_idx(root / label_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ConfigError(
            f"{root / image_file} holds {images.shape} images for {labels.shape} labels: "
            "download the Fashion-MNIST files again"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


def build_fashion_mnist(cfg: DataConfig, seed: int) -> DataSplits:
    """28 px grey images, resized per item to `image_size` and repeated to `channels`."""
    root = data_root(cfg)
    train, test = read_fashion_mnist(root, True), read_fashion_mnist(root, False)
    return tensor_splits(cfg, seed, train, test, [FASHION_MNIST_MEAN], [FASHION_MNIST_STD], 10)
