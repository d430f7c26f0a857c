"""Silencing units of a convolutional network and counting what it still gets right.

Ablate = set a unit (`selectivity/units.py`, `block_output`: a channel of a ResNet block's output,
T-CNN and CIFAR ResNets included, or of a VGG ReLU's output) to a fixed value, 0 or its mean, in
eval mode with BN running statistics (docs/science.md §4).

`sweep` is the fast way: per batch the network runs once up to each stage and through it
unablated; every ablation then starts from the cached output of the first block it touches, and
several ablations run as one batched forward. `naive_sweep` is the plain way, one full forward pass
over the data per ablation: the reference that the fast way is tested and benchmarked against
(tests/test_ablation.py, scripts/bench_ablation.py), and the way for networks the fast way cannot
cut (`sweep` chooses).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import ResNet
from torchvision.models.vgg import VGG

from vestige.errors import ConfigError
from vestige.selectivity.units import UnitLayer, measured_layers


@dataclass
class StageAblations:
    """The ablations of one stage: in ablation m, channel c of block b is set to `values[b, c]`
    where `masks[m, b, c]` is true. `layers` are the stage's block outputs, in forward order."""

    layers: list[UnitLayer]
    masks: Tensor  # (ablations, blocks, channels) bool
    values: Tensor  # (blocks, channels)

    @property
    def stage(self) -> str:
        return self.layers[0].stage


@dataclass
class AblationCounts:
    """Correct predictions per ablation and class, and the number of images per class."""

    top1: Tensor  # (ablations, classes) float64
    top5: Tensor  # (ablations, classes) float64
    images: Tensor  # (classes,) float64

    @classmethod
    def zeros(cls, ablations: int, num_classes: int, device: torch.device) -> AblationCounts:
        hits = torch.zeros(ablations, num_classes, dtype=torch.float64, device=device)
        return cls(hits, hits.clone(), torch.zeros(num_classes, dtype=torch.float64, device=device))

    def add_hits(self, rows: Tensor, logits: Tensor, targets: Tensor) -> None:
        """Count the (len(rows), B, classes) logits of ablations `rows` on one batch."""
        top1, top5 = count_hits(logits, targets, self.images.numel())
        self.top1.index_add_(0, rows, top1)
        self.top5.index_add_(0, rows, top5)

    def add_images(self, targets: Tensor) -> None:
        self.images += F.one_hot(targets, self.images.numel()).sum(dim=0)

    def accuracy(self) -> tuple[Tensor, Tensor]:
        """Top-1 and top-5 accuracy per ablation, (ablations,) each."""
        total = self.images.sum().clamp(min=1)
        return self.top1.sum(dim=1) / total, self.top5.sum(dim=1) / total

    def class_accuracy(self) -> Tensor:
        """Top-1 accuracy per ablation and class, (ablations, classes); 0 for absent classes."""
        return self.top1 / self.images.clamp(min=1)


def silence(output: Tensor, masks: Tensor, values: Tensor) -> Tensor:
    """`output` (M*B, C, ...) of M ablations over the same B images, with the channels that
    `masks` (M, C) marks set to `values` (C,)."""
    out = output.unflatten(0, (masks.shape[0], -1))  # (M, B, C, ...)
    shape = (masks.shape[0], 1, masks.shape[1]) + (1,) * (out.dim() - 3)
    fill = values.to(out.dtype).view(shape[2:])
    return torch.where(masks.view(shape), fill, out).flatten(0, 1)


