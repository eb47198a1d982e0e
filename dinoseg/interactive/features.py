"""DINOv2 patch features of one image, and the similarity of every pixel to a clicked point.

One encoder pass per image (through a :class:`~dinoseg.feature_cache.FeatureCache`, so a
second process or a restart reads the features from disk); every click after that only costs
a dot product on the patch grid and a bilinear upsampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.backbone import DinoBackbone
from dinoseg.feature_cache import FeatureCache
from dinoseg.preprocess import Geometry, image_to_tensor, plan_geometry


@dataclass(frozen=True)
class PatchFeatures:
    """L2-normalised patch features of one image.

    Attributes:
        feats: (C, gh, gw) float32, unit length along C; the grid covers the padded input.
        geometry: how the (H, W) image maps onto the encoder input.
        patch: the encoder's patch size (px of the encoder input).
    """

    feats: Tensor
    geometry: Geometry
    patch: int = 14

    @property
    def patch_px(self) -> float:
        """Side of one patch in pixels of the original image."""
        return self.patch * self.geometry.orig[1] / self.geometry.resized[1]

    def at(self, x: float, y: float) -> Tensor:
        """(C,) unit feature at image point ``(x, y)`` (bilinear on the grid)."""
        (h, w), (rh, rw) = self.geometry.orig, self.geometry.resized
        _, gh, gw = self.feats.shape
        gx = x * rw / w / self.patch  # grid units, 0 = left edge of the first patch
        gy = y * rh / h / self.patch
        grid = torch.tensor([[[[2 * gx / gw - 1, 2 * gy / gh - 1]]]], dtype=torch.float32)
        v = F.grid_sample(self.feats[None], grid, mode="bilinear", align_corners=False)
        return F.normalize(v[0, :, 0, 0], dim=0)

    def similarity(self, vector: Tensor) -> np.ndarray:
        """(H, W) float32 cosine similarity of every pixel to a (C,) unit vector (computed on
        the grid, upsampled bilinearly to the image)."""
        import cv2

        sim = self.grid_similarity(vector).numpy().astype(np.float32)
        (ph, pw), (rh, rw) = self.geometry.padded, self.geometry.resized
        h, w = self.geometry.orig
        up = cv2.resize(sim, (pw, ph), interpolation=cv2.INTER_LINEAR)[:rh, :rw]
        return cv2.resize(up, (w, h), interpolation=cv2.INTER_LINEAR)

    def grid_similarity(self, vector: Tensor) -> Tensor:
        """(gh, gw) cosine similarity of each patch to a (C,) unit vector."""
        return torch.einsum("c,chw->hw", vector, self.feats)


def encode_patches(
    backbone: DinoBackbone,
    image: np.ndarray,
    image_size: int,
    cache: FeatureCache | None = None,
) -> PatchFeatures:
    """Patch features of an (H, W, 3) uint8 image at working size ``image_size`` (long side).

    The backbone's layers are normalised one by one, concatenated and normalised again.
    """
    h, w = image.shape[:2]
    geometry = plan_geometry(h, w, image_size=image_size, patch=backbone.patch_size)
    pixels = image_to_tensor(image, geometry)[None]
    layers = cache.encode(backbone, pixels) if cache is not None else backbone(pixels)
    feats = torch.cat([F.normalize(f[0].float(), dim=0) for f in layers])
    return PatchFeatures(F.normalize(feats, dim=0), geometry, backbone.patch_size)
