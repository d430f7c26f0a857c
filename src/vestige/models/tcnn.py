"""Transformed CNNs (docs/science.md §16): a ResNet's 3x3 convolutions recast as gated positional
self-attention that computes the same function at conversion, then free to learn content
attention and to leave its kernel offsets.

`transform` converts the BasicBlocks/Bottlenecks of the chosen stages in place. The blocks keep
their BatchNorms, ReLUs and shortcuts and still map feature maps to feature maps, so selectivity
units (block outputs) and ablation see a converted block as the block it came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from vestige.errors import invalid
from vestige.models.gpsa import (
    AttentionMaps,
    grid_positions,
    kernel_offsets,
    local_positional_init,
    relative_encodings,
    trunc_normal_linear,
)

HEADS = 9  # one per tap of a 3x3 kernel
# the 3x3 convolutions of each block type: BasicBlock's two, Bottleneck's middle one
CONVERTED_CONVS: dict[type[nn.Module], tuple[str, ...]] = {
    BasicBlock: ("conv1", "conv2"),
    Bottleneck: ("conv2",),
}


class ConvolutionalGPSA(nn.Module):
    """A 3x3 convolution (padding 1, stride 1 or 2, no bias) as gated positional self-attention.

    Keys are the (H + 2)(W + 2) positions of the input zero-padded by one pixel, queries the
    output positions (input pixels (s o_x, s o_y) for stride s), both as (x, y) in pixels. With
    r_ij = (||d||^2, d_x, d_y), d = key j - query i, head h (offset delta_h, `kernel_offsets`):

        P^h_ij = softmax_j(v_pos^h . r_ij + b^h)       positional, ConViT's local init with
                                                       alpha = locality_strength (§10)
        S^h_ij = softmax_j(q_i^h . k_j^h / sqrt(D_h))  content; a padding key has k_j = 0
                                                       (no bias): score 0
        A^h = (1 - g_h) S^h + g_h P^h, rows renormalised (GPSA, §9)
        out_i = sum_h sum_j A^h_ij V_h x~_j             x~ the zero-padded input

    with V_h = W[:, :, dy + 1, dx + 1], the kernel slice at the head's offset (C_out x C_in).
    As alpha and lambda grow, P^h_ij -> [j = i + delta_h] and A^h -> P^h, so out_i ->
    sum_h V_h x~_{i + delta_h}: the convolution, zero padding included. The border is handled by
    the padding keys: where the convolution reads a zero, the head attends a key whose value is
    zero, so no row is masked, every row still sums to 1 (renormalising changes nothing) and
    content attention can still learn at the border. The deviation at conversion is about
    e^-lambda (the content share) plus 4 e^-alpha (the Gaussian's leak to the next keys).

    The gate g_h = sigmoid(lambda_h) of GPSA is held in the coordinate c_h = e^(-lambda_h / 2),
    g_h = 1 / (1 + c_h^2): the same gates, but a gradient step on c_h opens a nearly closed
    gate about 1 / (1 - g_h) times faster than one on lambda_h (d(1 - g)/dc = 2c against
    d(1 - g)/dlambda = g(1 - g)). A conversion exact to 1e-5 needs 1 - g ~ 1e-6, where the
    gradient on lambda is ~1e-6 of the loss's and the content side never starts to learn; on c
    it is ~1e-3 and grows as the gate opens. The positional Gaussians keep ConViT's form; at
    alpha = 20 their own gradient is ~e^-alpha, so they stay on their offsets.

    No output projection: the heads' outputs are summed, as a convolution sums its taps. A
    learned projection W_o after the heads would add nothing the values cannot hold
    (W_o,h V_h is again a C_out x C_in value), only parameters.
    """

    def __init__(self, conv: nn.Conv2d, locality_strength: float, gate: float) -> None:
        super().__init__()
        _check_convertible(conv)
        self.stride = conv.stride[0]
        self.out_channels = conv.out_channels
        head_dim = max(1, conv.in_channels // HEADS)  # D_h: the input width split over the heads
        self.scale = head_dim**-0.5
        self.q = trunc_normal_linear(conv.in_channels, HEADS * head_dim, bias=False)
        self.k = trunc_normal_linear(conv.in_channels, HEADS * head_dim, bias=False)
        self.v = nn.Linear(conv.in_channels, HEADS * conv.out_channels, bias=False)
        self.pos_proj = trunc_normal_linear(3, HEADS)
        # c_h = e^(-lambda_h / 2): see the class docstring
        self.content_weight = nn.Parameter(torch.full((HEADS,), math.exp(-gate / 2)))
        self.sink: AttentionMaps | None = None
        self._relative: Tensor | None = None
        self._grid: tuple[int, int] = (0, 0)
        self.to(device=conv.weight.device, dtype=conv.weight.dtype)
        self.convert(conv.weight, locality_strength)

    @torch.no_grad()
    def convert(self, weight: Tensor, locality_strength: float) -> None:
        """Values = the kernel's slices, positional attention on the heads' offsets (§16)."""
        local_positional_init(self.pos_proj, locality_strength)
        taps = (kernel_offsets(HEADS) + 1).long()  # (column, row) of each head's kernel tap
        slices = weight[:, :, taps[:, 1], taps[:, 0]].permute(2, 0, 1)  # (heads, C_out, C_in)
        self.v.weight.copy_(slices.reshape(-1, weight.shape[1]))

    def gates(self) -> Tensor:
        """g_h = sigmoid(lambda_h) per head, (heads,): 1 = positional, 0 = content."""
        return 1 / (1 + self.content_weight.square())

    def relative(self, height: int, width: int) -> Tensor:
        """r_ij between the output positions and the padded input's, (queries, keys, 3), on the
        positional weights' device and dtype; rebuilt when the map's size or those change."""
        weight, cached = self.pos_proj.weight, self._relative
        if (
            cached is None
            or self._grid != (height, width)
            or (cached.device, cached.dtype) != (weight.device, weight.dtype)
        ):
            rows, columns = math.ceil(height / self.stride), math.ceil(width / self.stride)
            queries = grid_positions(rows, columns, weight.device) * self.stride + 1
            keys = grid_positions(height + 2, width + 2, weight.device)
            self._relative = relative_encodings(queries, keys).to(weight.dtype)
            self._grid = (height, width)
        return self._relative

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        strided = x[:, :, :: self.stride, :: self.stride]
        out_height, out_width = strided.shape[-2:]
        queries = strided.flatten(2).transpose(1, 2)  # (B, queries, C_in)
        pixels = x.flatten(2).transpose(1, 2)  # (B, H W, C_in): the keys that are not padding
        q = self.q(queries).unflatten(-1, (HEADS, -1)).transpose(1, 2)
        k = self.k(pixels).unflatten(-1, (HEADS, -1)).transpose(1, 2)
        scores = _padded_keys(q @ k.transpose(-2, -1) * self.scale, height, width)
        relative = self.relative(height, width)
        positional = self.pos_proj(relative).permute(2, 0, 1).unsqueeze(0).softmax(dim=-1)
        gate = self.gates().view(1, -1, 1, 1)
        attention = (1 - gate) * scores.softmax(dim=-1) + gate * positional
        attention = attention / attention.sum(dim=-1, keepdim=True)
        if self.sink is not None:
            self.sink.attention = attention.detach()
            self.sink.positional = positional.detach()
            self.sink.relative = relative
        # padding values are zero: only the pixels' columns of the attention count
        on_pixels = attention.unflatten(-1, (height + 2, width + 2))[..., 1:-1, 1:-1]
        on_pixels = on_pixels.permute(0, 2, 3, 4, 1).reshape(batch, -1, height * width * HEADS)
        values = self.v(pixels).reshape(batch, height * width * HEADS, self.out_channels)
        out = (on_pixels @ values).transpose(1, 2)  # (B, C_out, queries)
        return out.reshape(batch, self.out_channels, out_height, out_width)


def _padded_keys(scores: Tensor, height: int, width: int) -> Tensor:
    """Content scores (..., H W) on the pixels -> (..., (H + 2)(W + 2)) on the zero-padded map:
    q and k have no bias, so a padding key is k = 0 and its score 0."""
    return F.pad(scores.unflatten(-1, (height, width)), (1, 1, 1, 1)).flatten(-2)


def _check_convertible(conv: nn.Conv2d) -> None:
    """The convolutions a 3x3-offset attention reproduces exactly; others are a programming error
    (the blocks of vestige's ResNets hold only these)."""
    same = conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.dilation == (1, 1)
    square_stride = conv.stride in ((1, 1), (2, 2))
    if not (same and square_stride and conv.groups == 1 and conv.bias is None):
        raise ValueError(f"cannot convert {conv}: needs a 3x3, padding 1, stride 1 or 2, no bias")


def transform(
    model: nn.Module, stages: Sequence[str], locality_strength: float, gate: float
) -> nn.Module:
    """Replace, in place, every 3x3 convolution of the residual blocks of `stages` (`layer4`, ...)
    with a `ConvolutionalGPSA` computing the same function; returns `model`.

    `locality_strength` is alpha of the positional Gaussians, `gate` the gates' starting lambda
    (sigmoid(lambda) = 1: positional). Both set how close the start is to the convolution
    (about e^-lambda + 4 e^-alpha relative); the gates open under gradient descent from there
    (`ConvolutionalGPSA`), the positional weights barely move (their gradient ~e^-alpha). The
    attention maps are (B, 9, queries, (H + 2)(W + 2)): quadratic in the map's
    size, cheap for the last stage, costly for early ones at full resolution.
    """
    available = [name for name, stage in model.named_children() if _blocks(stage)]
    for stage in dict.fromkeys(stages):
        if stage not in available:
            fix = f"{stage!r} is not a stage of residual blocks; use some of {', '.join(available)}"
            raise invalid("model.converted_stages", list(stages), fix)
        for block in _blocks(model.get_submodule(stage)):
            for name in CONVERTED_CONVS[type(block)]:
                layer = ConvolutionalGPSA(getattr(block, name), locality_strength, gate)
                setattr(block, name, layer)
    return model


def _blocks(stage: nn.Module) -> list[nn.Module]:
    return [block for block in stage.modules() if type(block) in CONVERTED_CONVS]