def count_hits(logits: Tensor, targets: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Top-1 and top-5 hits per ablation and class, (M, classes) each, of (M, B, classes) logits."""
    top = logits.topk(min(5, num_classes), dim=-1).indices
    hits = top.eq(targets[None, :, None])
    one_hot = F.one_hot(targets, num_classes).double()
    return hits[..., 0].double() @ one_hot, hits.any(dim=-1).double() @ one_hot


@dataclass
class ResNetPieces:
    """A torchvision ResNet cut where the block outputs are: stem, blocks by stage, head."""

    stem: nn.Module
    stages: dict[str, list[nn.Module]]
    head: nn.Module

    @staticmethod
    def fits(model: nn.Module) -> bool:
        """A torchvision ResNet (vestige's ResNets, CIFAR ResNets and T-CNNs are): its forward
        is stem, stages of blocks, head, the order `of` assumes."""
        return isinstance(model, ResNet)

    @classmethod
    def of(cls, model: nn.Module) -> ResNetPieces:
        """The same modules (shared weights) that `ResNet.forward` calls, in its order."""
        if not cls.fits(model):
            raise ConfigError(
                f"ablation needs a torchvision ResNet; {type(model).__name__} is not one"
            )
        stages: dict[str, list[nn.Module]] = {}
        for layer in measured_layers(model, "block_output"):
            stages.setdefault(layer.stage, []).append(model.get_submodule(layer.module))
        return cls(
            stem=nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
            stages=stages,
            head=nn.Sequential(model.avgpool, nn.Flatten(1), model.fc),
        )

    def downstream(
        self, stage: str, start: int, output: Tensor, masks: Tensor, values: Tensor
    ) -> Tensor:
        """Logits (M, B, classes) of M ablations of `stage` whose first silenced block is
        `start`, from that block's unablated output (B, C, H, W); masks (M, blocks, C)."""
        blocks = self.stages[stage]
        x = silence(
            output.repeat(masks.shape[0], *[1] * (output.dim() - 1)), masks[:, start], values[start]
        )
        for b in range(start + 1, len(blocks)):
            x = silence(blocks[b](x), masks[:, b], values[b])
        names = list(self.stages)
        for later in names[names.index(stage) + 1 :]:
            for block in self.stages[later]:
                x = block(x)
        return self.head(x).unflatten(0, (masks.shape[0], -1))


def ablatable(model: nn.Module) -> bool:
    """Whether `model`'s units are channels that `silence` sets (dim 1 of a layer's output): a
    torchvision ResNet's block outputs or a VGG's ReLU outputs. A transformer's units are features
    of every token (the last dim), which `silence` does not reach."""
    return isinstance(model, ResNet | VGG)


@torch.no_grad()
def sweep(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    ablations: Sequence[StageAblations],
    num_classes: int,
    device: torch.device,
    masks_per_forward: int = 1,
) -> list[AblationCounts]:
    """Counts of every ablation of every stage over `loader`, the fast way (see the module doc)
    where `ResNetPieces` can cut the network, else by `naive_sweep`.

    The fast way needs the network as stem, stages of blocks and head, which a torchvision
    ResNet's forward is (a T-CNN's converted blocks are still its blocks). A VGG's units are
    ReLUs inside its `features` and `classifier`, with pooling and flattening between them in its
    own forward: no such cut, so one full forward per ablation. Both give the same counts
    (tests/test_ablation.py), so the results do not depend on which ran.

    An ablation that silences nothing gets the unablated network's counts at no extra cost.
    `masks_per_forward` ablations run as one batch (memory: as many copies of a block output;
    the fast way only).
    """
    if not ResNetPieces.fits(model):
        return [naive_sweep(model, loader, ablation, num_classes, device) for ablation in ablations]
    model.eval()
    pieces = ResNetPieces.of(model)
    plans = {a.stage: (a, _groups_by_first_block(a.masks)) for a in ablations}
    counts = {a.stage: AblationCounts.zeros(len(a.masks), num_classes, device) for a in ablations}
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        x = pieces.stem(inputs)
        for stage, blocks in pieces.stages.items():
            outputs = []
            for block in blocks:
                x = block(x)
                outputs.append(x)
            if stage not in plans:
                continue
            ablation, groups = plans[stage]
            for start, rows in groups.items():
                for chunk in rows.split(masks_per_forward):
                    masks = ablation.masks[chunk]
                    logits = pieces.downstream(stage, start, outputs[start], masks, ablation.values)
                    counts[stage].add_hits(chunk, logits, targets)
        logits = pieces.head(x)[None]
        for ablation, _ in plans.values():
            untouched = (~ablation.masks.flatten(1).any(dim=1)).nonzero().flatten()
            if len(untouched):
                counts[ablation.stage].add_hits(
                    untouched, logits.expand(len(untouched), -1, -1), targets
                )
            counts[ablation.stage].add_images(targets)
    return [counts[a.stage] for a in ablations]


def _groups_by_first_block(masks: Tensor) -> dict[int, Tensor]:
    """Ablation indices grouped by the first block they silence (those silencing none left out)."""
    touched = masks.flatten(2).any(dim=2)  # (ablations, blocks)
    first = torch.where(touched.any(dim=1), touched.int().argmax(dim=1), -1)
    return {int(b): (first == b).nonzero().flatten() for b in first.unique() if b >= 0}


@contextmanager
def ablate_units(model: nn.Module, silenced: Mapping[str, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Inside, the output of each named layer (a `UnitLayer.module` path) has the channels that
    its (C,) bool mask marks set to its (C,) values. Hooks are removed on exit, also on errors."""

    def hook(mask: Tensor, values: Tensor):
        return lambda module, args, output: silence(output, mask[None], values)

    handles = [
        model.get_submodule(name).register_forward_hook(hook(mask, values))
        for name, (mask, values) in silenced.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def naive_sweep(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    ablation: StageAblations,
    num_classes: int,
    device: torch.device,
) -> AblationCounts:
    """The counts `sweep` gives for one stage, by one full forward pass per ablation."""
    model.eval()
    counts = AblationCounts.zeros(len(ablation.masks), num_classes, device)
    for m, masks in enumerate(ablation.masks):
        silenced = {
            layer.module: (masks[b], ablation.values[b]) for b, layer in enumerate(ablation.layers)
        }
        with ablate_units(model, silenced):
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                counts.add_hits(torch.tensor([m], device=device), model(inputs)[None], targets)
                if m == 0:
                    counts.add_images(targets)
    return counts
