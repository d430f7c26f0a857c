"""Specification of `vestige.data`: what each dataset yields, and that augmentation is resumable."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FASHION_MNIST_ROOT
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vestige.config import DataConfig, SyntheticConfig
from vestige.data import DATASETS, DataSplits, build_datasets
from vestige.data.idx import IDX_TYPES, read_idx
from vestige.errors import ConfigError
from vestige.tasks.compose import CONF_DIR as CONF

# the harder task of the default run (conf/data/synthetic.yaml), sizes aside
DEFAULT_TASK = {
    key: value
    for key, value in OmegaConf.load(CONF / "data" / "synthetic.yaml")["synthetic"].items()
    if not key.endswith("_size")
}


def synthetic_cfg(
    train_size: int = 200,
    eval_size: int = 100,
    prototype_seed: int = SyntheticConfig.prototype_seed,
    task: dict | None = None,
    **data,
) -> DataConfig:
    synthetic = SyntheticConfig(
        train_size=train_size, eval_size=eval_size, prototype_seed=prototype_seed, **(task or {})
    )
    return DataConfig(synthetic=synthetic, **data)


def all_items(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(labels)


def write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.dtype(v).str: k for k, v in IDX_TYPES.items()}[array.dtype.newbyteorder(">").str]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(array.dtype.newbyteorder(">")).tobytes()))


def write_png(path: Path, value: int, size: tuple[int, int] = (20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path)


# --- the registry ---------------------------------------------------------------------------


def test_registry_names_every_dataset_and_which_read_files() -> None:
    assert set(DATASETS) == {
        "synthetic",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "imagenet",
        "tiny_imagenet",
        "image_folder",
    }
    assert [name for name, spec in DATASETS.items() if not spec.needs_root] == ["synthetic"]


def test_unknown_dataset_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mnist_typo"):
        build_datasets(DataConfig(name="mnist_typo"), seed=0)


def test_unknown_eval_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.eval_split='val'"):
        build_datasets(synthetic_cfg(eval_split="val"), seed=0)


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_splits_have_the_configured_sizes_and_shapes() -> None:
    splits = build_datasets(
        synthetic_cfg(num_classes=7, channels=1, image_size=16, train_size=50, eval_size=20), 0
    )
    assert (splits.num_classes, splits.channels, splits.image_size) == (7, 1, 16)
    assert (len(splits.train), len(splits.eval)) == (50, 20)
    images, labels = all_items(splits.train)
    assert images.shape == (50, 1, 16, 16) and images.dtype == torch.float32
    assert labels.min() >= 0 and labels.max() < 7


def test_synthetic_same_config_gives_bitwise_identical_images() -> None:
    first, second = (build_datasets(synthetic_cfg(), seed=0) for _ in range(2))
    for a, b in ((first.train, second.train), (first.eval, second.eval)):
        assert all(torch.equal(x, y) for x, y in zip(all_items(a), all_items(b), strict=True))


def test_synthetic_images_depend_on_prototype_seed_not_run_seed() -> None:
    base = all_items(build_datasets(synthetic_cfg(), seed=0).train)[0]
    other_run = all_items(build_datasets(synthetic_cfg(), seed=1).train)[0]
    other_data = all_items(build_datasets(synthetic_cfg(prototype_seed=99), seed=0).train)[0]
    assert torch.equal(base, other_run)
    assert not torch.equal(base, other_data)


def test_synthetic_train_and_eval_images_differ() -> None:
    splits = build_datasets(synthetic_cfg(train_size=100, eval_size=100), seed=0)
    assert not torch.equal(all_items(splits.train)[0], all_items(splits.eval)[0])


@pytest.mark.parametrize("task", [None, DEFAULT_TASK], ids=["prototypes", "with distractors"])
def test_synthetic_pixels_are_normalised(task) -> None:
    images = all_items(build_datasets(synthetic_cfg(train_size=500, task=task), seed=0).train)[0]
    assert abs(images.mean().item()) < 0.1
    assert 0.85 < images.std().item() < 1.15


def test_synthetic_class_counts_are_not_balanced() -> None:
    labels = all_items(build_datasets(synthetic_cfg(train_size=2000), seed=0).train)[1]
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() > 0 and counts.max() > counts.min()


def test_synthetic_classes_are_separable_by_their_mean_image() -> None:
    """Class structure: nearest class mean, fitted on train, is far above chance on eval."""
    splits = build_datasets(synthetic_cfg(train_size=500, eval_size=200), seed=0)
    train_x, train_y = all_items(splits.train)
    eval_x, eval_y = all_items(splits.eval)
    means = torch.stack([train_x[train_y == k].mean(0) for k in range(splits.num_classes)])
    nearest = torch.cdist(eval_x.flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == eval_y).float().mean() > 0.5


def nearest_mean_accuracy(task: dict | None) -> float:
    splits = build_datasets(synthetic_cfg(train_size=2000, eval_size=500, task=task), seed=0)
    train_x, train_y = all_items(splits.train)
    eval_x, eval_y = all_items(splits.eval)
    means = torch.stack([train_x[train_y == k].mean(0) for k in range(splits.num_classes)])
    nearest = torch.cdist(eval_x.flatten(1), means.flatten(1)).argmin(1)
    return (nearest == eval_y).float().mean().item()


def test_shared_distractors_hide_the_class_signal_without_removing_it() -> None:
    """The default run's task: the class means, which read the prototypes-only task almost
    perfectly, read it only partly through the shared distractors (so training does not
    saturate in a few steps), yet far above chance."""
    easy, hard = nearest_mean_accuracy(None), nearest_mean_accuracy(DEFAULT_TASK)
    assert easy > 0.9
    assert 0.2 < hard < easy - 0.3


# --- limits and eval split ------------------------------------------------------------------


def test_limited_splits_hold_images_of_the_whole_split_in_its_order() -> None:
    full = build_datasets(synthetic_cfg(), seed=0)
    limited = build_datasets(synthetic_cfg(train_limit=30, eval_limit=10), seed=0)
    assert (len(limited.train), len(limited.eval)) == (30, 10)
    kept = limited.eval.indices
    assert kept == sorted(kept)
    for position, index in enumerate(kept):
        assert torch.equal(limited.eval[position][0], full.eval[index][0])


def test_a_limited_augmented_split_follows_its_epoch() -> None:
    limited = build_datasets(synthetic_cfg(augment=True, train_limit=30), seed=0).train
    limited.set_epoch(1)
    first = limited[5][0]
    limited.set_epoch(2)
    second = limited[5][0]
    limited.set_epoch(1)
    assert torch.equal(limited[5][0], first)
    assert not torch.equal(first, second)


def test_limit_larger_than_the_split_keeps_it_whole() -> None:
    splits = build_datasets(synthetic_cfg(train_limit=10**6), seed=0)
    assert len(splits.train) == 200


def test_eval_split_train_evaluates_the_training_images_without_augmentation() -> None:
    plain = build_datasets(synthetic_cfg(), seed=0)
    on_train = build_datasets(synthetic_cfg(augment=True, eval_split="train"), seed=0)
    assert len(on_train.eval) == len(plain.train)
    for x, y in zip(all_items(on_train.eval), all_items(plain.train), strict=True):
        assert torch.equal(x, y)


# --- seeded augmentation ----------------------------------------------------------------------


def augmented(augment: bool = True) -> DataSplits:
    return build_datasets(synthetic_cfg(augment=augment, train_size=16), seed=3)


def test_augmentation_is_a_function_of_epoch_and_index_across_instances() -> None:
    first, second = augmented().train, augmented().train
    first.set_epoch(5)
    second.set_epoch(5)
    torch.manual_seed(123)  # the caller's RNG state must not matter
    x = first[7][0]
    torch.rand(1000)
    assert torch.equal(x, second[7][0])
    assert torch.equal(x, first[7][0])


def test_augmentation_changes_with_epoch_and_index() -> None:
    train = augmented().train
    train.set_epoch(0)
    x0 = train[4][0]
    train.set_epoch(1)
    assert not torch.equal(x0, train[4][0])


def test_augmentation_differs_from_the_plain_image_for_some_items() -> None:
    train, plain = augmented().train, augmented(augment=False).train
    assert any(not torch.equal(train[i][0], plain[i][0]) for i in range(len(train)))


def test_augmentation_is_the_same_with_and_without_loader_workers() -> None:
    train = augmented().train
    train.set_epoch(4)
    batches = {
        workers: torch.cat([x for x, _ in DataLoader(train, batch_size=4, num_workers=workers)])
        for workers in (0, 2)
    }
    assert torch.equal(batches[0], batches[2])


def test_augmentation_is_the_same_whatever_integer_type_the_index_has() -> None:
    train = augmented().train
    assert torch.equal(train[np.int64(3)][0], train[3][0])
    assert torch.equal(train[torch.tensor(3)][0], train[3][0])


def test_augmentation_leaves_the_callers_rng_untouched() -> None:
    train = augmented().train
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train[0]
    assert torch.equal(torch.rand(3), expected)


def test_eval_split_never_augments() -> None:
    plain, aug = augmented(augment=False), augmented()
    assert torch.equal(all_items(plain.eval)[0], all_items(aug.eval)[0])


# --- IDX files and Fashion-MNIST ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_round_trips_a_written_array(tmp_path: Path, dtype: type) -> None:
    array = np.arange(2 * 3 * 5, dtype=dtype).reshape(2, 3, 5) * 3
    write_idx(tmp_path / "a.gz", array)
    read = read_idx(tmp_path / "a.gz")
    assert read.dtype == array.dtype and np.array_equal(read, array)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x00\x08\x01\x00\x00\x00\x02ab",  # magic does not start with two zero bytes
        b"\x00\x00\x07\x01\x00\x00\x00\x02ab",  # unknown type code
        b"\x00\x00\x08\x02\x00\x00\x00\x02",  # header promises two dimensions, has one
        b"\x00\x00\x08\x01\x00\x00\x00\x03ab",  # payload shorter than the dimensions say
    ],
)
def test_read_idx_rejects_a_corrupt_file(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(ConfigError, match="bad.gz is not a valid IDX file"):
        read_idx(tmp_path / "bad.gz")


def test_read_idx_rejects_a_file_that_is_not_gzip(tmp_path: Path) -> None:
    (tmp_path / "plain.gz").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01a")
    with pytest.raises(ConfigError, match="plain.gz is not a valid IDX file"):
        read_idx(tmp_path / "plain.gz")


def write_tiny_fashion_mnist(root: Path, train: int = 6, test: int = 4) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8) % 10)


def test_dataset_that_reads_files_without_a_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.root=None is invalid: data=fashion_mnist"):
        build_datasets(DataConfig(name="fashion_mnist"), seed=0)


def test_fashion_mnist_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.gz is missing: set data.root"):
        build_datasets(DataConfig(name="fashion_mnist", root=str(tmp_path)), seed=0)


def test_fashion_mnist_resizes_and_repeats_grey_to_the_configured_shape(tmp_path: Path) -> None:
    write_tiny_fashion_mnist(tmp_path)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), channels=3, image_size=32)
    splits = build_datasets(cfg, seed=0)
    assert (splits.num_classes, splits.channels, splits.image_size) == (10, 3, 32)
    assert (len(splits.train), len(splits.eval)) == (6, 4)
    x, y = splits.train[5]
    assert x.shape == (3, 32, 32) and y == 5
    assert torch.equal(x[0], x[2])


def test_fashion_mnist_at_native_size_is_the_normalised_file_pixels(tmp_path: Path) -> None:
    write_tiny_fashion_mnist(tmp_path)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), channels=1, image_size=28)
    x, _ = build_datasets(cfg, seed=0).eval[0]
    raw = torch.from_numpy(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")[0]).float() / 255
    assert torch.allclose(x[0] * 0.3530 + 0.2860, raw, atol=1e-6)


@pytest.mark.integration
@pytest.mark.skipif(
    not FASHION_MNIST_ROOT.is_dir(),
    reason=f"{FASHION_MNIST_ROOT} absent (Debian's Fashion-MNIST package is not installed)",
)
def test_real_fashion_mnist_has_60000_train_and_10000_test_images() -> None:
    cfg = DataConfig(name="fashion_mnist", root=str(FASHION_MNIST_ROOT), channels=1, image_size=28)
    splits = build_datasets(cfg, seed=0)
    assert (len(splits.train), len(splits.eval)) == (60000, 10000)
    x, y = splits.train[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10
    assert abs(x.mean().item()) < 1.5


# --- torchvision datasets on disk --------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_is_a_config_error_not_torchvisions(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not found in .*set data.download=true"):
        build_datasets(DataConfig(name=name, root=str(tmp_path)), seed=0)


def write_image_folder(root: Path) -> None:
    for split, per_class in (("train", 3), ("val", 2)):
        for label, name in enumerate(("ant", "bee")):
            for i in range(per_class):
                write_png(root / split / name / f"{i}.png", value=100 * label + 10 * i)


@pytest.mark.parametrize("name", ["image_folder", "imagenet"])
def test_image_folder_loads_train_and_val_class_folders(tmp_path: Path, name: str) -> None:
    write_image_folder(tmp_path)
    splits = build_datasets(DataConfig(name=name, root=str(tmp_path), image_size=16), seed=0)
    assert (splits.num_classes, splits.channels, splits.image_size) == (2, 3, 16)
    assert (len(splits.train), len(splits.eval)) == (6, 4)
    images, labels = all_items(splits.eval)
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1]


def test_image_folder_augmentation_is_seeded(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    cfg = DataConfig(name="image_folder", root=str(tmp_path), image_size=8, augment=True)
    first, second = build_datasets(cfg, seed=0).train, build_datasets(cfg, seed=0).train
    first.set_epoch(1)
    second.set_epoch(1)
    assert first[2][0].shape == (3, 8, 8)
    assert torch.equal(first[2][0], second[2][0])


def test_tiny_imagenet_val_annotations_layout_is_read(tmp_path: Path) -> None:
    for name in ("n01", "n02"):
        write_png(tmp_path / "train" / name / "images" / f"{name}_0.JPEG", value=50)
    write_png(tmp_path / "val" / "images" / "val_0.JPEG", value=60)
    write_png(tmp_path / "val" / "images" / "val_1.JPEG", value=70)
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t1\t9\t9\n"
    )
    splits = build_datasets(DataConfig(name="tiny_imagenet", root=str(tmp_path)), seed=0)
    assert splits.num_classes == 2
    assert [splits.eval[i][1] for i in range(2)] == [1, 0]


def test_val_class_missing_from_train_is_a_config_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    write_png(tmp_path / "val" / "cat" / "0.png", value=0)
    with pytest.raises(ConfigError, match="'cat'"):
        build_datasets(DataConfig(name="image_folder", root=str(tmp_path)), seed=0)


def test_image_folder_without_train_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train has no class folders"):
        build_datasets(DataConfig(name="imagenet", root=str(tmp_path)), seed=0)
