"""The interface every aerial method follows, and tiled segmentation built on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg.aerial.categories import UNKNOWN
from dinoseg.aerial.reader import ImageSource, as_source
from dinoseg.aerial.tiling import ProgressFn, TileGrid, plan_tiles, tiled_labels

#: score given to classes a method cannot predict (absent from the supports)
ABSENT_SCORE = -50.0


@dataclass(frozen=True)
class TileSettings:
    """Tiling of the image: ``tile`` px squares overlapping by ``overlap`` px, ``batch`` tiles
    encoded together (memory grows with ``batch``, not with the image)."""

    tile: int = 518
    overlap: int = 96
    batch: int = 2


class AerialMethod:
    """A way to turn an aerial photo into a class map.

    Subclasses give per-pixel class scores for a batch of tiles (:meth:`tile_scores`) and,
    where needed, a pass over the whole image first (:meth:`prepare`, e.g. fitting k-means);
    :meth:`segment` runs them over overlapping tiles with smooth blending and
    :meth:`decide` turns blended scores into labels (``argmax``; :data:`UNKNOWN` = 255 where
    the method abstains).
    """

    name = "method"

    def __init__(self, tiles: TileSettings | None = None):
        self.tiles = tiles or TileSettings()

    @property
    def class_names(self) -> list[str]:
        """Names of the labels :meth:`segment` returns (label ``i`` = ``class_names[i]``)."""
        raise NotImplementedError

    def prepare(self, source: ImageSource, grid: TileGrid) -> None:
        """A pass over the image before scoring (nothing by default)."""

    def details(self) -> dict[str, Any]:
        """What the last :meth:`segment` did beyond its labels, for ``stats.json`` (JSON
        values; nothing by default)."""
        return {}

    def tile_scores(self, tiles: np.ndarray) -> np.ndarray:
        """``(B, th, tw, 3)`` uint8 tiles -> ``(B, S, th, tw)`` float32 scores."""
        raise NotImplementedError

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """``(S, h, w)`` blended scores -> ``(h, w)`` uint8 labels (argmax by default)."""
        return np.argmax(scores, axis=0).astype(np.uint8)

    def segment(
        self,
        image: np.ndarray | ImageSource | str | Path,
        *,
        progress: ProgressFn | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Segment a photo of any size.

        Args:
            image: ``(H, W, 3)`` uint8 array, an :class:`ImageSource` or a path.
            progress: called with ``(tiles done, tiles in all)``.
            out: optional preallocated ``(H, W)`` uint8 output.

        Returns:
            ``(H, W)`` uint8 labels (255 = unknown).
        """
        source = as_source(image)
        t = self.tiles
        self.prepare(source, plan_tiles(source.shape, t.tile, t.overlap))
        return tiled_labels(
            source,
            self.tile_scores,
            self.decide,
            tile=t.tile,
            overlap=t.overlap,
            batch=t.batch,
            progress=progress,
            out=out,
        )


def argmax_with_unknown(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``(S, h, w)`` probabilities -> labels; :data:`UNKNOWN` where the best is below
    ``threshold``."""
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    if threshold > 0:
        labels[np.max(probs, axis=0) < threshold] = UNKNOWN
    return labels
