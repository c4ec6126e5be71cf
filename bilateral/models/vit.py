"""A small vision transformer from timm: global self-attention from the first layer, a hemisphere
whose every unit can see the whole image, at about ResNet-9's parameter count.

timm's VisionTransformer (patch 4, 8 blocks of width 256 * width, 4 heads, mean-pooled tokens,
no class token: 6.4M parameters at width 1 against ResNet-9's 6.6M) computes the features. The
forward here is timm's forward_features + forward_head(pre_logits=True), written out so that
each block's tokens pass through a TokenMap that lays them out as a (B, C, H, W) map: Grad-CAM
reads those like a CNN's layers. Position embeddings are resampled for images other than 32x32.
"""

from __future__ import annotations

from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from bilateral.models._layers import scale

PATCH = 4
DEPTH = 8
HEADS = 4


class TokenMap(nn.Module):
    """(B, H*W, C) tokens -> (B, C, H, W): a parameter-free layer Grad-CAM can hook."""

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        return tokens.transpose(1, 2).reshape(len(tokens), -1, *grid)


class ViTSmall(nn.Module):
    """(B, 3, S, S) -> (B, 256 * width) features; S a multiple of 4."""

    def __init__(self, width: float = 1.0, bn_momentum: float = 0.1) -> None:
        super().__init__()  # bn_momentum: accepted like every backbone's; a transformer has no BatchNorm
        dim = HEADS * scale(64, width)
        self.vit = VisionTransformer(
            img_size=32,
            patch_size=PATCH,
            embed_dim=dim,
            depth=DEPTH,
            num_heads=HEADS,
            num_classes=0,
            global_pool="avg",
            class_token=False,
            dynamic_img_size=True,
        )
        self.maps = nn.ModuleList(TokenMap() for _ in range(DEPTH))
        self.out_dim = dim
        self.gradcam_layers: list[nn.Module] = list(self.maps[1::2])

    def forward(self, x: Tensor) -> Tensor:
        vit = self.vit
        patches = vit.patch_embed(x)  # (B, H, W, C)
        grid = tuple(patches.shape[1:3])
        pos = vit.pos_embed
        if grid != vit.patch_embed.grid_size:
            pos = resample_abs_pos_embed(pos, new_size=grid, num_prefix_tokens=0)
        tokens = vit.norm_pre(vit.pos_drop(patches.flatten(1, 2) + pos))
        for block, to_map in zip(vit.blocks, self.maps, strict=True):
            tokens = to_map(block(tokens), grid).flatten(2).transpose(1, 2)
        return vit.fc_norm(vit.norm(tokens).mean(dim=1))
