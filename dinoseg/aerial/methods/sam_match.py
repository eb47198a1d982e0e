"""DINOv2 + SAM automatic masks: the training-free matching baseline.

Per tile, the SAM-family model's automatic mask generator proposes segments (points grid,
IoU / stability filtering, NMS; :func:`dinoseg.aerial.sam.mask_generator`). Each segment is
labelled by the cosine similarity of its mean DINOv2 feature to the class prototypes of the
supports: every pixel of the segment gets that similarity vector as its class scores (smaller
segments are painted over larger ones). Pixels no segment covers keep the per-patch
similarity to the prototypes, so the map has no holes. Scores (times ``temperature``) are
blended across tiles and the best class wins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dinoseg.aerial.features import Supports, TileEncoder, class_prototypes
from dinoseg.aerial.methods.base import ABSENT_SCORE, AerialMethod, TileSettings
from dinoseg.io import InputError
from dinoseg.models.prototype import masks_to_grid
from dinoseg.preprocess import mask_to_tensor


class SamMatchMethod(AerialMethod):
    """Args:
    encoder: the frozen DINOv2 (its last requested layer gives the features).
    generator: a ``SamAutomaticMaskGenerator`` (:func:`dinoseg.aerial.sam.mask_generator`).
    supports: annotated tiles naming the classes.
    """

    name = "sam-match"

    def __init__(
        self,
        encoder: TileEncoder,
        generator: Any,
        supports: Supports,
        *,
        temperature: float = 20.0,
        tiles: TileSettings | None = None,
    ):
        super().__init__(tiles)
        if not supports.images:
            raise InputError("sam-match needs support tiles to name the masks (--support IMG MASK)")
        self.encoder = encoder
        self.generator = generator
        self.supports = supports
        self.temperature = temperature
        protos, classes = class_prototypes(encoder, supports)
        self.prototypes = protos  # (P, C)
        self.proto_classes = classes
        self.masks_per_tile: list[int] = []

    @property
    def class_names(self) -> list[str]:
        return list(self.supports.class_names)

    @torch.inference_mode()
    def tile_scores(self, tiles: np.ndarray) -> np.ndarray:
        """Class scores ``(B, C, th, tw)`` from labelled SAM segments (see the module doc)."""
        b, th, tw = tiles.shape[:3]
        geom = self.encoder.geometry(th, tw)
        feats = F.normalize(self.encoder.encode(tiles, geom)[-1], dim=1)  # (B, D, gh, gw)
        patch = torch.einsum("bchw,pc->bphw", feats, self.prototypes)
        patch_img = self.encoder.to_image(patch, geom).numpy()  # (B, P, th, tw)
        out = np.full((b, len(self.class_names), th, tw), ABSENT_SCORE, np.float32)
        for i in range(b):
            sims = self._paint_segments(tiles[i], feats[i], patch_img[i], geom)
            out[i, self.proto_classes] = sims * self.temperature
        return out

    def _paint_segments(
        self, tile: np.ndarray, feats: torch.Tensor, sims: np.ndarray, geom: Any
    ) -> np.ndarray:
        """Overwrite ``sims (P, th, tw)`` with each segment's pooled similarity, large to small."""
        segments = sorted(self.generator.generate(tile), key=lambda m: -int(m["area"]))
        self.masks_per_tile.append(len(segments))
        grid = (feats.shape[-2], feats.shape[-1])
        for seg in segments:
            mask = np.asarray(seg["segmentation"], bool)
            w = masks_to_grid(mask_to_tensor(mask, geom)[None, None], grid)[0, 0]  # (gh, gw)
            if float(w.sum()) <= 0:
                continue
            pooled = F.normalize(torch.einsum("chw,hw->c", feats, w), dim=0)
            sims[:, mask] = (self.prototypes @ pooled).numpy()[:, None]
        return sims
