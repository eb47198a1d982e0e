"""How the memory encodes a labelled image: one backbone block at one working size.

:class:`EncoderSettings` is what a memory records of its encoder (part of its version, so two
processes that built from the same labels with the same encoder agree);
:class:`MemoryEncoder` runs it: image -> block features, the global descriptor and the geometry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.backbone import DinoBackbone
from dinoseg.io import InputError
from dinoseg.preprocess import Geometry, image_to_tensor, plan_geometry

#: Default block of the memory's features (the prototype's and the vote's block).
DEFAULT_LAYER = 10
#: Default long side (px) of the memory's images (README, "Support memory").
DEFAULT_MEMORY_SIZE = 336


@dataclass(frozen=True)
class EncoderSettings:
    """The memory's encoder: backbone spec and weights digest, block, working size, patch."""

    backbone: str
    weights: str
    layer: int
    image_size: int
    patch: int
    norm: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSettings:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def global_descriptor(feats: Tensor, geom: Geometry, patch: int) -> Tensor:
    """The image's global descriptor: the L2-normalised mean of its L2-normalised patch
    features over the patches that cover the image (padding left out).

    Args:
        feats: (C, h, w) one block's features.

    Returns:
        (C,) float32 unit vector.
    """
    rh, rw = geom.resized
    rows, cols = -(-rh // patch), -(-rw // patch)
    x = F.normalize(feats[:, :rows, :cols].float(), dim=0)
    return F.normalize(x.mean(dim=(1, 2)), dim=0)


def check_compatible(settings: EncoderSettings, backbone: DinoBackbone, weights: str) -> int:
    """Index of the memory's block in ``backbone.layers``; :class:`InputError` when the
    backbone is not the memory's (other weights, patch, norm or without that block)."""
    problems = []
    if weights != settings.weights:
        problems.append("other backbone weights")
    if backbone.patch_size != settings.patch or backbone.norm != settings.norm:
        problems.append("another patch size or final norm")
    if settings.layer not in backbone.layers:
        problems.append(f"block {settings.layer} not among its layers {list(backbone.layers)}")
    if problems:
        raise InputError(
            f"the support memory was built with {settings.backbone} block {settings.layer}; "
            f"this model's backbone differs ({'; '.join(problems)}): rebuild the memory"
        )
    return backbone.layers.index(settings.layer)


def load_encoder(settings: EncoderSettings, backbone: DinoBackbone | None = None) -> MemoryEncoder:
    """The encoder a memory was built with, to :meth:`~dinoseg.memory.SupportMemory.add` to it.

    Args:
        settings: the memory's (``memory.settings``).
        backbone: a backbone already loaded (e.g. the served model's) to reuse when it is the
            memory's; otherwise the memory's backbone spec is loaded (block ``settings.layer``).

    Raises :class:`InputError` when the weights found are not the ones the memory was built with.
    """
    from dinoseg.backbone import load_backbone
    from dinoseg.backbone.encoder import weights_digest

    if backbone is None or settings.layer not in backbone.layers:
        backbone = load_backbone(settings.backbone, layers=[settings.layer], norm=settings.norm)
    if weights_digest(backbone) != settings.weights:
        raise InputError(
            f"{settings.backbone}: not the weights this memory was built with; rebuild it"
        )
    return MemoryEncoder(backbone, image_size=settings.image_size, layer=settings.layer)


class MemoryEncoder:
    """Encodes labelled images for a memory.

    Args:
        backbone: the frozen encoder (must return ``layer`` among its layers).
        image_size: long side (px) of the memory's images.
        layer: the 1-based block whose features are kept.
        encode: optional replacement of ``backbone(pixels)`` (e.g. a feature cache's
            ``lambda x: cache.encode(backbone, x)``); must return the same tensors.
    """

    def __init__(
        self,
        backbone: DinoBackbone,
        *,
        image_size: int = DEFAULT_MEMORY_SIZE,
        layer: int = DEFAULT_LAYER,
        encode: Any = None,
    ):
        if layer not in backbone.layers:
            raise InputError(f"memory block {layer} is not among the backbone's {backbone.layers}")
        if image_size < backbone.patch_size:
            raise InputError(f"memory image size {image_size}: give at least {backbone.patch_size}")
        from dinoseg.backbone.encoder import weights_digest

        self.backbone = backbone
        self.index = backbone.layers.index(layer)
        self._encode = encode or backbone
        self.settings = EncoderSettings(
            backbone=backbone.spec, weights=weights_digest(backbone), layer=layer,
            image_size=image_size, patch=backbone.patch_size, norm=backbone.norm,
        )  # fmt: skip

    def geometry(self, image: np.ndarray) -> Geometry:
        h, w = image.shape[:2]
        return plan_geometry(h, w, image_size=self.settings.image_size, patch=self.settings.patch)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> tuple[Tensor, Tensor, Geometry]:
        """(H, W, 3) uint8 -> (features (C, h, w) float32, descriptor (C,), geometry)."""
        geom = self.geometry(image)
        feats = self._encode(image_to_tensor(image, geom)[None])[self.index][0]
        return feats, global_descriptor(feats, geom, self.settings.patch), geom
