"""Supervised head method: frozen (or tuned) DINOv2 tiles -> a trained light head -> classes.

The head (:mod:`dinoseg.heads`, trained by ``dinoseg aerial train``) gives one logit per class
name on every patch; logits are upsampled to the tile, turned into softmax probabilities,
blended across tiles, and each pixel takes the most probable class. The classes are the head's
(no supports needed). Tiles are encoded at the ground resolution the head was trained at.

Each tile's confidence (mean over its pixels of the top class probability) is kept for the last
photo segmented (:attr:`HeadMethod.tile_confidence`): the least confident tiles are the ones to
send to annotators.
"""

from __future__ import annotations

import numpy as np
import torch

from dinoseg.aerial.features import TileEncoder
from dinoseg.aerial.methods.base import AerialMethod, TileSettings
from dinoseg.aerial.reader import ImageSource
from dinoseg.aerial.tiling import TileGrid
from dinoseg.heads.model import SegHead
from dinoseg.io import InputError


class HeadMethod(AerialMethod):
    """Args:
    head: the trained head.
    encoder: the backbone (tuned blocks applied) at the head's scale; it must return every
        block the head reads.
    """

    name = "head"

    def __init__(self, head: SegHead, encoder: TileEncoder, *, tiles: TileSettings | None = None):
        super().__init__(tiles)
        layers = encoder.backbone.layers
        missing = [b for b in head.spec.blocks if b not in layers]
        if missing:
            raise InputError(f"the head reads blocks {list(head.spec.blocks)}; the backbone "
                             f"returns {list(layers)}")
        self.head = head.eval()
        self.encoder = encoder
        self._index = [layers.index(b) for b in head.spec.blocks]
        self._boxes: list[tuple[int, int, int, int]] = []
        self._confidence: list[float] = []

    def prepare(self, source: ImageSource, grid: TileGrid) -> None:
        """Start a photo: its tiles, in the order they are scored (row by row)."""
        self._boxes, self._confidence = grid.boxes(), []

    @property
    def tile_confidence(self) -> list[tuple[tuple[int, int, int, int], float]]:
        """``((y0, x0, y1, x1), confidence)`` of every tile of the last photo segmented."""
        return list(zip(self._boxes, self._confidence, strict=False))

    @property
    def class_names(self) -> list[str]:
        return list(self.head.classes)

    @torch.inference_mode()
    def tile_scores(self, tiles: np.ndarray) -> np.ndarray:
        """``(B, th, tw, 3)`` uint8 -> ``(B, M, th, tw)`` float32 class probabilities."""
        th, tw = tiles.shape[1:3]
        geom = self.encoder.geometry(th, tw)
        feats = self.encoder.encode(tiles, geom)
        logits = self.head([feats[i] for i in self._index])
        probs = self.encoder.to_image(logits, geom).softmax(1)
        self._confidence += probs.amax(1).mean((1, 2)).tolist()
        return probs.numpy()
