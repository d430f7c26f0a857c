"""Model registry: `model.name` -> a builder taking (model cfg, classes, channels, image size)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from vestige.config import ModelConfig, ResNetConfig
from vestige.errors import ConfigError, invalid
from vestige.models.cifar_resnet import BLOCKS_PER_STAGE, SHORTCUTS, build_cifar_resnet
from vestige.models.convit import VARIANTS, build_convit
from vestige.models.resnet import ARCHITECTURES, build_resnet
from vestige.models.tcnn import transform
from vestige.models.vgg import CLASSIFIERS, NAMES, build_vgg

Builder = Callable[[Any, int, int, int], nn.Module]

MODELS: dict[str, Builder] = (
    {name: build_resnet for name in ARCHITECTURES}
    | {name: build_convit for name in VARIANTS}
    | {name: build_cifar_resnet for name in BLOCKS_PER_STAGE}
    | {name: build_vgg for name in NAMES}
)
TRANSFORMED = "tcnn"


def check(cfg: ModelConfig) -> None:
    """One-line ConfigError for the first bad value of the `model` section."""
    if cfg.name not in MODELS and cfg.name != TRANSFORMED:
        choices = ", ".join(sorted([*MODELS, TRANSFORMED]))
        raise invalid("model", cfg.name, f"choose one of {choices}")
    if cfg.name == TRANSFORMED and cfg.base not in ARCHITECTURES:
        raise invalid("model.base", cfg.base, f"choose one of {', '.join(ARCHITECTURES)}")
    if hasattr(cfg, "stem") and cfg.stem not in ("small", "imagenet"):
        raise invalid("model.stem", cfg.stem, "use small (28-64 px) or imagenet (224 px)")
    if hasattr(cfg, "width") and cfg.width <= 0:
        raise invalid("model.width", cfg.width, "use a positive width multiplier such as 0.25")
    if hasattr(cfg, "shortcut") and cfg.shortcut not in SHORTCUTS:
        raise invalid("model.shortcut", cfg.shortcut, "use A (zero-padded identity) or B (1x1)")
    if hasattr(cfg, "classifier") and cfg.classifier not in CLASSIFIERS:
        raise invalid("model.classifier", cfg.classifier, "use torchvision (4096-wide) or small")
    if hasattr(cfg, "dropout") and not 0 <= cfg.dropout < 1:
        raise invalid("model.dropout", cfg.dropout, "use a probability in [0, 1) such as 0.5")
    if hasattr(cfg, "batch_norm") and cfg.batch_norm != cfg.name.endswith("_bn"):
        other = "vgg16_bn" if cfg.batch_norm else "vgg16"
        raise invalid("model.batch_norm", cfg.batch_norm, f"model={other} is the VGG it names")
    if cfg.name == TRANSFORMED:
        _check_transformed(cfg)


def _check_transformed(cfg: ModelConfig) -> None:
    stages = ("layer1", "layer2", "layer3", "layer4")
    if not set(cfg.converted_stages) <= set(stages):
        fix = f"name some of {', '.join(stages)}, e.g. [layer4] ([]: the ResNet as it is)"
        raise invalid("model.converted_stages", list(cfg.converted_stages), fix)
    if cfg.locality_strength <= 0:
        fix = "use a positive sharpness such as 20 (near-hard attention on each kernel offset)"
        raise invalid("model.locality_strength", cfg.locality_strength, fix)


def base_config(cfg: ModelConfig) -> ModelConfig:
    """The network a model's weights are first built as: a T-CNN's ResNet, else the model itself.
    A snapshot loaded with `init.from` must be of this network."""
    if cfg.name != TRANSFORMED:
        return cfg
    return ResNetConfig(cfg.base, cfg.stem, cfg.width, cfg.zero_init_residual)


def build_model(
    cfg: ModelConfig,
    num_classes: int,
    in_channels: int,
    image_size: int,
    initial: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """Build the network named by `cfg.name` (checked beforehand by `check`); `initial` is a state
    dict of its `base_config` network (another run's snapshot) loaded before any conversion."""
    base = base_config(cfg)
    model = MODELS[base.name](base, num_classes, in_channels, image_size)
    if initial is not None:
        try:
            model.load_state_dict(initial)
        except RuntimeError as err:
            first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
            raise ConfigError(
                f"init.from holds a snapshot of another network than model.{base.name} "
                f"({first}); choose a run of the same model and number of classes"
            ) from None
    if cfg.name == TRANSFORMED:
        return transform(model, cfg.converted_stages, cfg.locality_strength, cfg.gate)
    return model
