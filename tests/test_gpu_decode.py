"""data.decode=gpu on a folder of real JPEGs, run on the CPU (no GPU here or in CI): the workers
read bytes and draw the PIL path's crops, batches are decoded with one decode_jpeg call, and the
images equal the PIL path's up to the documented resize difference (docs/outputs.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from torchvision.datasets.folder import default_loader
from torchvision.transforms import v2

import vestige
from vestige.config import DataConfig
from vestige.data import DataSplits, build_datasets, check, image_loader
from vestige.data.encoded import DecodedBatches, device_decoding
from vestige.data.folders import IMAGENET_STD
from vestige.errors import ConfigError
from vestige.train.batches import train_loader

CPU = torch.device("cpu")
SIZE = 32
# (width, height): landscape, portrait, square, tiny, wide, upright; ImageNet-like aspect ratios
SIZES = [(67, 45), (40, 72), (90, 90), (35, 35), (120, 70), (53, 80)]
CLASSES = ("ant", "bee", "cat")
# measured on these images (CPU): PIL's resize and torchvision's uint8 resize differ by 1 level
# in about 0.5% (centre recipe) to 2% (random crops, some enlarged) of the values
MAX_LEVELS, MEAN_LEVELS = 1.0, 0.05


def natural_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth gradients, a ripple and a little grain: what JPEG is made for, unlike white noise;
    left and right differ, so a missed flip shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [x * 255 / width, y * 255 / height, 128 + 90 * np.sin(x / 5 + y / 9 + seed)]
    pixels = np.stack(channels, -1) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_jpeg_folder(root: Path) -> list[Path]:
    """train/ and val/ with a folder per class: JPEGs (quality 90) of different sizes, the first
    of each class greyscale, the second a PNG."""
    files = []
    for split, sizes in (("train", SIZES), ("val", SIZES[:3])):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (width, height) in enumerate(sizes):
                image = natural_image(width, height, seed=10 * c + i)
                path = folder / (f"{i}.png" if i == 1 else f"{i}.jpg")
                (image.convert("L") if i == 0 else image).save(path, quality=90)
                files.append(path)
    return files


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    write_jpeg_folder(root)
    return root


def splits(folder: Path, decode: str, augment: bool = True) -> DataSplits:
    cfg = DataConfig(
        name="image_folder", root=str(folder), image_size=SIZE, augment=augment, decode=decode
    )
    return build_datasets(cfg, seed=7)


def pil_batch(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def decoded_batch(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    loader = image_loader(dataset, CPU, batch_size=len(dataset))
    assert isinstance(loader, DecodedBatches)
    return next(iter(loader))


def levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of two normalised batches, in pixel levels (0-255)."""
    return (a - b).abs() * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255


def test_batched_decode_gives_pils_pixels_bit_for_bit(folder):
    files = sorted((folder / "train").rglob("*.*"))
    dataset = splits(folder, "gpu", augment=False).train
    decoding = device_decoding(dataset)
    by_path = {path: i for i, (path, _) in enumerate(dataset.base.samples)}
    items = [dataset[by_path[str(path)]][0] for path in files]
    assert sum(item.jpeg for item in items) == 15  # the 3 PNGs are decoded with decode_image
    for path, pixels in zip(files, decoding.pixels(items, CPU), strict=True):
        expected = torch.from_numpy(np.array(default_loader(str(path)))).permute(2, 0, 1)
        assert pixels.shape == expected.shape, path  # grey JPEGs decode to 3 channels too
        assert torch.equal(pixels, expected), path


@pytest.mark.parametrize("split", ["train", "eval"])
def test_images_differ_from_the_pil_paths_only_by_the_resize(folder, split):
    pil, gpu = splits(folder, "cpu"), splits(folder, "gpu")
    expected = pil_batch(getattr(pil, split))
    images, labels = decoded_batch(getattr(gpu, split))
    assert images.shape == expected.shape == (len(expected), 3, SIZE, SIZE)
    assert images.dtype == torch.float32
    assert labels.tolist() == getattr(pil, split).labels.tolist()
    difference = levels(images, expected)
    assert difference.max() <= MAX_LEVELS + 1e-3
    assert difference.mean() <= MEAN_LEVELS


