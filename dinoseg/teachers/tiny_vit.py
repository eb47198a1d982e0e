"""TinyViT image encoder of LiteMedSAM and MobileSAM, written without timm.

Parameter names follow the TinyViT of MobileSAM (``patch_embed.seq.*``, ``layers.{i}.blocks.{j}``,
``layers.{i}.downsample``, ``attn.attention_biases``, ``neck.*``), so their checkpoints load
strictly. Inference first: stochastic depth, dropout and layer-wise lr decay are left out
(identities at eval time), and in eval mode each Conv2dBN folds its BatchNorm into the conv.
Spatial sizes are read from the input (the original hard-codes a 64x64 output); stages pass
``(B, C, H, W)`` maps, attention runs on ``(windows, tokens, C)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.models.adapter import LayerNorm2d


class Conv2dBN(nn.Module):
    """Conv2d without bias followed by BatchNorm2d (submodules ``c`` and ``bn``)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C', H', W')``; in eval mode the BN is folded into the conv."""
        conv, bn = self.c, self.bn
        if self.training or bn.running_var is None or bn.running_mean is None:
            return bn(conv(x))
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C',)
        bias = bn.bias - bn.running_mean * scale
        weight = conv.weight * scale[:, None, None, None]
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PatchEmbed(nn.Module):
    """Two Conv2dBN with a GELU between: ``(B, 3, H, W) -> (B, C, H / s^2, W / s^2)``.

    MobileSAM uses ``kernel_size=3, stride=2`` (input / 4); LiteMedSAM ``kernel_size=1, stride=1``.
    """

    def __init__(self, in_chans: int, embed_dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, kernel_size, stride, pad),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, kernel_size, stride, pad),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual (1x1 expand, 3x3 depthwise, 1x1 project): ``(B, C, H, W)`` kept."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, strided 3x3 depthwise conv, 1x1 conv: ``(B, C, H, W) -> (B, C', H/s, W/s)``."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv1(x))
        return self.conv3(self.act(self.conv2(x)))


class Mlp(nn.Module):
    """Pre-norm MLP: ``(..., C) -> (..., C)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def relative_offset_index(window: int) -> tuple[Tensor, int]:
    """Index of each token pair's |dy|, |dx| offset in a window, numbered in first-seen order.

    Returns ``(idx (N, N) int64, num_offsets)`` with ``N = window ** 2`` (LeViT's layout).
    """
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return torch.tensor(idxs, dtype=torch.long).view(len(points), len(points)), len(offsets)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with a learned bias per head and relative offset.

    ``x (B, N, C) -> (B, N, C)``, ``N = window ** 2``. The fused ``qkv`` projection is laid out
    per head as ``[q | k | v]``.
    """

    attention_bias_idxs: Tensor  # (N, N) int64, a non-persistent buffer

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        idx, num_offsets = relative_offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_offsets))
        self.register_buffer("attention_bias_idxs", idx, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=3)  # (B, heads, N, d) each
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(batch, tokens, dim))


def window_attention(x: Tensor, attn: nn.Module, window: int) -> Tensor:
    """Attention inside non-overlapping windows: ``(B, H, W, C) -> (B, H, W, C)``.

    The map is zero-padded at the bottom/right to a multiple of ``window``; padded tokens take
    part in the attention as in the original TinyViT (no masking), then are cropped away.
    """
    batch, height, width, dim = x.shape
    pad_b, pad_r = (-height) % window, (-width) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    n_h, n_w = (height + pad_b) // window, (width + pad_r) // window
    windows = x.view(batch, n_h, window, n_w, window, dim).transpose(2, 3)
    out = attn(windows.reshape(batch * n_h * n_w, window * window, dim))
    out = out.view(batch, n_h, n_w, window, window, dim).transpose(2, 3)
    return out.reshape(batch, n_h * window, n_w * window, dim)[:, :height, :width]


class TinyViTBlock(nn.Module):
    """Window attention, a depthwise ``local_conv``, then an MLP: ``(B, C, H, W)`` kept."""

    def __init__(
        self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        pad = local_conv_size // 2
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, pad, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        tokens = tokens + window_attention(tokens, self.attn, self.window)
        x = self.local_conv(tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return (x + self.mlp(x)).permute(0, 3, 1, 2)  # a channels-last view


class Stage(nn.Module):
    """Blocks at one resolution, then an optional PatchMerging.

    ``(B, C, H, W) -> (B, C', H', W')``.
    """

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT with SAM's neck: ``(B, 3, S, S) -> (B, out_chans, S / r, S / r)``.

    ``r`` is the product of the patch-embedding and merging strides: 4 for LiteMedSAM
    (``S = 256`` -> 64), 16 for MobileSAM (``S = 1024`` -> 64).
    """

    def __init__(self, patch_embed: nn.Module, layers: Sequence[Stage], neck: nn.Module) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.layers = nn.ModuleList(layers)
        self.neck = neck

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


def build_neck(in_chans: int, out_chans: int) -> nn.Sequential:
    """SAM's neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (convs without bias)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=False),
        LayerNorm2d(out_chans),
        nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_chans),
    )


def build_tiny_vit(
    *,
    embed_dims: Sequence[int],
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_sizes: Sequence[int],
    merge_strides: Sequence[int],
    patch_kernel: int,
    patch_stride: int,
    out_chans: int = 256,
    mlp_ratio: float = 4.0,
    mbconv_expand_ratio: float = 4.0,
    local_conv_size: int = 3,
) -> TinyViT:
    """Builds a TinyViT: stage 0 of MBConv blocks, later stages of TinyViTBlocks.

    ``merge_strides[i]`` is the stride of the PatchMerging after stage ``i`` (one fewer than
    stages; TinyViT-for-SAM uses ``(2, 2, 1)``). ``num_heads[0]`` / ``window_sizes[0]`` are
    unused (stage 0 is convolutional), kept to match the usual four-entry configs.
    """
    if not len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes):
        raise ValueError("embed_dims, depths, num_heads and window_sizes need one entry per stage")
    if len(merge_strides) != len(depths) - 1:
        raise ValueError(f"merge_strides needs {len(depths) - 1} entries, got {len(merge_strides)}")
    layers = []
    for i, (dim, depth) in enumerate(zip(embed_dims, depths, strict=True)):
        blocks: list[nn.Module] = [
            MBConv(dim, mbconv_expand_ratio)
            if i == 0
            else TinyViTBlock(dim, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
            for _ in range(depth)
        ]
        merge = (
            PatchMerging(dim, embed_dims[i + 1], merge_strides[i]) if i + 1 < len(depths) else None
        )
        layers.append(Stage(blocks, merge))
    patch_embed = PatchEmbed(3, embed_dims[0], patch_kernel, patch_stride)
    return TinyViT(patch_embed, layers, build_neck(embed_dims[-1], out_chans))
