"""FS-DINO few-shot segmenter (arXiv 2504.15669): frozen DINOv2 features -> light segmenter.

The segmenter receives the frozen-backbone features of the query and of K support images,
plus the support masks, and combines

* an embedding adapter (query features of ``embed_layer`` -> 256-d image embedding),
* a meta-visual prompt generator (dense prompt + sparse prototype tokens),
* a 4D correlation encoder over the multi-layer hypercorrelation (averaged over the shots),
* a SAM-style two-way-transformer mask decoder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.models.adapter import EmbeddingAdapter
from dinoseg.models.conv4d import CorrelationEncoder
from dinoseg.models.correlation import multilayer_correlation
from dinoseg.models.decoder import MaskDecoder
from dinoseg.models.prompts import MetaPromptGenerator
from dinoseg.models.prototype import prototype_logits

__all__ = ["FSDINOSegmenter", "SegmenterConfig", "downsample_masks"]

_TUPLE_FIELDS = ("corr_channels", "corr_strides")
# Options that lost their measurement and were removed (docs/training-notes.md): the commit that
# had each. Old checkpoint configs carry them at False, which is the model without them.
_REMOVED = MappingProxyType({"residual_zero_head": "bc47a30", "similarity_only": "ba2c05b"})


@dataclass
class SegmenterConfig:
    """Hyper-parameters of an :class:`FSDINOSegmenter` (JSON-serialisable via ``to_dict``)."""

    name: str = "fsdino-s"
    backbone_dim: int = 384
    num_layers: int = 5  # len(dinoseg.backbone.DEFAULT_LAYERS)
    embed_layer: int = -1
    embed_dim: int = 256
    adapter_blocks: int = 2
    adapter_expansion: int = 4
    prompt_hidden_dim: int = 64
    corr_channels: tuple[int, ...] = field(default=(16, 32, 64))
    corr_strides: tuple[int, ...] = field(default=(2, 2, 2))
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    decoder_attention_downsample: int = 2
    pe_scale: float = 1.0
    # Prototype residual: logits = prototype-cosine logits + gate * decoder logits, gate
    # starting at 0 — the model starts as the training-free baseline and learns corrections.
    prototype_residual: bool = False
    prototype_temperature: float = 20.0

    def __post_init__(self) -> None:
        self.corr_channels = tuple(int(c) for c in self.corr_channels)
        self.corr_strides = tuple(int(s) for s in self.corr_strides)
        if not -self.num_layers <= self.embed_layer < self.num_layers:
            raise ValueError(f"embed_layer {self.embed_layer} out of range for {self.num_layers}")
        if len(self.corr_channels) != len(self.corr_strides):
            raise ValueError("corr_channels and corr_strides must have the same length")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key in _TUPLE_FIELDS:
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmenterConfig:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on unknown keys and on a removed
        option that is switched on (``False`` = the model without it, accepted and dropped)."""
        for key, commit in _REMOVED.items():
            if data.get(key):
                raise ValueError(
                    f"SegmenterConfig {key}=true was removed (it lost its "
                    f"measurement; see docs/training-notes.md); commit {commit} "
                    "still builds it"
                )
        data = {k: v for k, v in data.items() if k not in _REMOVED}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SegmenterConfig keys: {unknown}")
        return cls(**data)


def downsample_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, K, Hs, Ws) masks -> (B, K, hs, ws) soft masks in [0, 1] by area averaging."""
    masks = masks.float()
    if tuple(masks.shape[-2:]) == size:
        return masks
    return F.interpolate(masks, size=size, mode="area").clamp_(0.0, 1.0)


class FSDINOSegmenter(nn.Module):
    """Few-shot segmenter on frozen DINOv2 features; parts are injected by the builder.

    ``forward(query_feats, support_feats, support_masks)`` -> logits (B, 1, 4h, 4w).
    """

    def __init__(
        self,
        config: SegmenterConfig,
        adapter: EmbeddingAdapter,
        prompts: MetaPromptGenerator,
        correlation: CorrelationEncoder,
        decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.config = config
        self.adapter = adapter
        self.prompts = prompts
        self.correlation = correlation
        self.decoder = decoder
        self.gate = nn.Parameter(torch.zeros(())) if config.prototype_residual else None

    def _check_inputs(
        self, query_feats: list[Tensor], support_feats: list[Tensor], support_masks: Tensor
    ) -> None:
        n = self.config.num_layers
        if len(query_feats) != n or len(support_feats) != n:
            raise ValueError(
                f"expected {n} feature layers, got {len(query_feats)} query / "
                f"{len(support_feats)} support"
            )
        b, k = support_feats[0].shape[:2]
        q_grid, s_grid = query_feats[0].shape[-2:], support_feats[0].shape[-2:]
        for q, s in zip(query_feats, support_feats, strict=True):
            ok = (
                q.dim() == 4
                and s.dim() == 5
                and q.shape[0] == b
                and s.shape[:3] == (b, k, q.shape[1])
            )
            if not ok or q.shape[-2:] != q_grid or s.shape[-2:] != s_grid or k < 1:
                raise ValueError(
                    f"bad feature shapes: query {tuple(q.shape)} (B, C, h, w), support "
                    f"{tuple(s.shape)} (B, K>=1, C, hs, ws); all layers share one grid"
                )
        if support_masks.dim() != 4 or tuple(support_masks.shape[:2]) != (b, k):
            raise ValueError(f"support_masks must be ({b}, {k}, Hs, Ws), got {support_masks.shape}")

    def correlation_embedding(
        self, query_feats: list[Tensor], support_feats: list[Tensor], masks: Tensor
    ) -> Tensor:
        """Shot-averaged correlation embedding.

        query_feats: L x (B, C, h, w); support_feats: L x (B, K, C, hs, ws);
        masks: (B, K, hs, ws) -> (B, E, h, w). Shots are processed one at a time, which bounds
        the memory of the 4D tensors to that of a single shot.
        """
        k = masks.shape[1]
        total: Tensor | None = None
        for i in range(k):
            corr = multilayer_correlation(
                query_feats, [s[:, i] for s in support_feats], masks[:, i]
            )
            squeezed = self.correlation.squeeze(corr)  # (B, C_corr, h, w)
            total = squeezed if total is None else total + squeezed
        assert total is not None
        return self.correlation.project(total / k)

    def forward(
        self, query_feats: list[Tensor], support_feats: list[Tensor], support_masks: Tensor
    ) -> Tensor:
        """Few-shot segmentation logits.

        Args:
            query_feats: L tensors (B, C, h, w), frozen-backbone patch features of the queries.
            support_feats: L tensors (B, K, C, hs, ws), the same layers for K supports.
            support_masks: (B, K, Hs, Ws) support foreground masks in {0, 1} at image
                resolution (downsampled here to (hs, ws) by area averaging).

        Returns:
            (B, 1, 4h, 4w) mask logits.
        """
        self._check_inputs(query_feats, support_feats, support_masks)
        hs, ws = support_feats[0].shape[-2:]
        masks = downsample_masks(support_masks, (hs, ws)).to(query_feats[0].dtype)
        layer = self.config.embed_layer
        query, support = query_feats[layer], support_feats[layer]
        dense, sparse = self.prompts(query, support, masks)  # (B, E, h, w), (B, N, E)
        embed = dense + self.correlation_embedding(query_feats, support_feats, masks)
        embed = embed + self.adapter(query)  # (B, E, h, w)
        logits: Tensor = self.decoder(embed, sparse)
        if self.gate is None:
            return logits
        prior = prototype_logits(query, support, masks, self.config.prototype_temperature)
        prior = F.interpolate(prior, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        return prior + self.gate * logits
