"""The one place few-shot segmenters are constructed: an explicit name -> factory registry."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from torch import nn

from dinoseg.models.adapter import EmbeddingAdapter
from dinoseg.models.conv4d import CorrelationEncoder
from dinoseg.models.decoder import MaskDecoder
from dinoseg.models.fsdino import FSDINOSegmenter, SegmenterConfig
from dinoseg.models.prompts import MetaPromptGenerator

__all__ = [
    "SEGMENTER_REGISTRY",
    "SERVED_ARCH",
    "build_fsdino",
    "build_segmenter",
    "count_parameters",
]


def build_fsdino(config: SegmenterConfig) -> FSDINOSegmenter:
    """Builds an :class:`FSDINOSegmenter` and its parts from a config (e.g. a checkpoint's)."""
    adapter = EmbeddingAdapter(
        config.backbone_dim, config.embed_dim, config.adapter_blocks, config.adapter_expansion
    )
    prompts = MetaPromptGenerator(config.backbone_dim, config.embed_dim, config.prompt_hidden_dim)
    correlation = CorrelationEncoder(
        in_channels=config.num_layers,
        embed_dim=config.embed_dim,
        channels=config.corr_channels,
        strides=config.corr_strides,
    )
    decoder = MaskDecoder(
        embed_dim=config.embed_dim,
        depth=config.decoder_depth,
        num_heads=config.decoder_heads,
        mlp_dim=config.decoder_mlp_dim,
        attention_downsample=config.decoder_attention_downsample,
        pe_scale=config.pe_scale,
    )
    return FSDINOSegmenter(config, adapter, prompts, correlation, decoder)


def _fsdino_factory(**preset: Any) -> Callable[..., nn.Module]:
    """Factory for one FS-DINO preset; keyword overrides replace preset/config fields."""

    def factory(**overrides: Any) -> nn.Module:
        return build_fsdino(SegmenterConfig.from_dict({**preset, **overrides}))

    return factory


def _build_prototype(**overrides: Any) -> nn.Module:
    """Training-free prototype baseline (cosine similarity to the masked-average prototype)."""
    from dinoseg.models.prototype import PrototypeBaseline

    return PrototypeBaseline(**overrides)


def _build_knn(**overrides: Any) -> nn.Module:
    """Training-free nearest-neighbour vote over the support's labelled patches."""
    from dinoseg.models.knn import KnnVote

    return KnnVote(**overrides)


# The served recipe (README results, `dinoseg train` / `distill` default): fsdino-s with the
# prototype residual (without it: 4.8 mIoU on CamVid fold 0 novel classes, with it 38.9) and
# 4D-convolution strides (4, 2, 2), which halve its CPU cost (docs/training-notes.md).
_SERVED = MappingProxyType({"prototype_residual": True, "corr_strides": (4, 2, 2)})
_TINY = MappingProxyType({
    "backbone_dim": 32, "num_layers": 2, "embed_dim": 32, "adapter_blocks": 1,
    "adapter_expansion": 2, "prompt_hidden_dim": 16, "corr_channels": (8, 8, 16),
    "decoder_depth": 1, "decoder_heads": 2, "decoder_mlp_dim": 64,
})  # fmt: skip
#: The registry entry of the served model: the default of ``dinoseg train`` and ``distill``.
SERVED_ARCH = "fsdino-s-residual"

SEGMENTER_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    SERVED_ARCH: _fsdino_factory(name=SERVED_ARCH, backbone_dim=384, **_SERVED),
    "fsdino-s": _fsdino_factory(name="fsdino-s", backbone_dim=384),  # DINOv2 ViT-S/14
    "fsdino-b": _fsdino_factory(name="fsdino-b", backbone_dim=768),  # DINOv2 ViT-B/14
    "fsdino-l": _fsdino_factory(name="fsdino-l", backbone_dim=1024),  # DINOv2 ViT-L/14
    "fsdino-g": _fsdino_factory(name="fsdino-g", backbone_dim=1536),  # DINOv2 ViT-g/14
    "fsdino-tiny": _fsdino_factory(name="fsdino-tiny", **_TINY),  # tiny dims, for tests
    "fsdino-tiny-residual": _fsdino_factory(  # the served recipe at tiny dims, for tests
        name="fsdino-tiny-residual", **_TINY, **_SERVED
    ),
    "prototype": _build_prototype,
    "knn": _build_knn,
}


def build_segmenter(name: str, **overrides: Any) -> nn.Module:
    """Builds the registered segmenter ``name``; ``overrides`` go to its factory.

    For the ``fsdino-*`` entries the overrides are :class:`SegmenterConfig` fields.
    Raises ``ValueError`` for an unknown name.
    """
    try:
        factory = SEGMENTER_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(SEGMENTER_REGISTRY))
        raise ValueError(f"unknown segmenter {name!r}; known: {known}") from None
    return factory(**overrides)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
