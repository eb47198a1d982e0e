"""DINOv2 + k-means: patch features clustered, clusters named by the nearest class prototype.

Two passes over the image. ``prepare`` encodes up to ``fit_tiles`` tiles spread evenly over the
image, samples ``samples_per_tile`` L2-normalised patch features from each and fits
scikit-learn's ``MiniBatchKMeans`` (``k`` clusters). Each tile is then scored by the cosine
similarity of its patches to the (normalised) centroids; the scores are blended across tiles
and the best cluster wins. With supports, every cluster is named after the class whose
prototype (mean support feature, :func:`~dinoseg.aerial.features.class_prototypes`) is nearest
to its centroid; without, the clusters are the labels ("cluster 0", ...).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dinoseg.aerial.features import Supports, TileEncoder, class_prototypes
from dinoseg.aerial.methods.base import AerialMethod, TileSettings
from dinoseg.aerial.reader import ImageSource
from dinoseg.aerial.tiling import TileGrid
from dinoseg.io import InputError


class KMeansMethod(AerialMethod):
    """Args:
    encoder: the frozen backbone (its last requested layer is clustered).
    k: number of clusters.
    supports: optional annotated tiles to name the clusters.
    temperature: scale of the cosine scores before blending.
    """

    name = "kmeans"

    def __init__(
        self,
        encoder: TileEncoder,
        *,
        k: int = 8,
        supports: Supports | None = None,
        fit_tiles: int = 16,
        samples_per_tile: int = 1024,
        seed: int = 0,
        temperature: float = 20.0,
        tiles: TileSettings | None = None,
    ):
        super().__init__(tiles)
        if k < 2:
            raise InputError(f"k-means needs k >= 2 clusters, got {k}")
        self.encoder = encoder
        self.k = k
        self.supports = supports if supports is not None and supports.images else None
        self.fit_tiles = max(1, fit_tiles)
        self.samples_per_tile = max(k, samples_per_tile)
        self.seed = seed
        self.temperature = temperature
        self.centroids: torch.Tensor | None = None  # (k, C) normalised
        self.cluster_to_label = np.arange(k, dtype=np.uint8)
        self._prototypes: tuple[torch.Tensor, list[int]] | None = None  # encoded once

    @property
    def class_names(self) -> list[str]:
        if self.supports is not None:
            return list(self.supports.class_names)
        return [f"cluster {i}" for i in range(self.k)]

    def _features(self, tiles: np.ndarray) -> torch.Tensor:
        geom = self.encoder.geometry(*tiles.shape[1:3])
        return F.normalize(self.encoder.encode(tiles, geom)[-1], dim=1)  # (B, C, gh, gw)

    def prepare(self, source: ImageSource, grid: TileGrid) -> None:
        """Fit the clusters on patch features sampled from tiles spread over the image."""
        from sklearn.cluster import MiniBatchKMeans

        boxes = grid.boxes()
        picks = np.unique(np.linspace(0, len(boxes) - 1, min(self.fit_tiles, len(boxes))).round())
        rng = np.random.default_rng(self.seed)
        samples = []
        for i in picks.astype(int):
            y0, x0, y1, x1 = boxes[i]
            f = self._features(source.read(y0, x0, y1, x1)[None])[0]
            flat = f.flatten(1).T.numpy()  # (patches, C)
            take = rng.choice(len(flat), min(len(flat), self.samples_per_tile), replace=False)
            samples.append(flat[take])
        data = np.concatenate(samples)
        if len(data) < self.k:
            raise InputError(f"the image has {len(data)} patches, fewer than k={self.k}")
        km = MiniBatchKMeans(n_clusters=self.k, random_state=self.seed, n_init=3, batch_size=2048)
        km.fit(data)
        self.centroids = F.normalize(torch.from_numpy(km.cluster_centers_).float(), dim=1)
        if self.supports is not None:
            self.cluster_to_label = self.name_clusters(self.centroids, self.supports)

    def name_clusters(self, centroids: torch.Tensor, supports: Supports) -> np.ndarray:
        """``(k,)`` uint8: the class of the nearest support prototype of each centroid."""
        if self._prototypes is None:
            self._prototypes = class_prototypes(self.encoder, supports)
        protos, classes = self._prototypes
        nearest = (centroids @ protos.T).argmax(dim=1).numpy()
        return np.asarray(classes, np.uint8)[nearest]

    @torch.inference_mode()
    def tile_scores(self, tiles: np.ndarray) -> np.ndarray:
        """Cosine similarity to each centroid, ``(B, k, th, tw)`` (times ``temperature``)."""
        if self.centroids is None:
            raise RuntimeError("prepare() must fit the clusters before scoring tiles")
        geom = self.encoder.geometry(*tiles.shape[1:3])
        feats = F.normalize(self.encoder.encode(tiles, geom)[-1], dim=1)
        sims = torch.einsum("bchw,kc->bkhw", feats, self.centroids) * self.temperature
        return self.encoder.to_image(sims, geom).numpy()

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return self.cluster_to_label[np.argmax(scores, axis=0)]
