"""Image and mask geometry: resize to the working size, pad to the patch grid, and back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.backbone.encoder import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Geometry:
    """How one image maps onto the encoder's input.

    ``orig`` (H, W) is the file's size; the image is resized (aspect kept) to ``resized``
    (h, w) whose long side is the working size, then padded bottom/right to ``padded``
    (a multiple of the patch size).
    """

    orig: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]


def plan_geometry(height: int, width: int, *, image_size: int, patch: int = 14) -> Geometry:
    """Resize so the long side is ``image_size`` px, then pad to a multiple of ``patch``."""
    scale = image_size / max(height, width)
    rh = max(patch, round(height * scale))
    rw = max(patch, round(width * scale))
    padded = (math.ceil(rh / patch) * patch, math.ceil(rw / patch) * patch)
    return Geometry(orig=(height, width), resized=(rh, rw), padded=padded)


def image_to_tensor(image: np.ndarray, geom: Geometry) -> Tensor:
    """(H, W, 3) uint8 -> (3, Hp, Wp) float32, ImageNet-normalised, zero (mean) padded."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    x = x[None].float() / 255.0
    x = F.interpolate(x, size=geom.resized, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    rh, rw = geom.resized
    ph, pw = geom.padded
    return F.pad(x, (0, pw - rw, 0, ph - rh))[0]


def mask_to_tensor(mask: np.ndarray, geom: Geometry) -> Tensor:
    """(H, W) bool -> (Hp, Wp) float32 in [0, 1] (area-resampled, zero padded)."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    m = F.interpolate(m, size=geom.resized, mode="bilinear", align_corners=False, antialias=True)
    rh, rw = geom.resized
    ph, pw = geom.padded
    return F.pad(m, (0, pw - rw, 0, ph - rh))[0, 0].clamp(0.0, 1.0)


def logits_at_image_size(logits: Tensor, geom: Geometry) -> Tensor:
    """Logits on (a multiple of) the padded grid -> logits at the original size.

    Args:
        logits: (C, h_out, w_out) covering the padded input.

    Returns:
        (1, C, H, W) float32 (padding cut, resized back).
    """
    ph, pw = geom.padded
    rh, rw = geom.resized
    x = F.interpolate(logits[None].float(), size=(ph, pw), mode="bilinear", align_corners=False)
    x = x[:, :, :rh, :rw]
    if (rh, rw) != geom.orig:
        x = F.interpolate(x, size=geom.orig, mode="bilinear", align_corners=False)
    return x


def logits_to_image(logits: Tensor, geom: Geometry) -> Tensor:
    """Foreground logits on (a multiple of) the padded grid -> probability at the original size.

    Args:
        logits: (1, h_out, w_out) covering the padded input.

    Returns:
        (H, W) float32 probabilities.
    """
    return torch.sigmoid(logits_at_image_size(logits, geom))[0, 0]
