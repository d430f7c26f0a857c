"""Model registry: `model.name` -> a builder taking (model cfg, classes, channels, image size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from vestige.config import ModelConfig
from vestige.errors import invalid
from vestige.models.convit import VARIANTS, build_convit
from vestige.models.resnet import ARCHITECTURES, build_resnet

Builder = Callable[[Any, int, int, int], nn.Module]

MODELS: dict[str, Builder] = {name: build_resnet for name in ARCHITECTURES} | {
    name: build_convit for name in VARIANTS
}


def check(cfg: ModelConfig) -> None:
    """One-line ConfigError for the first bad value of the `model` section."""
    if cfg.name not in MODELS:
        raise invalid("model", cfg.name, f"choose one of {', '.join(sorted(MODELS))}")
    if hasattr(cfg, "stem") and cfg.stem not in ("small", "imagenet"):
        raise invalid("model.stem", cfg.stem, "use small (28-64 px) or imagenet (224 px)")
    if hasattr(cfg, "width") and cfg.width <= 0:
        raise invalid("model.width", cfg.width, "use a positive width multiplier such as 0.25")


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Build the network named by `cfg.name` (checked beforehand by `check`)."""
    return MODELS[cfg.name](cfg, num_classes, in_channels, image_size)
