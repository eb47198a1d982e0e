"""The head's encoder: an image's frozen block features at the head's working size.

:class:`BlockFeatures` runs the backbone through a :class:`~dinoseg.feature_cache.FeatureCache`
when one is given. Sharing that cache (and the backbone object) with a few-shot predictor
(:class:`~dinoseg.feature_cache.CachedPredictor`) at the same working size means an image that
both read is encoded once: the cache key is the encoder input and the backbone's identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dinoseg.backbone import DinoBackbone
from dinoseg.device import module_device
from dinoseg.feature_cache import FeatureCache
from dinoseg.io import InputError
from dinoseg.preprocess import Geometry, image_to_tensor, plan_geometry


class BlockFeatures:
    """(H, W, 3) uint8 image -> the head's block features and the image's geometry.

    Args:
        backbone: the frozen encoder; it must return every block in ``blocks``.
        blocks: 1-based blocks the head reads, in its order.
        image_size: long side (px) of the encoder's input.
        cache: optional feature cache (memory and/or disk).
    """

    def __init__(
        self,
        backbone: DinoBackbone,
        blocks: Sequence[int],
        image_size: int,
        cache: FeatureCache | None = None,
    ):
        absent = [b for b in blocks if b not in backbone.layers]
        if absent:
            raise InputError(
                f"the head reads blocks {list(blocks)} but the backbone returns "
                f"{list(backbone.layers)} (missing {absent})"
            )
        self.backbone, self.blocks, self.image_size = backbone, tuple(blocks), image_size
        self.cache = cache
        self._index = [backbone.layers.index(b) for b in blocks]

    @property
    def patch(self) -> int:
        return self.backbone.patch_size

    def geometry(self, image: np.ndarray) -> Geometry:
        h, w = image.shape[:2]
        return plan_geometry(h, w, image_size=self.image_size, patch=self.patch)

    def select(self, layers: Sequence[Tensor]) -> list[Tensor]:
        """The head's blocks out of the backbone's output (one tensor per backbone layer)."""
        if len(layers) != len(self.backbone.layers):
            raise InputError(
                f"{len(layers)} feature tensors given; the backbone returns "
                f"{len(self.backbone.layers)} (blocks {list(self.backbone.layers)})"
            )
        return [layers[i] for i in self._index]

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> tuple[list[Tensor], Geometry]:
        """Every backbone layer of one image: L x (1, C, h, w) float32, and its geometry."""
        geom = self.geometry(image)
        pixels = image_to_tensor(image, geom)[None].to(module_device(self.backbone))
        if self.cache is None:
            return self.backbone(pixels), geom
        return self.cache.encode(self.backbone, pixels), geom

    def __call__(self, image: np.ndarray) -> tuple[list[Tensor], Geometry]:
        """The head's blocks, each (C, h, w) float16, and the geometry (training data)."""
        layers, geom = self.encode(image)
        return [f[0].to(torch.float16) for f in self.select(layers)], geom
