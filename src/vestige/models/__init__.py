"""Model registry: `model.name` -> a builder taking (model cfg, classes, channels, image size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from vestige.models.convit import VARIANTS, build_convit
from vestige.models.resnet import ARCHITECTURES, build_resnet

Builder = Callable[[Any, int, int, int], nn.Module]

MODELS: dict[str, Builder] = {name: build_resnet for name in ARCHITECTURES} | {
    name: build_convit for name in VARIANTS
}


def build_model(cfg: Any, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Build the network named by `cfg.name` (validated beforehand by `vestige.config.validate`)."""
    return MODELS[cfg.name](cfg, num_classes, in_channels, image_size)
