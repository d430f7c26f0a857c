"""The two attention layers of ConViT/DeiT: gated positional self-attention and plain attention.

Both map (B, N, D) tokens to (B, N, D). Inside `recording_attention` they also hand their
attention matrices to an `AttentionMaps` record, for the gating and nonlocality analyses
(docs/science.md §14); outside it plain attention uses the fused kernel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def trunc_normal_(tensor: Tensor, std: float = 0.02) -> Tensor:
    """Fill with a normal of the given std cut at +-2 *absolute*: the ViT/DeiT/ConViT generic
    init (§2; timm's `trunc_normal_(std=.02)` keeps its default bounds a=-2, b=2, so at std 0.02
    nothing is cut in practice)."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2.0, b=2.0)


def trunc_normal_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A Linear with the generic init (weights trunc normal std 0.02, bias 0) applied at birth.

    Every Linear is made here, so "generic init first, then local init" (docs/science.md §10)
    holds by construction: GPSA overwrites its own weights right after creating them.
    """
    layer = nn.Linear(in_features, out_features, bias=bias)
    trunc_normal_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def grid_positions(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """(x, y) of each cell of a height x width grid, numbered row by row (cell = y * width + x),
    the order of a flattened conv output; x is the column, y the row. (height * width, 2)."""
    y, x = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([x.flatten(), y.flatten()], dim=-1).float()


def relative_encodings(queries: Tensor, keys: Tensor) -> Tensor:
    """r_ij = (||d||^2, d_x, d_y) with d = keys[j] - queries[i], (queries, keys, 3), of (x, y)
    positions (docs/science.md §9). sqrt of channel 0 is the distance that nonlocality weighs
    attention by (§6)."""
    d = keys[None, :, :] - queries[:, None, :]
    return torch.cat([d.pow(2).sum(dim=-1, keepdim=True), d], dim=-1)


def relative_offsets(side: int, device: torch.device | str | None = None) -> Tensor:
    """The encodings between the tokens of a side x side grid of patches, (L, L, 3): ConViT's
    queries and keys are the same patches, in patch units."""
    position = grid_positions(side, side, device)
    return relative_encodings(position, position)


def kernel_offsets(num_heads: int, device: torch.device | str | None = None) -> Tensor:
    """The key offset delta = (d_x, d_y) of each of the first k * k heads, (k * k, 2).

    k = isqrt(heads), centre c = (k - 1) / 2: head h = h1 * k + h2 sits at (h1 - c, h2 - c), the
    taps of a k x k convolution (docs/science.md §10).
    """
    k = math.isqrt(num_heads)
    head = torch.arange(k * k, device=device)
    return torch.stack([head // k, head % k], dim=1) - (k - 1) / 2


@torch.no_grad()
def local_positional_init(pos_proj: nn.Linear, locality_strength: float) -> None:
    """Centre the positional attention of each of the first k * k heads on its `kernel_offsets`.

    Weights alpha * (-1, 2 d_x, 2 d_y) on (||d||^2, d_x, d_y), bias 0: head h's score is
    -alpha ||d - delta_h||^2 + const, a Gaussian of width ~1/sqrt(alpha) around delta_h (§10).
    Heads beyond k * k keep their random positional weights.
    """
    delta = kernel_offsets(pos_proj.out_features, pos_proj.weight.device)
    weight = torch.cat([-torch.ones_like(delta[:, :1]), 2 * delta], dim=1)
    pos_proj.weight[: len(delta)] = locality_strength * weight
    nn.init.zeros_(pos_proj.bias)


def _grid_side(num_tokens: int) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"GPSA needs a square grid of patches, got {num_tokens} tokens")
    return side


@dataclass
class AttentionMaps:
    """One layer's attention from the last forward inside `recording_attention` (§6).

    `attention` is (B, heads, N, N), rows summing to 1; in blocks that carry the class token it is
    token 0. `positional` is GPSA's positional attention (1, heads, L, L), shared by the batch.
    A layer whose queries and keys are not one square grid of tokens (a T-CNN's: strided queries,
    zero-padded keys; models/tcnn.py) records its maps as (B, heads, queries, keys) and its
    encodings r_ij as `relative` (queries, keys, 3); None means the square grid of `attention`.
    """

    attention: Tensor | None = None
    positional: Tensor | None = None
    relative: Tensor | None = None


@runtime_checkable
class RecordsAttention(Protocol):
    """A layer that hands its maps to `sink` while one is set (GPSA, plain attention, a T-CNN's
    ConvolutionalGPSA): what `recording_attention` looks for."""

    sink: AttentionMaps | None


class GPSA(nn.Module):
    """Gated positional self-attention (docs/science.md §9), locally initialised (§2).

    Each head mixes content attention and a learned function of the relative offsets, after both
    softmaxes, with gate sigmoid(lambda_h) (lambda_h starts at 1): gating after the softmaxes keeps
    the large conv-init positional scores from drowning the content ones.
    """

    def __init__(
        self, dim: int, num_heads: int, grid_side: int, locality_strength: float = 1.0
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qk = trunc_normal_linear(dim, 2 * dim, bias=False)
        self.v = trunc_normal_linear(dim, dim, bias=False)
        self.proj = trunc_normal_linear(dim, dim)
        self.pos_proj = trunc_normal_linear(3, num_heads)
        self.gate = nn.Parameter(torch.ones(num_heads))
        self.register_buffer("rel_indices", relative_offsets(grid_side), persistent=False)
        self.sink: AttentionMaps | None = None
        self.local_init(locality_strength)

    @torch.no_grad()
    def local_init(self, locality_strength: float) -> None:
        """Start each head as one tap of a k x k convolution (docs/science.md §10).

        Head h = h1 * k + h2 (k = isqrt(heads), centre c = (k - 1) / 2) attends around the key
        offset delta = (h1 - c, h2 - c) in (x, y), a Gaussian of width ~1/sqrt(alpha)
        (`local_positional_init`). The values pass through unchanged (identity).
        """
        nn.init.eye_(self.v.weight)
        local_positional_init(self.pos_proj, locality_strength)

    def gates(self) -> Tensor:
        """sigmoid(lambda_h) per head, (heads,): 1 = positional, 0 = content."""
        return self.gate.sigmoid()

    def positional_attention(self, num_tokens: int) -> Tensor:
        """softmax_j(v_pos^h . r_ij) as (1, heads, L, L), once per forward for the whole batch.

        The offsets are rebuilt here when the number of tokens changes (another image size).
        """
        if self.rel_indices.shape[0] != num_tokens:
            self.rel_indices = relative_offsets(_grid_side(num_tokens), self.rel_indices.device)
        scores = self.pos_proj(self.rel_indices).permute(2, 0, 1)
        return scores.unsqueeze(0).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k = self.qk(x).reshape(batch, tokens, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        content = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        positional = self.positional_attention(tokens)
        gate = self.gates().view(1, -1, 1, 1)
        attention = (1 - gate) * content + gate * positional
        attention = attention / attention.sum(dim=-1, keepdim=True)
        if self.sink is not None:
            self.sink.attention = attention.detach()
            self.sink.positional = positional.detach()
        v = self.v(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


class MultiHeadAttention(nn.Module):
    """Plain multi-head self-attention: ConViT's last blocks and every DeiT block (§3)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = trunc_normal_linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = trunc_normal_linear(dim, dim)
        self.sink: AttentionMaps | None = None

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if self.sink is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attention = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
            self.sink.attention = attention.detach()
            out = attention @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


@contextmanager
def recording_attention(model: nn.Module) -> Iterator[dict[str, AttentionMaps]]:
    """Record every attention layer's (`RecordsAttention`) maps on each forward inside the block
    (§6 analyses).

    Yields one `AttentionMaps` per layer, keyed by module name (`blocks.3.attn`), in forward order;
    each holds the last forward's detached maps and stays readable after the block. The layers
    stop recording on exit, even on error.
    """
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, RecordsAttention)
    }
    maps = {name: AttentionMaps() for name in layers}
    for name, layer in layers.items():
        layer.sink = maps[name]
    try:
        yield maps
    finally:
        for layer in layers.values():
            layer.sink = None
