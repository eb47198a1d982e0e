"""Supervised head method: frozen (or tuned) DINOv2 tiles -> a trained light head -> classes.

The head (:mod:`dinoseg.heads`, trained by ``dinoseg aerial train``) gives one logit per class
name on every patch; logits are upsampled to the tile, turned into softmax probabilities,
blended across tiles, and each pixel takes the most probable class. The classes are the head's
(no supports needed). Tiles are encoded at the ground resolution the head was trained at.

With ``views`` > 1 every tile is scored in that many orientations (itself, its mirrors, then
quarter turns: :data:`ORIENTATIONS`; the heads are trained on all eight) and the probabilities,
turned back, are averaged: ``views`` times the encoder's work per tile. With ``scales`` (relative
to the scale the head was trained at, e.g. ``(1.0, 1.5)``) every view is also encoded at those
resolutions and the probabilities averaged: finer patches for thin roads, at ``sum(s**2)``
times the encoder's work.

With ``adapt`` (:class:`~dinoseg.aerial.adapt.AdaptSettings`, ``steps`` > 0), :meth:`prepare`
first encodes up to ``adapt.tiles`` tiles spread over the photo and fits a copy of the head to
its own confident patches there (:func:`~dinoseg.aerial.adapt.self_train`); that copy scores the
photo, the loaded head stays as trained. A photo of at most ``adapt.tiles`` tiles is still
encoded once (the sampled tiles' features are kept for scoring); a larger one costs up to
``adapt.tiles`` more encoder passes.

With a ``pixel`` head (:mod:`dinoseg.aerial.pixels`, trained beside the head) the averaged
probabilities are multiplied by its per-pixel ones to the power ``pixel_weight`` and
renormalised: colour and texture at full resolution where a 14 px patch mixes classes.

With ``bias`` (class name -> log-odds, the safety classes' by default) those classes' logits
are raised before the softmax when the photo is scored, not when it is pseudo-labelled: a
planner's map misses fewer roads for little mIoU.

Each tile's confidence (mean over its pixels of the top class probability) is kept for the last
photo segmented (:attr:`HeadMethod.tile_confidence`): the least confident tiles are the ones to
send to annotators.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dinoseg.aerial.adapt import AdaptReport, AdaptSettings, self_train
from dinoseg.aerial.features import TileEncoder
from dinoseg.aerial.methods.base import AerialMethod, TileSettings
from dinoseg.aerial.pixels import PixelHead, fuse
from dinoseg.aerial.reader import ImageSource
from dinoseg.aerial.tiling import TileGrid
from dinoseg.heads.model import SegHead
from dinoseg.io import InputError

#: the test-time scales measured best for their cost (docs/aerial.md): as trained, and 1.5x
FINE_SCALES = (1.0, 1.5)
#: the range of test-time scales accepted (relative to the head's own); at 2x a 518 px tile is
#: encoded at 1036 px, whose attention takes up to about 0.7 GB per tile (it grows as scale**4)
SCALE_RANGE = (0.25, 2.0)
#: a tile's place in the photo: (y0, x0, y1, x1) px
Box = tuple[int, int, int, int]
#: (quarter turns, mirror left-right) of each test-time view, in the order they are added
ORIENTATIONS = ((0, False), (0, True), (2, True), (2, False), (1, False), (3, False), (1, True),
                (3, True))


def orient(x: np.ndarray, view: int, axes: tuple[int, int] = (-2, -1),
           inverse: bool = False) -> np.ndarray:  # fmt: skip
    """``x`` with its (H, W) ``axes`` turned to orientation ``view`` (or back from it,
    ``inverse``); a view of ``x``, no copy."""
    turns, mirror = ORIENTATIONS[view]
    if inverse:
        x = np.flip(x, axes[1]) if mirror else x
        return np.rot90(x, -turns, axes=axes)
    x = np.rot90(x, turns, axes=axes)
    return np.flip(x, axes[1]) if mirror else x


def _tile_key(tile: np.ndarray) -> bytes:
    """A tile's identity (shape and pixels), to find its kept features again."""
    import hashlib

    digest = hashlib.blake2b(tile.tobytes(), digest_size=16)
    digest.update(repr(tile.shape).encode())
    return digest.digest()


