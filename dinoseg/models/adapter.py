"""Embedding adapter: frozen DINOv2 patch features -> decoder image embedding.

The adapter maps backbone features ``(B, C_backbone, h, w)`` to a ``(B, embed_dim, h, w)``
image embedding (256 channels by default, the width of SAM's image embedding, so that the
adapter output can later be distilled towards a SAM teacher embedding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AdapterBlock", "EmbeddingAdapter", "LayerNorm2d"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``(B, C, h, w)`` map (as in SAM / ConvNeXt)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, C, h, w) -> (B, C, h, w), normalised per pixel over C."""
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class AdapterBlock(nn.Module):
    """ConvNeXt-style residual block: depthwise 3x3 conv, LayerNorm2d, pointwise MLP.

    ``(B, C, h, w) -> (B, C, h, w)``. The residual branch is scaled by a learned per-channel
    factor initialised small, so a fresh block is close to the identity.
    """

    def __init__(self, dim: int, expansion: int = 4, layer_scale: float = 0.1) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pw1 = nn.Conv2d(dim, dim * expansion, kernel_size=1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(dim * expansion, dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, C, h, w) -> (B, C, h, w)."""
        y: Tensor = self.pw2(self.act(self.pw1(self.norm(self.dwconv(x)))))
        return x + self.gamma[:, None, None] * y


class EmbeddingAdapter(nn.Module):
    """Backbone features ``(B, in_dim, h, w)`` -> image embedding ``(B, embed_dim, h, w)``.

    A 1x1 projection with LayerNorm2d, ``num_blocks`` residual :class:`AdapterBlock` s and a
    final LayerNorm2d (SAM's image-encoder neck also ends in a LayerNorm2d, which keeps the
    embedding statistics comparable for distillation).
    """

    def __init__(
        self, in_dim: int, embed_dim: int = 256, num_blocks: int = 2, expansion: int = 4
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.embed_dim = embed_dim
        self.proj = nn.Sequential(
            nn.Conv2d(in_dim, embed_dim, kernel_size=1), LayerNorm2d(embed_dim)
        )
        self.blocks = nn.Sequential(
            *[AdapterBlock(embed_dim, expansion) for _ in range(num_blocks)]
        )
        self.norm = LayerNorm2d(embed_dim)

    def forward(self, feats: Tensor) -> Tensor:
        """``feats``: (B, in_dim, h, w) -> (B, embed_dim, h, w)."""
        if feats.dim() != 4 or feats.shape[1] != self.in_dim:
            raise ValueError(
                f"expected features (B, {self.in_dim}, h, w), got {tuple(feats.shape)}"
            )
        out: Tensor = self.norm(self.blocks(self.proj(feats)))
        return out
