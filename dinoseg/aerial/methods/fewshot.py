"""Few-shot method: the project's model, one support set per class, per-pixel argmax.

For each class ``c`` the supports in which ``c`` appears form its support set (mask = pixels
labelled ``c``, everything else labelled = background). A tile is encoded once; the few-shot
model (the prototype baseline or a trained checkpoint, through
:func:`dinoseg.predictor.load_predictor`) gives one foreground logit map per class; logits are
blended across tiles, and a pixel takes the class of the highest probability, or
:data:`~dinoseg.aerial.categories.UNKNOWN` when no class reaches ``unknown_threshold``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from dinoseg.aerial.features import Supports, TileEncoder
from dinoseg.aerial.methods.base import (
    ABSENT_SCORE,
    AerialMethod,
    TileSettings,
    argmax_with_unknown,
)
from dinoseg.io import InputError
from dinoseg.preprocess import image_to_tensor, mask_to_tensor


class FewShotMethod(AerialMethod):
    """Args:
    model: a few-shot model ``forward(query_feats, support_feats, support_masks) -> logits``.
    encoder: the frozen backbone at the tiles' scale.
    supports: annotated tiles (every class to map should appear in at least one).
    unknown_threshold: probability under which a pixel is unknown (0 = never).
    """

    name = "fewshot"

    def __init__(
        self,
        model: nn.Module,
        encoder: TileEncoder,
        supports: Supports,
        *,
        unknown_threshold: float = 0.3,
        tiles: TileSettings | None = None,
    ):
        super().__init__(tiles)
        if not supports.images:
            raise InputError("the few-shot method needs support tiles (--support IMG MASK)")
        if not 0.0 <= unknown_threshold < 1.0:
            raise InputError(f"unknown threshold must be in [0, 1), got {unknown_threshold}")
        if not supports.classes_present:
            raise InputError("the support masks mark no class")
        self.model = model.eval()
        self.encoder = encoder
        self.supports = supports
        self.unknown_threshold = unknown_threshold
        self._feats, self._masks = self._encode_supports()

    @property
    def class_names(self) -> list[str]:
        return list(self.supports.class_names)

    @torch.inference_mode()
    def _encode_supports(self) -> tuple[list[Tensor], list[Tensor]]:
        """Support features per layer ``(1, K, C, h, w)`` and per-class masks ``(1, K, Hp, Wp)``."""
        s = self.supports
        geoms = self.encoder.support_geometries(s.images)
        pix = torch.stack([image_to_tensor(i, g) for i, g in zip(s.images, geoms, strict=True)])
        feats = [f[None] for f in self.encoder.features(pix)]
        masks = []
        for c in range(len(s.class_names)):
            per_shot = [mask_to_tensor(lab == c, g) for lab, g in zip(s.labels, geoms, strict=True)]
            masks.append(torch.stack(per_shot)[None])
        return feats, masks

    @torch.inference_mode()
    def tile_scores(self, tiles: np.ndarray) -> np.ndarray:
        """Per-class foreground logits ``(B, C, th, tw)`` (absent classes: a large negative)."""
        b, th, tw = tiles.shape[:3]
        geom = self.encoder.geometry(th, tw)
        q_feats = self.encoder.encode(tiles, geom)
        out = np.full((b, len(self.class_names), th, tw), ABSENT_SCORE, np.float32)
        for c in self.supports.classes_present:
            shots = self.supports.shots(c)
            s_feats = [f[:, shots].expand(b, -1, -1, -1, -1) for f in self._feats]
            s_masks = self._masks[c][:, shots].expand(b, -1, -1, -1)
            logits = self.model(q_feats, s_feats, s_masks)  # (B, 1, h', w')
            out[:, c] = self.encoder.to_image(logits, geom)[:, 0].numpy()
        return out

    def decide(self, scores: np.ndarray) -> np.ndarray:
        probs = 1.0 / (1.0 + np.exp(-np.clip(scores, -50.0, 50.0)))
        return argmax_with_unknown(probs, self.unknown_threshold)
