"""`data.decode=gpu`: folder images read as encoded bytes by the workers, decoded in batches on
the run's device.

Why: a PIL pipeline decodes some 200-250 ImageNet images/s per CPU worker, so a fast GPU needs
more workers than most clusters give it. Here a worker does only what needs an image's size: it
reads the file's bytes, the size from the JPEG header (PIL reads the header, not the pixels) and,
for a training item, draws the RandomResizedCrop box and the flip with the very transform and
draws of the PIL path (`folder_transform`). `SeededTrainSet` reseeds torch's generator per item
from (seed, epoch, index), so the boxes are the PIL path's and a resumed run sees the same crops.
The main process then decodes a whole batch with one `decode_jpeg` call on the device (nvJPEG on
CUDA, libjpeg-turbo on the CPU), and crops, resizes (bilinear, antialiased), flips and normalises
there.

Pixels: decoding on the CPU gives PIL's pixels bit for bit; resizing the uint8 tensor instead of
the PIL image differs by at most 1 of 255 in a few pixels (on CUDA torchvision resizes in float32
and rounds: still at most 1, in more pixels). tests/test_gpu_decode.py measures both. Files that
are not RGB or greyscale JPEGs (PNG, CMYK JPEG; a handful in ImageNet) are decoded on the CPU with
`decode_image`, then shaped on the device with the rest.

A worker hands a batch over as one tensor of all its files' bytes: one block of shared memory,
where a tensor per image would cost a file descriptor (and a round trip) each.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from vestige.data.transforms import Normalise, centre_crop, random_resized_crop

# what a JPEG header says that decode_jpeg(mode=RGB) decodes on any device: colour and grey
DEVICE_MODES = ("RGB", "L")
Box = tuple[int, int, int, int]  # top, left, height, width


@dataclass(frozen=True)
class EncodedImage:
    """What a worker leaves of one image: the file's bytes (1-D uint8), whether decode_jpeg can
    decode them on any device (an RGB or grey JPEG), and for a training item the crop box and the
    flip it drew; an evaluation item has no box (the centre recipe)."""

    data: Tensor
    jpeg: bool
    box: Box | None = None
    flip: bool = False


@dataclass(frozen=True)
class EncodedBatch:
    """A batch of `EncodedImage`s with their bytes end to end in one tensor."""

    data: Tensor
    lengths: list[int]
    jpeg: list[bool]
    boxes: list[Box | None]
    flips: list[bool]

    @classmethod
    def pack(cls, images: list[EncodedImage]) -> EncodedBatch:
        data = torch.cat([image.data for image in images])
        lengths = [len(image.data) for image in images]
        jpeg, boxes = [image.jpeg for image in images], [image.box for image in images]
        return cls(data, lengths, jpeg, boxes, [image.flip for image in images])

    def unpack(self) -> list[EncodedImage]:
        fields = (self.data.split(self.lengths), self.jpeg, self.boxes, self.flips)
        return [EncodedImage(*image) for image in zip(*fields, strict=True)]


def read_bytes(path: str) -> Tensor:
    """A file's bytes as a 1-D uint8 tensor that can go to shared memory (torchvision's
    `read_file` gives one that cannot)."""
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8))


class DeviceDecoding:
    """The folder recipe of `folder_transform` cut in two: `__call__` (a worker, per item: a
    file's bytes -> `EncodedImage`) and `decode` (the main process, per batch, on the device)."""

    def __init__(self, normalise: Normalise, size: int, augment: bool) -> None:
        self.normalise = normalise
        self.crop = random_resized_crop(size) if augment else None
        self.centre = centre_crop(size)

    def __call__(self, data: Tensor) -> EncodedImage:
        header = Image.open(io.BytesIO(data.numpy()))
        jpeg = header.format == "JPEG" and header.mode in DEVICE_MODES
        if self.crop is None:
            return EncodedImage(data, jpeg)
        params = self.crop.make_params([header])  # the draws RandomResizedCrop makes on PIL
        box = (params["top"], params["left"], params["height"], params["width"])
        flip = torch.rand(1).item() < 0.5  # the draw of RandomHorizontalFlip
        return EncodedImage(data, jpeg, box, flip)

    def decode(self, images: list[EncodedImage], device: torch.device) -> Tensor:
        """Float32 B x 3 x size x size on `device`: the images the PIL path gives, decoded,
        cropped, resized, flipped and normalised there."""
        pixels = self.pixels(images, device)
        shaped = [self.geometry(p, image) for p, image in zip(pixels, images, strict=True)]
        return self.normalise(torch.stack(shaped))

    def pixels(self, images: list[EncodedImage], device: torch.device) -> list[Tensor]:
        """Each whole image as uint8 3 x H x W on `device`; the JPEGs in one decode_jpeg call
        (grey ones made RGB by it, as PIL's convert("RGB") does), the others on the CPU."""
        jpegs = [image.data for image in images if image.jpeg]
        decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else [])
        return [
            next(decoded) if image.jpeg else decode_image(image.data, ImageReadMode.RGB).to(device)
            for image in images
        ]

    def geometry(self, pixels: Tensor, image: EncodedImage) -> Tensor:
        if image.box is None or self.crop is None:  # an evaluation item (the latter for typing)
            return self.centre(pixels)
        top, left, height, width = image.box
        box = {"top": top, "left": left, "height": height, "width": width}
        cropped = self.crop.transform(pixels, box)
        return cropped.flip(-1) if image.flip else cropped


def collate_encoded(items: list[tuple[EncodedImage, int]]) -> tuple[EncodedBatch, Tensor]:
    """A batch of encoded items: the images packed, the labels stacked."""
    images = EncodedBatch.pack([image for image, _ in items])
    return images, default_collate([label for _, label in items])


def device_decoding(dataset: Dataset) -> DeviceDecoding | None:
    """How a split read with data.decode=gpu decodes (under its subsets and seeding), or None
    for a split of ready images."""
    while dataset is not None:
        transform = getattr(dataset, "transform", None)
        if isinstance(transform, DeviceDecoding):
            return transform
        dataset = getattr(dataset, "dataset", getattr(dataset, "base", None))
    return None


class DecodedBatches:
    """A DataLoader over an encoded split whose batches arrive decoded on `device`: (float32
    B x 3 x size x size images, labels), as a DataLoader over the PIL path's split gives them.
    Keeps what consumers read of a loader: len(), dataset, batch_size, num_workers."""

    def __init__(self, loader: DataLoader, decoding: DeviceDecoding, device: torch.device) -> None:
        self.loader = loader
        self.decoding = decoding
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in self.loader:
            yield self.decoding.decode(images.unpack(), self.device), labels

    @property
    def dataset(self) -> Dataset:
        return self.loader.dataset

    @property
    def batch_size(self) -> int | None:
        return self.loader.batch_size

    @property
    def num_workers(self) -> int:
        return self.loader.num_workers


ImageLoader = DataLoader | DecodedBatches


def image_loader(dataset: Dataset, device: torch.device, **options: Any) -> ImageLoader:
    """A DataLoader over `dataset` (`options` as DataLoader's) or, over a split read with
    data.decode=gpu, one whose batches are decoded on `device`. Every loader of images in
    vestige is made here, so a consumer never sees encoded bytes."""
    decoding = device_decoding(dataset)
    if decoding is None:
        return DataLoader(dataset, **options)
    options |= {"collate_fn": collate_encoded, "pin_memory": False}  # bytes need no pinning
    return DecodedBatches(DataLoader(dataset, **options), decoding, device)