def test_training_crops_and_flips_are_the_pil_paths_for_the_same_seed_epoch_and_index(
    folder, monkeypatch
):
    drawn: list[dict] = []
    flipped: list[int] = []
    make_params = v2.RandomResizedCrop.make_params
    flip = v2.RandomHorizontalFlip.transform

    def recording_crop(self, flat_inputs):
        drawn.append(make_params(self, flat_inputs))
        return drawn[-1]

    def recording_flip(self, inpt, params):
        flipped.append(len(drawn) - 1)
        return flip(self, inpt, params)

    pil, gpu = splits(folder, "cpu").train, splits(folder, "gpu").train
    items = range(len(pil))
    with monkeypatch.context() as patch:
        patch.setattr(v2.RandomResizedCrop, "make_params", recording_crop)
        patch.setattr(v2.RandomHorizontalFlip, "transform", recording_flip)
        for epoch in (0, 3):
            pil.set_epoch(epoch)
            for i in items:
                pil[i]
    boxes, flips = [], []
    for epoch in (0, 3):
        gpu.set_epoch(epoch)
        for i in items:
            image = gpu[i][0]
            boxes.append(image.box)
            flips.append(image.flip)
    expected = [(p["top"], p["left"], p["height"], p["width"]) for p in drawn]
    assert boxes == expected
    assert [i for i, f in enumerate(flips) if f] == flipped
    assert 0 < len(flipped) < len(flips) and len(set(boxes)) > len(items)  # they do vary


def training_batches(dataset, workers: int, epoch: int = 2) -> list[torch.Tensor]:
    loader, batches = train_loader(dataset, 4, seed=3, rank=0, world=1, workers=workers, device=CPU)
    batches.set_position(epoch, 0)
    dataset.set_epoch(epoch)
    return [torch.cat([images.flatten(), labels.float()]) for images, labels in loader]


def test_training_batches_are_deterministic_and_independent_of_workers(folder):
    dataset = splits(folder, "gpu").train
    first = training_batches(dataset, workers=0)
    assert len(first) == len(dataset) // 4
    for again in (training_batches(dataset, workers=0), training_batches(dataset, workers=2)):
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other_epoch = training_batches(dataset, workers=0, epoch=3)
    assert not all(torch.equal(a, b) for a, b in zip(first, other_epoch, strict=True))


def test_loader_keeps_what_consumers_read_of_a_dataloader(folder):
    dataset = splits(folder, "gpu").eval
    loader = image_loader(dataset, CPU, batch_size=4, num_workers=0)
    assert (len(loader), loader.dataset, loader.batch_size, loader.num_workers) == (
        3,
        dataset,
        4,
        0,
    )
    assert isinstance(image_loader(splits(folder, "cpu").eval, CPU), torch.utils.data.DataLoader)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"decode": "tpu"}, "data.decode='tpu' is invalid: choose cpu or gpu"),
        (
            {"name": "synthetic", "decode": "gpu"},
            "data.decode='gpu' is invalid: only folder datasets (imagenet, tiny_imagenet, "
            "image_folder) decode on the device; set data.decode=cpu",
        ),
        (
            {"augment": True, "randaugment": True, "decode": "gpu"},
            "data.decode='gpu' is invalid: it crops, resizes and flips only: set "
            "data.randaugment=false and data.random_erasing=0, or data.decode=cpu",
        ),
    ],
)
def test_decode_mistakes_are_one_line_config_errors(folder, settings, message):
    cfg = DataConfig(**{"name": "image_folder", "root": str(folder), **settings})
    with pytest.raises(ConfigError) as caught:
        check(cfg)
    assert str(caught.value) == message


def test_a_tiny_run_trains_and_is_analysed_with_decoding_in_batches(folder, tmp_path):
    run = tmp_path / "run"
    args = [
        "data=image_folder",
        f"data.root={folder}",
        f"data.image_size={SIZE}",
        "data.num_workers=0",
        "device=cpu",
        "model.width=0.125",
        "trainer.batch_size=6",
        "trainer.epochs=2",
        "selectivity.enabled=false",
        "checkpoint.snapshots=[0it,every 1ep]",
    ]
    result = run_cli([*args, "data.decode=gpu", f"hydra.run.dir={run}"], tmp_path)
    assert result.returncode == 0, result.stderr
    trained = vestige.load_run(run)
    assert trained.config.data.decode == "gpu"
    assert [row["step"] for row in trained.metrics] == [0, 3, 6]
    result = run_cli(["task=analyze", f"run={run}", "analysis=selectivity"], tmp_path)
    assert result.returncode == 0, result.stderr
    measured = vestige.load_run(run).selectivity()
    assert sorted(set(measured["step"].tolist())) == [0, 3, 6]
    assert np.isfinite(measured["si"]).all()
    error = run_cli([*args, "data.decode=jpeg"], tmp_path)
    lines = error.stderr.strip().splitlines()
    assert error.returncode == 2 and lines == [
        "error: data.decode='jpeg' is invalid: choose cpu or gpu"
    ]
