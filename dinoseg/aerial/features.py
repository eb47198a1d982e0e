"""DINOv2 features of tiles and supports at one ground resolution, and class prototypes.

A tile of ``tile`` px is fed to the encoder at ``scale = image_size / tile`` (1 = native
resolution); supports are resized by the same factor, so one patch covers the same ground
area in both (long side capped at ``support_max_side`` px).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.backbone import DinoBackbone
from dinoseg.io import InputError
from dinoseg.models.prototype import masks_to_grid
from dinoseg.preprocess import Geometry, image_to_tensor, mask_to_tensor, plan_geometry

IGNORE = 255


@dataclass
class Supports:
    """Annotated support tiles for several classes at once.

    Attributes:
        images: K (H_k, W_k, 3) uint8 images.
        labels: K (H_k, W_k) integer label maps (class indices; ``ignore`` = unlabelled).
        class_names: names of the classes 0..C-1 (the label values).
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    class_names: list[str]
    ignore: int = IGNORE
    _present: list[list[int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise InputError(f"{len(self.images)} support images but {len(self.labels)} masks")
        for i, (img, lab) in enumerate(zip(self.images, self.labels, strict=True)):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise InputError(f"support {i + 1}: expected an (H, W, 3) uint8 image")
            if lab.shape != img.shape[:2]:
                raise InputError(
                    f"support {i + 1}: mask is {lab.shape[1]}x{lab.shape[0]} but the image is "
                    f"{img.shape[1]}x{img.shape[0]}"
                )
            bad = np.setdiff1d(np.unique(lab), [*range(len(self.class_names)), self.ignore])
            if bad.size:
                raise InputError(
                    f"support {i + 1}: mask values {bad.tolist()[:5]} are not class indices "
                    f"0..{len(self.class_names) - 1} (or {self.ignore} = unlabelled)"
                )
        self._present = [
            [k for k, lab in enumerate(self.labels) if np.any(lab == c)]
            for c in range(len(self.class_names))
        ]

    def shots(self, c: int) -> list[int]:
        """Indices of the supports in which class ``c`` appears."""
        return self._present[c]

    @property
    def classes_present(self) -> list[int]:
        return [c for c in range(len(self.class_names)) if self._present[c]]


class TileEncoder:
    """Runs a frozen DINOv2 on tiles and supports at one scale.

    Args:
        backbone: the frozen encoder.
        scale: encoder pixels per image pixel.
        support_max_side: cap of a support's long side after scaling (px).
        cache: a :class:`~dinoseg.feature_cache.FeatureCache` tiles are encoded through
            (re-runs over the same photo pay the encoder once), or None.
        device: where the backbone runs (:func:`dinoseg.device.resolve_device`); the features
            come back on the CPU, where the methods work on them.
    """

    def __init__(self, backbone: DinoBackbone, *, scale: float = 1.0, support_max_side: int = 1036,
                 cache: Any = None, device: str = "cpu"):  # fmt: skip
        from dinoseg.device import resolve_device

        if scale <= 0:
            raise InputError(f"encoder scale must be positive, got {scale}")
        self.backbone = backbone.to(resolve_device(device))
        self.scale = scale
        self.support_max_side = support_max_side
        self.cache = cache

    def geometry(self, h: int, w: int, *, cap: int | None = None,
                 scale: float | None = None) -> Geometry:  # fmt: skip
        """The encoder's input plan for an (h, w) image at ``scale`` (None: the encoder's)."""
        side = max(14, round(max(h, w) * (self.scale if scale is None else scale)))
        if cap is not None:
            side = min(side, cap)
        return plan_geometry(h, w, image_size=side, patch=self.backbone.patch_size)

    @torch.inference_mode()
    def encode(self, images: np.ndarray | Sequence[np.ndarray], geom: Geometry) -> list[Tensor]:
        """Equal-size ``(B, H, W, 3)`` uint8 images -> per layer ``(B, C, gh, gw)`` features."""
        pix = torch.stack([image_to_tensor(img, geom) for img in images])
        return self.features(pix)

    def features(self, pix: Tensor) -> list[Tensor]:
        """``(B, 3, Hp, Wp)`` encoder inputs -> per layer ``(B, C, gh, gw)`` on the CPU."""
        feats = self.backbone(pix) if self.cache is None else self.cache.encode(self.backbone, pix)
        return [f.cpu() for f in feats]

    def support_geometries(self, images: Sequence[np.ndarray]) -> list[Geometry]:
        """One geometry per support, all on the first one's grid (needed to stack them)."""
        ref = self.geometry(*images[0].shape[:2], cap=self.support_max_side)
        return [Geometry(img.shape[:2], ref.resized, ref.padded) for img in images]

    @staticmethod
    def to_image(grid: Tensor, geom: Geometry) -> Tensor:
        """``(B, C, gh', gw')`` scores over the padded input -> ``(B, C, H, W)`` at image size."""
        ph, pw = geom.padded
        rh, rw = geom.resized
        x = F.interpolate(grid.float(), size=(ph, pw), mode="bilinear", align_corners=False)
        x = x[:, :, :rh, :rw]
        if (rh, rw) != geom.orig:
            x = F.interpolate(x, size=geom.orig, mode="bilinear", align_corners=False)
        return x


def class_prototypes(
    encoder: TileEncoder, supports: Supports, *, layer: int = -1
) -> tuple[Tensor, list[int]]:
    """Mean L2-normalised patch feature of each class present in the supports.

    Each support is encoded on its own (no resizing onto another's grid); a patch counts with
    the fraction of it covered by the class.

    Returns:
        ``(P, C)`` normalised prototypes and the class index of each row.
    """
    n = len(supports.class_names)
    sums: dict[int, Tensor] = {}
    weights = [0.0] * n
    for img, lab in zip(supports.images, supports.labels, strict=True):
        geom = encoder.geometry(*img.shape[:2], cap=encoder.support_max_side)
        feats = F.normalize(encoder.encode([img], geom)[layer][0], dim=0)  # (C, gh, gw)
        for c in np.unique(lab):
            if c == supports.ignore:
                continue
            m = mask_to_tensor(lab == c, geom)[None, None]
            w = masks_to_grid(m, (feats.shape[-2], feats.shape[-1]))[0, 0]  # (gh, gw)
            s = torch.einsum("chw,hw->c", feats, w)
            sums[int(c)] = sums[int(c)] + s if int(c) in sums else s
            weights[c] += float(w.sum())
    classes = [c for c in range(n) if c in sums and weights[c] > 0]
    if not classes:
        raise InputError("the support masks mark no class; label at least one class")
    protos = torch.stack([sums[c] / weights[c] for c in classes])
    return F.normalize(protos, dim=1), classes