def least_confident(scored: Sequence[tuple[Box, float]], n: int) -> list[tuple[Box, float]]:
    """The ``n`` least confident of ``(box, confidence)`` tiles (:attr:`HeadMethod
    .tile_confidence`), least first: the tiles a map offers annotators for review."""
    return sorted(scored, key=lambda t: t[1])[:n]


def check_views(views: int, name: str = "views") -> None:
    """Raise :class:`InputError` unless ``views`` is 1 to ``len(ORIENTATIONS)``."""
    if not 1 <= views <= len(ORIENTATIONS):
        raise InputError(f"{name} {views}: use 1 to {len(ORIENTATIONS)} orientations per tile")


def check_scales(scales: Sequence[float], name: str = "scales") -> None:
    """Raise :class:`InputError` unless ``scales`` is one or more distinct numbers in
    :data:`SCALE_RANGE`."""
    lo, hi = SCALE_RANGE
    if not scales:
        raise InputError(f"{name}: give at least one encoder scale (1 = as trained)")
    bad = [s for s in scales if not (math.isfinite(s) and lo <= s <= hi)]
    if bad:
        raise InputError(f"{name} {list(scales)}: each scale must be between {lo:g} and {hi:g}")
    if len(set(scales)) != len(scales):
        raise InputError(f"{name} {list(scales)}: a scale is given twice")


