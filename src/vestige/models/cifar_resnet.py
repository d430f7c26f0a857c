"""The CIFAR ResNets of He et al. (2016, §4.2): depth 6n+2, three stages of n basic blocks.

A 3x3 stem with 16 channels and no max-pool, stages `layer1..layer3` of 16/32/64 channels (times
`width`), global average pooling and one linear layer. When a block halves the map and doubles the
channels its shortcut is option A (the identity on every second pixel, the new channels zero:
parameter-free) or option B (a 1x1 convolution and BatchNorm, as in the ImageNet ResNets).

Option A is the default: it gives the published 0.27M parameters of ResNet-20 on CIFAR-10, the
figure Leavitt & Morcos (2021) give for theirs; which shortcut they used could not be confirmed
beyond that figure.

The blocks are torchvision's `BasicBlock` and the network a torchvision `ResNet` with its module
names (conv1, bn1, relu, layer1..layer3, avgpool, fc; `maxpool` is kept, as the identity, for the
ablation's cut of a torchvision ResNet), so the selectivity units (block outputs after the
post-add ReLU, stages layer1..layer3), the regularizer's default stages (layer1, layer2) and that
cut apply unchanged. The initialisation is models/resnet.py's.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv

from vestige.models.resnet import ResNet

BLOCKS_PER_STAGE = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}
SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A: the input subsampled by `stride` with `extra` zero channels appended."""

    def __init__(self, stride: int, extra: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


def shortcut(kind: str, inplanes: int, planes: int, stride: int) -> nn.Module | None:
    """A block's `downsample`: None (the identity) when its input and output shapes agree."""
    if stride == 1 and inplanes == planes:
        return None
    if kind == "A":
        return ZeroPadShortcut(stride, planes - inplanes)
    return nn.Sequential(tv.conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))


class CifarResNet(ResNet):
    """ResNet-(6n+2) for 32 px images; He-normal (fan-out) convolutions and unit BatchNorm."""

    def __init__(
        self,
        blocks: int,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        shortcut_kind: str = "A",
    ) -> None:
        nn.Module.__init__(self)
        widths = [max(1, round(16 * width)) * 2**i for i in range(3)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        stages = []
        inplanes = widths[0]
        for index, planes in enumerate(widths):
            stage = []
            for b in range(blocks):
                stride = 2 if index > 0 and b == 0 else 1
                downsample = shortcut(shortcut_kind, inplanes, planes, stride)
                stage.append(tv.BasicBlock(inplanes, planes, stride, downsample))
                inplanes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[2], num_classes)
        self._init_weights(zero_init_residual=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def build_cifar_resnet(cfg, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return CifarResNet(
        BLOCKS_PER_STAGE[cfg.name], num_classes, in_channels, cfg.width, cfg.shortcut
    )
