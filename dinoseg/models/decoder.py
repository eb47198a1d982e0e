"""SAM-style light mask decoder (own implementation, modelled on segment-anything's).

A two-way transformer lets prompt/output tokens and image-embedding pixels attend to each
other; the attended embedding is upscaled 4x with two transposed convolutions, and a
hypernetwork MLP turns the mask output token into per-pixel weights -> mask logits.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.models.adapter import LayerNorm2d

__all__ = [
    "Attention",
    "MaskDecoder",
    "PositionEmbeddingRandom",
    "TwoWayAttentionBlock",
    "TwoWayTransformer",
]


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier-feature positional encoding of a (h, w) grid (SAM).

    ``forward(h, w)`` -> (embed_dim, h, w); coordinates are normalised to [-1, 1] so any grid
    size works. The Gaussian projection is a fixed (saved) buffer.
    """

    gaussian: Tensor

    def __init__(self, embed_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {embed_dim}")
        self.register_buffer("gaussian", scale * torch.randn(2, embed_dim // 2))

    def forward(self, h: int, w: int) -> Tensor:
        """Returns (embed_dim, h, w)."""
        device, dtype = self.gaussian.device, self.gaussian.dtype
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y], dim=-1) * 2.0 - 1.0  # (h, w, 2)
        proj = 2.0 * math.pi * (coords @ self.gaussian)  # (h, w, E/2)
        return torch.cat([proj.sin(), proj.cos()], dim=-1).permute(2, 0, 1)


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width.

    ``forward(q (B, Nq, E), k (B, Nk, E), v (B, Nk, E))`` -> (B, Nq, E).
    """

    def __init__(self, embed_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embed_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide {self.internal_dim}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, self.internal_dim)
        self.k_proj = nn.Linear(embed_dim, self.internal_dim)
        self.v_proj = nn.Linear(embed_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embed_dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (B, Nq, E), k (B, Nk, E), v (B, Nk, E) -> (B, Nq, E)."""
        b, nq, _ = q.shape
        out = F.scaled_dot_product_attention(
            self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        )  # (B, heads, Nq, d)
        result: Tensor = self.out_proj(out.transpose(1, 2).reshape(b, nq, self.internal_dim))
        return result


class MLP(nn.Module):
    """Plain MLP ``(..., in_dim) -> (..., out_dim)`` with ReLU between ``num_layers`` layers."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token
    cross-attention (each followed by a residual add and LayerNorm)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, downsample: int, skip_first_pe: bool
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.cross_token_to_image = Attention(dim, num_heads, downsample)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=2)
        self.cross_image_to_token = Attention(dim, num_heads, downsample)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.skip_first_pe = skip_first_pe

    def forward(
        self, tokens: Tensor, image: Tensor, token_pe: Tensor, image_pe: Tensor
    ) -> tuple[Tensor, Tensor]:
        """tokens (B, N, E), image (B, h*w, E), token_pe (B, N, E), image_pe (B, h*w, E) ->
        (tokens, image), same shapes."""
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norms[0](tokens)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.norms[1](tokens + self.cross_token_to_image(q, k, image))
        tokens = self.norms[2](tokens + self.mlp(tokens))
        q, k = tokens + token_pe, image + image_pe
        image = self.norms[3](image + self.cross_image_to_token(k, q, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->image attention.

    ``forward(image (B, E, h, w), image_pe (B, E, h, w), tokens (B, N, E))`` ->
    ``(tokens (B, N, E), image (B, h*w, E))``.
    """

    def __init__(
        self, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample: int = 2
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample, skip_first_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn = Attention(dim, num_heads, downsample)
        self.norm_final = nn.LayerNorm(dim)

    def forward(self, image: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """See class docstring."""
        img = image.flatten(2).transpose(1, 2)  # (B, h*w, E)
        img_pe = image_pe.flatten(2).transpose(1, 2)
        queries, token_pe = tokens, tokens
        for layer in self.layers:
            queries, img = layer(queries, img, token_pe, img_pe)
        attn = self.final_attn(queries + token_pe, img + img_pe, img)
        return self.norm_final(queries + attn), img


class MaskDecoder(nn.Module):
    """Image embedding + sparse prompt tokens -> mask logits at 4x the embedding resolution.

    ``forward(image_embed (B, E, h, w), sparse (B, N, E))`` -> (B, 1, 4h, 4w).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample: int = 2,
        pe_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"embed_dim must be divisible by 8, got {embed_dim}")
        self.embed_dim = embed_dim
        self.pe = PositionEmbeddingRandom(embed_dim, pe_scale)
        self.mask_token = nn.Parameter(torch.randn(1, embed_dim) * 0.02)
        self.transformer = TwoWayTransformer(
            depth, embed_dim, num_heads, mlp_dim, attention_downsample
        )
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim // 4, embed_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.hypernet = MLP(embed_dim, embed_dim, embed_dim // 8, num_layers=3)

    def forward(self, image_embed: Tensor, sparse: Tensor) -> Tensor:
        """image_embed (B, E, h, w), sparse (B, N, E) (N may be 0) -> logits (B, 1, 4h, 4w)."""
        b, c, h, w = image_embed.shape
        if c != self.embed_dim or sparse.shape[0] != b or sparse.shape[-1] != c:
            raise ValueError(
                f"bad shapes: image_embed {tuple(image_embed.shape)}, sparse {tuple(sparse.shape)}"
            )
        tokens = torch.cat([self.mask_token.expand(b, -1, -1), sparse], dim=1)  # (B, 1+N, E)
        image_pe = self.pe(h, w).to(image_embed.dtype).unsqueeze(0).expand(b, -1, -1, -1)
        tokens_out, img = self.transformer(image_embed, image_pe, tokens)
        img = img.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self.upscale(img)  # (B, E/8, 4h, 4w)
        weights = self.hypernet(tokens_out[:, 0])  # (B, E/8)
        logits = torch.einsum("bc,bchw->bhw", weights, upscaled)
        return logits.unsqueeze(1)
