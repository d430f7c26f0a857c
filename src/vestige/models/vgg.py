"""VGG-16 (Simonyan & Zisserman 2015) for small images, with or without BatchNorm.

The 13 convolutions (3x3, padding 1) in five groups ended by a 2x2 max-pool, then a classifier:
- `torchvision` (the default): torchvision's `vgg16()` unchanged, an adaptive average pool to 7x7
  (on 32 px it copies the 1x1 map 49 times) and Linear 25088-4096-4096-classes with ReLU and
  Dropout. Ranadive et al.'s public code trains exactly that network on 32 px CIFAR-10 (SGD lr
  0.001), with torchvision's 1000 outputs for 10 labels; here the last layer has one output per
  class.
- `small`: the usual CIFAR VGG, the 1x1x512 map flattened (an average pool to 1x1, the same on
  32 px) and Linear 512-512-classes with ReLU and Dropout; that this is Leavitt & Morcos'
  "VGG-16-like" network is unconfirmed.

The module names and indices are torchvision's (`features.N`, `classifier.N`, with its in-place
ReLUs), so a width-1 network without BatchNorm loads a torchvision `vgg16` state dict, and the
units are the ReLU outputs Ranadive et al. hook (`selectivity/units.py`): stages conv1..conv5
(the convolutions between two pools) and `classifier`. The regularizer's default stages, every
stage but the last, leave the classifier out.

The pools round up (`ceil_mode`): identical to torchvision's wherever the maps are even (32 and
224 px), and 28 px images (Fashion-MNIST) give maps of 14, 7, 4, 2, 1 instead of an empty one.
`width` multiplies every convolution's channels and the classifier's hidden width.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import vgg as tv

NAMES = ("vgg16", "vgg16_bn")  # the same network; model.batch_norm chooses, vgg16_bn.yaml sets it
LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
CLASSIFIERS = ("torchvision", "small")


def vgg_features(in_channels: int, width: float, batch_norm: bool) -> nn.Sequential:
    """The convolutions of `LAYOUT`, each followed by BatchNorm (optional) and a ReLU."""
    layers: list[nn.Module] = []
    for entry in LAYOUT:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        channels = max(1, round(entry * width))
        layers.append(nn.Conv2d(in_channels, channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = channels
    return nn.Sequential(*layers)


def vgg_classifier(
    kind: str, channels: int, num_classes: int, width: float, dropout: float
) -> tuple[nn.Module, nn.Sequential]:
    """The pool before the classifier and the classifier on a map of `channels`."""
    if kind == "torchvision":
        side, hidden = 7, max(1, round(4096 * width))
    else:
        side, hidden = 1, channels
    classifier = nn.Sequential(
        nn.Linear(channels * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
    return nn.AdaptiveAvgPool2d((side, side)), classifier


class VGG(tv.VGG):
    """torchvision's VGG with a width multiplier, a choice of classifier and input channels."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        batch_norm: bool = False,
        classifier: str = "torchvision",
        dropout: float = 0.5,
    ) -> None:
        nn.Module.__init__(self)
        self.features = vgg_features(in_channels, width, batch_norm)
        channels = max(1, round(LAYOUT[-2] * width))
        self.avgpool, self.classifier = vgg_classifier(
            classifier, channels, num_classes, width, dropout
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's: He-normal (fan-out) convolutions, unit BatchNorm, N(0, 0.01) linear
        weights, zero biases (the initialisation Ranadive et al.'s network had)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)


def build_vgg(cfg, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return VGG(num_classes, in_channels, cfg.width, cfg.batch_norm, cfg.classifier, cfg.dropout)
