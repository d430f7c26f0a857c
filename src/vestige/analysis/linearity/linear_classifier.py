"""The linear model that the network is compared with: softmax regression on the flattened input
images (Kalimeris et al. 2019; docs/science.md §5).

It is trained once per run, on the run's training split without augmentation (the images the
network sees at evaluation), and cached in the run directory with the settings it was trained
with; other settings train it anew.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from vestige.data import image_loader
from vestige.io import atomic_write_bytes


@dataclass(frozen=True)
class ClassifierSettings:
    """What the cached classifier was trained with; a cache with other settings is retrained."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    train_images: int | None
    seed: int


def train_linear_classifier(
    dataset: Dataset,
    num_classes: int,
    settings: ClassifierSettings,
    device: torch.device,
    num_workers: int = 0,
) -> nn.Linear:
    """Softmax regression (cross-entropy, AdamW from zero weights) on flattened images.

    A seeded random subset of `train_images` images when set (a class-sorted split's first N
    would miss classes); data order seeded too, so the same settings give the same model.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    if settings.train_images is not None and settings.train_images < len(dataset):
        chosen = torch.randperm(len(dataset), generator=generator)[: settings.train_images]
        dataset = Subset(dataset, chosen.tolist())
    loader = image_loader(
        dataset,
        device,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
    )
    first, _ = next(iter(image_loader(Subset(dataset, [0]), device, batch_size=1)))
    model = nn.Linear(first[0].numel(), num_classes).to(device)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    for _ in range(settings.epochs):
        for inputs, targets in loader:
            logits = model(inputs.to(device).flatten(1))
            loss = F.cross_entropy(logits, targets.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return model.eval()


def load_cached(path: Path, settings: ClassifierSettings, device: torch.device) -> nn.Linear | None:
    """The classifier cached at `path` if it was trained with `settings`, else None."""
    if not path.exists():
        return None
    saved: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    if saved["settings"] != asdict(settings):
        return None
    model = nn.Linear(saved["weight"].shape[1], saved["weight"].shape[0]).to(device)
    model.load_state_dict({"weight": saved["weight"], "bias": saved["bias"]})
    return model.eval()


def save_cached(path: Path, model: nn.Linear, settings: ClassifierSettings) -> None:
    buffer = io.BytesIO()
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    torch.save({"settings": asdict(settings), **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
