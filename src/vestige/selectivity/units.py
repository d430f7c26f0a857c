"""Where the units are: which module outputs are measured, and how a feature map becomes one
activation per unit and image.

Every analysis, the regularizer and the reports take their layers from `measured_layers`, so the
choice of units is made here only (docs/science.md §2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vgg import VGG

from vestige.errors import ConfigError

UNIT_CHOICES = ("block_output", "all_relu")
NEGATIVE_CHOICES = ("keep", "clamp", "abs")


@dataclass(frozen=True)
class UnitLayer:
    """One measured layer: a module's output at one of its calls within its parent's forward.

    `name` is the stable key of the layer (torchvision FX node names: a block output is `layer1.0`,
    the second call of a block's shared ReLU is `layer1.0.relu_1`); `module` is the path hooked and
    `call` which of its calls in one forward is meant (torchvision reuses one ReLU per block).
    `leading_tokens` are dropped before averaging token activations (a class token, ViT only).
    """

    name: str
    stage: str
    block: int
    channels: int
    module: str
    call: int = 0
    leading_tokens: int = 0


def measured_layers(model: nn.Module, units: str = "block_output") -> list[UnitLayer]:
    """The layers whose units are measured, in forward order.

    ResNet (torchvision BasicBlock/Bottleneck): `block_output` = every block's output after the
    ReLU that follows the residual add (§2); `all_relu` adds the stem ReLU (stage `stem`) and the
    intra-block ReLUs. VGG (torchvision's): every ReLU output, see `_vgg_layers`. Transformers
    with `*.mlp.act` modules: see `_transformer_layers`.
    """
    if units not in UNIT_CHOICES:
        raise ConfigError(f"units={units!r} is not known; use one of {', '.join(UNIT_CHOICES)}")
    model = unwrap(model)
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, BasicBlock | Bottleneck)]
    if blocks:
        return _resnet_layers(model, blocks, units)
    if isinstance(model, VGG):
        return _vgg_layers(model)
    if any(name.endswith(".mlp.act") for name, _ in model.named_modules()):
        if units != "block_output":
            raise ConfigError(f"units={units!r} is only defined for ResNets; use block_output")
        return _transformer_layers(model)
    raise ConfigError(
        f"no selectivity units are defined for {type(model).__name__}; "
        "add its layers to vestige.selectivity.units.measured_layers"
    )


def _resnet_layers(
    model: nn.Module, blocks: list[tuple[str, nn.Module]], units: str
) -> list[UnitLayer]:
    """Block outputs hooked on the block (its forward ends with the post-add ReLU); for `all_relu`
    the stem ReLU and every call of each block's shared ReLU, named as torchvision's FX nodes."""
    layers = []
    if units == "all_relu":
        layers.append(UnitLayer("relu", "stem", 0, model.bn1.num_features, module="relu"))
    for name, block in blocks:
        stage, index = name.rsplit(".", 1)
        norms = [block.bn1, block.bn2] + ([block.bn3] if isinstance(block, Bottleneck) else [])
        if units == "block_output":
            layers.append(UnitLayer(name, stage, int(index), norms[-1].num_features, module=name))
            continue
        for call, norm in enumerate(norms):
            node = f"{name}.relu" + (f"_{call}" if call else "")
            module = f"{name}.relu"
            layers.append(UnitLayer(node, stage, int(index), norm.num_features, module, call))
    return layers


def _vgg_layers(model: VGG) -> list[UnitLayer]:
    """Every ReLU output of `features` and `classifier`, grouped as Ranadive et al.'s code groups
    them: the convolutions between two max-pools form a stage (`conv1..conv5`, their modules 1-5),
    the classifier's ReLUs the last (`classifier`, module 6). A conv unit is a channel, a
    classifier unit a feature of the (B, features) output. Both unit choices give these layers:
    every one follows a ReLU, and there are no blocks (`block` is the ReLU's index in its stage).
    """
    layers: list[UnitLayer] = []
    pools, channels = 0, 0
    for part in ("features", "classifier"):
        for index, module in enumerate(model.get_submodule(part)):
            if isinstance(module, nn.Conv2d):
                channels = module.out_channels
            elif isinstance(module, nn.Linear):
                channels = module.out_features
            elif isinstance(module, nn.MaxPool2d):
                pools += 1
            elif isinstance(module, nn.ReLU):
                stage = f"conv{pools + 1}" if part == "features" else part
                block = sum(layer.stage == stage for layer in layers)
                name = f"{part}.{index}"
                layers.append(UnitLayer(name, stage, block, channels, module=name))
    return layers


def _transformer_layers(model: nn.Module) -> list[UnitLayer]:
    """MLP hidden units after the activation of each block (docs/science.md §15).

    Contract with the model (vestige.models.convit): blocks are `<stage>.<index>` with an `mlp`
    holding `fc1` and `act`, and a block whose `class_token` is true carries the class token as
    token 0, which is left out of the mean over tokens. All blocks form one stage. GELU outputs
    can be slightly negative; `unit_activations(negative=...)` says how they are treated (§7).
    """
    layers = []
    for name, _ in model.named_modules():
        if not name.endswith(".mlp.act"):
            continue
        path = name.removesuffix(".mlp.act")
        stage, index = path.rsplit(".", 1)
        block = model.get_submodule(path)
        layers.append(
            UnitLayer(
                name=name,
                stage=stage,
                block=int(index),
                channels=block.mlp.fc1.out_features,
                module=name,
                leading_tokens=int(getattr(block, "class_token", False)),
            )
        )
    return layers


def unit_table(layers: Sequence[UnitLayer]) -> dict[str, np.ndarray]:
    """One row per unit, named by (layer, stage, block, channel): the stable unit names."""
    return {
        "layer": np.array([layer.name for layer in layers for _ in range(layer.channels)]),
        "stage": np.array([layer.stage for layer in layers for _ in range(layer.channels)]),
        "block": np.concatenate([np.full(layer.channels, layer.block) for layer in layers]),
        "channel": np.concatenate([np.arange(layer.channels) for layer in layers]),
    }


def unit_activations(output: Tensor, layer: UnitLayer, negative: str) -> Tensor:
    """(B, units): a conv channel's spatial mean (§2), a token unit's mean over patch tokens, a
    linear layer's (B, features) output as it is (a VGG classifier's units).

    `negative` treats each element before the mean (docs/science.md §15): `keep` the values
    as they are, `clamp` them at 0 or take their `abs`. After a ReLU all three agree, so conv
    units (which follow one) skip it; they differ for GELU, whose outputs go down to about -0.17.
    """
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if negative == "clamp":
        output = output.clamp(min=0)
    elif negative == "abs":
        output = output.abs()
    elif negative != "keep":
        raise ConfigError(
            f"negative={negative!r} is not known; use one of {', '.join(NEGATIVE_CHOICES)}"
        )
    if output.dim() == 3:
        return output[:, layer.leading_tokens :].mean(dim=1)
    return output


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper, so module paths are the network's own."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def record_unit_activations(
    model: nn.Module, layers: Sequence[UnitLayer], negative: str, keep_grad: bool = False
) -> AbstractContextManager[dict[str, Tensor]]:
    """Hook `layers` while inside; yields a dict that each forward fills with (B, units) tensors.

    Only the reduced activations are kept, never feature maps. `negative` is passed to
    `unit_activations` (the `selectivity.negative` setting). `keep_grad=False` detaches them
    (measurement); `keep_grad=True` keeps them in the graph (regularizer): clear the dict after use
    so the graph is not held until the next forward. Hooks are removed on exit, also on errors.
    """

    def reduce(output: Tensor, layer: UnitLayer) -> Tensor:
        return unit_activations(output if keep_grad else output.detach(), layer, negative)

    return _recording(model, layers, reduce)


def record_unit_states(
    model: nn.Module, layers: Sequence[UnitLayer]
) -> AbstractContextManager[dict[str, Tensor]]:
    """Like `record_unit_activations`, but keeps every element's on/off state (output > 0, bool,
    the output's shape): the ReLU pattern."""
    return _recording(model, layers, lambda output, layer: output.detach() > 0)


def record_layer_outputs(
    model: nn.Module, layers: Sequence[UnitLayer]
) -> AbstractContextManager[dict[str, Tensor]]:
    """Like `record_unit_activations`, but keeps each layer's whole output, detached and
    flattened per image (B, elements): the representation itself, not its units' means."""
    return _recording(model, layers, lambda output, layer: output.detach().flatten(1))


@contextmanager
def _recording(
    model: nn.Module,
    layers: Sequence[UnitLayer],
    reduce: Callable[[Tensor, UnitLayer], Tensor],
) -> Iterator[dict[str, Tensor]]:
    """Forward hooks that put `reduce(output, layer)` of each layer's call into the yielded dict."""
    model = unwrap(model)
    acts: dict[str, Tensor] = {}
    calls: dict[str, int] = {}
    by_module: dict[str, dict[int, UnitLayer]] = {}
    for layer in layers:
        by_module.setdefault(layer.module, {})[layer.call] = layer

    def reset(path: str):
        def hook(module: nn.Module, args: tuple) -> None:
            calls[path] = 0

        return hook

    def record(path: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            call = calls.get(path, 0)
            calls[path] = call + 1
            layer = by_module[path].get(call)
            if layer is not None:
                acts[layer.name] = reduce(output, layer)

        return hook

    handles = []
    try:
        for path in by_module:
            parent = model.get_submodule(path.rpartition(".")[0])
            handles.append(parent.register_forward_pre_hook(reset(path)))
            handles.append(model.get_submodule(path).register_forward_hook(record(path)))
        yield acts
    finally:
        for handle in handles:
            handle.remove()