class HeadMethod(AerialMethod):
    """Args:
    head: the trained head.
    encoder: the backbone (tuned blocks applied) at the head's scale; it must return every
        block the head reads.
    views: orientations each tile is scored in (1 to 8; quarter turns only on square tiles).
    scales: encoder scales each view is scored at, relative to ``encoder``'s (1 = as trained).
    adapt: test-time self-training on each photo (None or ``steps`` = 0: off).
    bias: log-odds added to these classes' scores (names the head lacks are skipped).
    pixel: a pixel head over the same classes (:mod:`dinoseg.aerial.pixels`), or None.
    pixel_weight: its log-probabilities' weight when fused with the views' average (0 = off).
    """

    name = "head"

    def __init__(self, head: SegHead, encoder: TileEncoder, *, tiles: TileSettings | None = None,
                 views: int = 1, scales: Sequence[float] = (1.0,),
                 adapt: AdaptSettings | None = None,
                 bias: Mapping[str, float] | None = None, pixel: PixelHead | None = None,
                 pixel_weight: float = 0.0):  # fmt: skip
        super().__init__(tiles)
        check_views(views)
        check_scales(scales)
        self.views, self.scales = views, tuple(float(s) for s in scales)
        layers = encoder.backbone.layers
        missing = [b for b in head.spec.blocks if b not in layers]
        if missing:
            raise InputError(f"the head reads blocks {list(head.spec.blocks)}; the backbone "
                             f"returns {list(layers)}")
        self.head = head.eval()
        if pixel is not None and tuple(pixel.spec.classes) != tuple(head.classes):
            raise InputError(f"the pixel head's classes {list(pixel.spec.classes)} are not the "
                             f"head's {list(head.classes)}")
        self.pixel = pixel if pixel_weight > 0 else None
        self.pixel_weight = float(pixel_weight)
        self.adapt = adapt or AdaptSettings()
        bias = bias or {}
        self._bias = torch.tensor([float(bias.get(c, 0.0)) for c in head.classes]).view(1, -1, 1, 1)
        self.active = self.head  # the head scoring the current photo (adapted or not)
        self.adaptation: AdaptReport | None = None  # the last photo's, when adapt is on
        self.encoder = encoder
        self._index = [layers.index(b) for b in head.spec.blocks]
        self._boxes: list[tuple[int, int, int, int]] = []
        self._confidence: list[float] = []
        self._stash: dict[bytes, torch.Tensor] = {}  # sampled tiles' input, not scored yet

    def prepare(self, source: ImageSource, grid: TileGrid) -> None:
        """Start a photo: its tiles, in the order they are scored (row by row)."""
        self._boxes, self._confidence, self._stash = grid.boxes(), [], {}
        self.active, self.adaptation = self.head, None
        if self.adapt.steps > 0:
            self.active, self.adaptation = self_train(self.head, self._sample(source), self.adapt)

    @torch.no_grad()
    def _sample(self, source: ImageSource) -> torch.Tensor:
        """``(B, C_in, h, w)`` standardised features of up to ``adapt.tiles`` tiles spread over
        the photo (tiles of one size: a photo smaller than a tile is one tile). When that is
        every tile, each tile's slice is kept for scoring: one encoder pass, one copy."""
        boxes = self._boxes
        picks = np.unique(np.linspace(0, len(boxes) - 1, min(self.adapt.tiles, len(boxes))).round())
        x = torch.empty(0)
        for j, i in enumerate(picks.astype(int)):
            tile = source.read(*boxes[i])[None]
            feats = self.encoder.encode(tile, self.encoder.geometry(*tile.shape[1:3]))
            one = self.head.standardize([feats[k] for k in self._index])  # (1, C_in, h, w)
            if j == 0:
                x = torch.empty((len(picks), *one.shape[1:]))
            x[j] = one[0]
            if len(picks) == len(boxes):
                self._stash[_tile_key(tile[0])] = x[j : j + 1]
        return x

    def _stashed(self, tiles: np.ndarray) -> torch.Tensor | None:
        """The kept standardised features of ``tiles`` ``(B, C_in, h, w)`` (taken out of the
        stash), or None unless all of them are kept."""
        if not self._stash:
            return None
        keys = [_tile_key(t) for t in tiles]
        if not all(k in self._stash for k in keys):
            return None
        return torch.cat([self._stash.pop(k) for k in keys])

    def details(self) -> dict[str, Any]:
        """The last photo's adaptation (:class:`~dinoseg.aerial.adapt.AdaptReport`), if on."""
        return {} if self.adaptation is None else {"adaptation": self.adaptation.as_dict()}

    @property
    def tile_confidence(self) -> list[tuple[Box, float]]:
        """``((y0, x0, y1, x1), confidence)`` of every tile of the last photo segmented."""
        return list(zip(self._boxes, self._confidence, strict=False))

    @property
    def class_names(self) -> list[str]:
        return list(self.head.classes)

    def tile_scores(self, tiles: np.ndarray) -> np.ndarray:
        """``(B, th, tw, 3)`` uint8 -> ``(B, M, th, tw)`` float32 class probabilities."""
        square = tiles.shape[1] == tiles.shape[2]
        views = [v for v in range(self.views) if square or ORIENTATIONS[v][0] % 2 == 0]
        probs = self._probs(tiles, self._stashed(tiles))  # view 0: the tile itself
        for v in views[1:]:
            turned = np.ascontiguousarray(orient(tiles, v, axes=(1, 2)))
            probs += orient(self._probs(turned), v, axes=(2, 3), inverse=True)
        probs /= len(views)
        if self.pixel is not None:
            probs = fuse(torch.from_numpy(probs), self.pixel.log_probs(tiles),
                         self.pixel_weight).numpy()  # fmt: skip
        self._confidence += probs.max(1).mean((1, 2)).tolist()
        return probs

    @torch.inference_mode()
    def _probs(self, tiles: np.ndarray, x: torch.Tensor | None = None) -> np.ndarray:
        """``(B, th, tw, 3)`` tiles -> ``(B, M, th, tw)`` probabilities averaged over
        :attr:`scales` (``x``: the tiles' kept standardised features at scale 1)."""
        per_scale = [self._scale_probs(tiles, s, x if s == 1.0 else None) for s in self.scales]
        return torch.stack(per_scale).mean(0).numpy()

    def _scale_probs(self, tiles: np.ndarray, s: float, x: torch.Tensor | None) -> torch.Tensor:
        """``(B, th, tw, 3)`` tiles read at ``s`` times the encoder's scale -> ``(B, M, th, tw)``
        probabilities (``x``: their kept standardised features, when there are)."""
        geom = self.encoder.geometry(*tiles.shape[1:3], scale=self.encoder.scale * s)
        if x is None:
            layers = self.encoder.encode(tiles, geom)
            x = self.head.standardize([layers[i] for i in self._index])
        logits = self.active.classify(x) + self._bias
        return self.encoder.to_image(logits, geom).softmax(1)
