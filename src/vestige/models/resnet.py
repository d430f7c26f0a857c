"""torchvision ResNets with a small-image stem and a width multiplier.

The module names (conv1, bn1, layer1..layer4, fc) and blocks are torchvision's own, so unit names
match the paper's (`layerX.Y`) and a width-1 ImageNet-stem model loads torchvision state dicts.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet as tv

ARCHITECTURES: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (tv.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tv.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tv.Bottleneck, [3, 4, 6, 3]),
}


class ResNet(tv.ResNet):
    """torchvision's ResNet with a choice of stem and stage widths scaled by `width`."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        num_classes: int,
        in_channels: int = 3,
        stem: str = "imagenet",
        width: float = 1.0,
        zero_init_residual: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.dilation, self.groups, self.base_width = 1, 1, 64
        widths = [max(1, round(64 * width)) * 2**i for i in range(4)]
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's initialisation: He-normal convs, unit BN, optional zero last BN gamma."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, tv.Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, tv.BasicBlock):
                    nn.init.zeros_(module.bn2.weight)


def build_resnet(cfg, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    block, layers = ARCHITECTURES[cfg.name]
    return ResNet(
        block, layers, num_classes, in_channels, cfg.stem, cfg.width, cfg.zero_init_residual
    )
