"""How fast the folder-dataset pipelines feed training: images/s of one CPU worker of the PIL
path (data.decode=cpu), of one CPU worker of data.decode=gpu (bytes, JPEG header, crop box), and
of decode=gpu's batch decoding on the device, side by side, on a folder of real JPEGs.

The folder is generated (or reused from `--cache`): `--images` JPEGs of ImageNet-like sizes
(400-500 x 300-375 px, some upright), quality 90, of smooth gradients, shapes and a little grain,
ten classes. A worker's figure is measured in this process, item by item through the dataset
(and the batch collation), which is what each DataLoader worker does; the device figure times
`decode` on whole batches, synchronised. On a machine without CUDA the GPU decode is skipped and
decode=gpu's batch decoding is measured on the CPU, labelled so. It also prints how far
decode=gpu's evaluation images are from the PIL path's. Repetitions alternate their order;
figures are medians. A benchmark, not a test: it exits 0 whatever the figures.

    .venv/bin/python scripts/bench_data.py
    .venv/bin/python scripts/bench_data.py --images 200 --measure 100 --repeats 1
    .venv/bin/python scripts/bench_data.py --device cuda --cache /scratch/bench_jpegs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from bench_loop import device_name, measure, synchronized_clock
from PIL import Image, ImageDraw, ImageFilter

from vestige.config import DataConfig
from vestige.data import build_datasets, image_loader
from vestige.data.encoded import DeviceDecoding, EncodedBatch, collate_encoded, device_decoding
from vestige.data.folders import IMAGENET_STD
from vestige.distributed import select_device

CLASSES = 10
REFERENCE = 2470  # img/s: NVIDIA's ResNet-50 on one A100 (DeepLearningExamples, AMP)


def natural_image(rng: np.random.Generator) -> Image.Image:
    """A photo-like JPEG subject: a colour gradient, a few soft shapes, a little grain."""
    width, height = int(rng.integers(400, 501)), int(rng.integers(300, 376))
    if rng.random() < 0.2:
        width, height = height, width
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    ends = rng.uniform(0, 255, (2, 3))
    pixels = ends[0] + (ends[1] - ends[0]) * ((x + y) / 2)[..., None]
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(20, width // 2), y0 + rng.integers(20, height // 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(2))
    grain = rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))


def jpeg_folder(images: int, parent: Path) -> Path:
    """`root/{train,val}/<class>/*.jpg`, nine in ten images for training; reused when `parent`
    already holds a complete folder of as many images."""
    root = parent / f"jpegs-{images}"
    done = root / "done.json"
    if done.is_file():
        return root
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for i in range(images):
        split = "val" if i // CLASSES % 10 == 9 else "train"
        folder = root / split / f"class{i % CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        natural_image(rng).save(folder / f"{i:06d}.jpg", quality=90)
    done.write_text(json.dumps({"images": images}))
    print(f"generated {images} JPEGs in {time.perf_counter() - started:.0f} s")
    return root


def worker_pass(dataset, count: int, batch_size: int, collate: Callable | None) -> float:
    """Seconds one worker takes for `count` items of `dataset` (and their collation)."""
    started = time.perf_counter()
    for first in range(0, count, batch_size):
        items = [dataset[i] for i in range(first, min(first + batch_size, count))]
        if collate is not None:
            collate(items)
    return time.perf_counter() - started


def device_pass(
    decoding: DeviceDecoding, batches: list[EncodedBatch], device: torch.device
) -> float:
    """Seconds to decode, crop, resize, flip and normalise `batches` on `device`."""
    started = synchronized_clock(device)
    for batch in batches:
        decoding.decode(batch.unpack(), device)
    return synchronized_clock(device) - started


def eval_difference(cpu_eval, gpu_eval, device: torch.device, images: int) -> str:
    """Max and mean |decode=gpu - PIL| of the first evaluation images, in pixel levels."""
    count = min(images, len(cpu_eval))
    expected = torch.stack([cpu_eval[i][0] for i in range(count)])
    subset = torch.utils.data.Subset(gpu_eval, range(count))
    decoded, _ = next(iter(image_loader(subset, device, batch_size=count)))
    levels = (decoded.cpu() - expected).abs() * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    differing = (levels > 0.5).float().mean().item()
    return (
        f"max {levels.max().item():.2f} levels, mean {levels.mean().item():.4f} levels,"
        f" {differing:.2%} of the values differ ({count} images)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs in the folder")
    parser.add_argument("--cache", type=Path, default=None, help="keep (and reuse) them here")
    parser.add_argument("--measure", type=int, default=400, help="training images per pass")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each pipeline")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as scratch:
        bench(args, jpeg_folder(args.images, args.cache or Path(scratch)))


def bench(args: argparse.Namespace, root: Path) -> None:
    device = select_device(args.device)
    data = {"name": "image_folder", "root": str(root), "image_size": args.image_size}
    pil = build_datasets(DataConfig(**data, augment=True), seed=0)
    gpu = build_datasets(DataConfig(**data, augment=True, decode="gpu"), seed=0)
    count = min(args.measure, len(pil.train))
    decoding = device_decoding(gpu.train)
    items = [gpu.train[i] for i in range(count)]
    batches = [
        collate_encoded(items[i : i + args.batch_size])[0]
        for i in range(0, count, args.batch_size)
    ]
    device_pass(decoding, batches[:1], device)  # warm-up: nvJPEG's handles, kernels
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"data {len(pil.train)} + {len(pil.eval)} JPEGs in {root} | image_size {args.image_size}"
        f" | batch {args.batch_size}\ndevice {device} ({device_name(device)})"
        f" | torch {torch.__version__} torchvision {torchvision.__version__}"
        f" | threads {torch.get_num_threads()} | {os.cpu_count()} CPUs, load average {load}"
    )
    print(f"{args.repeats} passes over {count} training images (RandomResizedCrop + flip)")
    where = "the GPU" if device.type == "cuda" else "the CPU, in the main process"
    sides = {
        "cpu: PIL, 1 worker": lambda: worker_pass(pil.train, count, args.batch_size, None),
        "gpu: bytes+header+box, 1 worker": lambda: worker_pass(
            gpu.train, count, args.batch_size, collate_encoded
        ),
        f"gpu: decode+resize on {device.type}": lambda: device_pass(decoding, batches, device),
    }
    rates = measure(sides, args.repeats, count)
    print(f"\n{'pipeline':<34} {'median':>9} {'min':>9} {'max':>9}   (img/s)")
    for side, values in rates.items():
        median = statistics.median(values)
        print(f"{side:<34} {median:9.1f} {min(values):9.1f} {max(values):9.1f}")
    pil_rate, worker_rate = (statistics.median(v) for v in list(rates.values())[:2])
    print(
        f"\nCPU workers to feed {REFERENCE} img/s (an A100's ResNet-50): PIL path"
        f" {REFERENCE / pil_rate:.0f}, decode=gpu {REFERENCE / worker_rate:.1f}"
        f" (which then decodes on {where})"
    )
    if device.type != "cuda":
        print(
            "no CUDA device: decoding on the GPU is not measured; the 'gpu: decode+resize on"
            " cpu' row is decode=gpu's batch decoding run on the CPU"
        )
    difference = eval_difference(pil.eval, gpu.eval, device, args.batch_size)
    print(f"evaluation images, decode=gpu on {device.type} vs PIL: {difference}")


if __name__ == "__main__":
    main()
