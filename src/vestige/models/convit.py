"""ConViT and DeiT: a pre-norm ViT whose first blocks use GPSA (docs/science.md §11).

DeiT is the same network with every block plain self-attention (`local_up_to_layer=0`), so the
class token is there from the start. The MLP hidden units after GELU are `blocks.{i}.mlp.act`, the
units the selectivity code hooks (§7); `blocks[i].class_token` says whether token 0 of that block
is the class token rather than a patch. Attention maps: `vestige.models.gpsa.recording_attention`.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from vestige.config import ConViTConfig
from vestige.errors import ConfigError
from vestige.models.gpsa import GPSA, MultiHeadAttention, trunc_normal_, trunc_normal_linear

VARIANTS = (
    "convit_ti",
    "convit_s",
    "convit_b",
    "convit_ti_plus",
    "convit_s_plus",
    "convit_b_plus",
    "convit_ti_small",
    "deit_ti",
    "deit_s",
    "deit_b",
    "deit_ti_small",
)


def mlp(dim: int, hidden: int) -> nn.Sequential:
    """fc1 -> GELU -> fc2, children named so that `*.mlp.act` finds the hidden units (§7)."""
    return nn.Sequential(
        OrderedDict(
            fc1=trunc_normal_linear(dim, hidden),
            act=nn.GELU(),
            fc2=trunc_normal_linear(hidden, dim),
        )
    )


class Block(nn.Module):
    """Pre-norm block: x + DropPath(attn(LN x)), then x + DropPath(mlp(LN x)) (§3)."""

    def __init__(
        self, attn: nn.Module, dim: int, mlp_ratio: float, drop_path: float, class_token: bool
    ) -> None:
        super().__init__()
        self.class_token = class_token
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = mlp(dim, int(dim * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConViT(nn.Module):
    """Patch embedding, `local_up_to_layer` GPSA blocks, then plain blocks with a class token.

    The class token joins just before the first plain block, so GPSA never sees it; the head reads
    it after the final LN. Stochastic depth rises linearly from 0 to `drop_path` over the blocks.
    Images of another size (same patch size) work: the position embedding is resized bicubically
    and GPSA rebuilds its offsets, which suits analyses; training uses the built size.
    """

    def __init__(
        self, cfg: ConViTConfig, num_classes: int, in_channels: int, image_size: int
    ) -> None:
        super().__init__()
        side = image_size // cfg.patch_size
        self.local_up_to_layer = cfg.local_up_to_layer
        self.patch_embed = nn.Conv2d(
            in_channels, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size
        )
        self.pos_embed = nn.Parameter(trunc_normal_(torch.empty(1, side * side, cfg.embed_dim)))
        self.cls_token = nn.Parameter(trunc_normal_(torch.empty(1, 1, cfg.embed_dim)))
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(_block(cfg, i, side, rate) for i, rate in enumerate(rates))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head = trunc_normal_linear(cfg.embed_dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))

    def features(self, images: Tensor) -> Tensor:
        """The final-LN class token, (B, D): what the head classifies."""
        patches = self.patch_embed(images)
        x = patches.flatten(2).transpose(1, 2) + self._position_embedding(patches.shape[-2:])
        for i, block in enumerate(self.blocks):
            if i == self.local_up_to_layer:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = block(x)
        return self.norm(x[:, 0])

    def _position_embedding(self, grid: torch.Size) -> Tensor:
        side = math.isqrt(self.pos_embed.shape[1])
        if tuple(grid) == (side, side):
            return self.pos_embed
        square = self.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
        return resized.flatten(2).transpose(1, 2)

    def gates(self) -> Tensor:
        """sigmoid(lambda) per GPSA layer and head, (local_up_to_layer, heads); 1 = positional.

        Tracked against epochs in the gating analysis (docs/science.md §14); DeiT has none.
        """
        gates = [block.attn.gates() for block in self.blocks if isinstance(block.attn, GPSA)]
        if not gates:
            return torch.empty(0, self.blocks[0].attn.num_heads)
        return torch.stack(gates).detach()

    def no_weight_decay(self) -> set[str]:
        """Parameters the optimiser must not decay besides biases and 1-D ones (§4)."""
        return {"pos_embed", "cls_token"}


def _block(cfg: ConViTConfig, index: int, side: int, drop_path: float) -> Block:
    """Block `index`: GPSA before `local_up_to_layer`, plain attention on the class token after."""
    if index < cfg.local_up_to_layer:
        attn: nn.Module = GPSA(cfg.embed_dim, cfg.num_heads, side, cfg.locality_strength)
    else:
        attn = MultiHeadAttention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
    class_token = index >= cfg.local_up_to_layer
    return Block(attn, cfg.embed_dim, cfg.mlp_ratio, drop_path, class_token)


def build_convit(cfg: ConViTConfig, num_classes: int, in_channels: int, image_size: int) -> ConViT:
    """Check the sizes that only meet the data at build time, then build (registry contract)."""
    if cfg.patch_size <= 0 or image_size % cfg.patch_size:
        raise ConfigError(
            f"model.patch_size={cfg.patch_size!r} is invalid: it must divide the image size "
            f"{image_size}; use e.g. model.patch_size=4 for 28-32 px or 16 for 224 px"
        )
    if cfg.num_heads <= 0 or cfg.embed_dim % cfg.num_heads:
        raise ConfigError(
            f"model.embed_dim={cfg.embed_dim!r} is invalid: it must be a multiple of "
            f"model.num_heads={cfg.num_heads}; use heads x 48 (or 64 for the + models)"
        )
    if not 0 <= cfg.local_up_to_layer < cfg.depth:
        raise ConfigError(
            f"model.local_up_to_layer={cfg.local_up_to_layer!r} is invalid: use 0 (DeiT) up to "
            f"model.depth - 1 = {cfg.depth - 1} so that a plain block reads the class token"
        )
    return ConViT(cfg, num_classes, in_channels, image_size)
