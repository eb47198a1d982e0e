"""Click-to-mask on one image: DINOv2 point prototypes, grown over patch similarity.

Every click is a point prototype: the image's DINOv2 feature at the clicked point. A pixel
belongs to the object when its similarity to the nearest positive click beats both ``tau``
(the default background) and its similarity to every negative click, each similarity lowered
by ``lam`` x (distance to that click / image diagonal); only the connected parts that hold a
positive click are kept, and the outline is snapped to image edges
(:func:`~dinoseg.interactive.refine.snap_to_edges`).

The first positive click reaches over the whole image. A later click corrects the mask it was
placed on, so it only reaches ``max(min_reach, reach x d)`` px, where ``d`` is its distance
to the outline of that mask (how big the error it points at is): a click in a thin sliver
along the outline fixes the sliver, not the other side of the image. Masks are computed click
after click and remembered per click sequence, so the next click of a session costs one step.

A rectangle (:func:`box_mask`) starts the mask instead of a first click: LiteMedSAM's
box-prompted decoder when a SAM-family model is given, else DINOv2 inside vs around the box.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dinoseg.interactive.features import PatchFeatures
from dinoseg.interactive.prompts import Box, Click, check_prompts
from dinoseg.interactive.refine import inner_distance, keep_seeded, snap_to_edges


@dataclass(frozen=True)
class InteractiveConfig:
    """Click-to-mask settings (chosen on tuning objects of CamVid train and the VOC-subset
    images outside the benchmark's split; bench/interactive_noc.py).

    Attributes:
        image_size: encoder working size (long side, px).
        layers: DINOv2 blocks whose features are concatenated.
        tau: similarity a pixel needs to a positive click when no negative click is closer.
        lam: similarity lost per image diagonal of distance to a click.
        reach: a correcting click reaches ``reach`` x its distance to the outline...
        min_reach: ...and at least this many px.
        band: outline band (in patches) the watershed may move the outline in.
        click_radius: px around a click that always take the click's side.
        memory: click sequences remembered per image.
    """

    image_size: int = 518
    layers: tuple[int, ...] = (10,)
    tau: float = 0.5
    lam: float = 0.5
    reach: float = 4.0
    min_reach: float = 8.0
    band: float = 1.0
    click_radius: int = 3
    memory: int = 8


@dataclass
class _Step:
    mask: np.ndarray  # (H, W) bool, what the user sees after this click
    pos: np.ndarray  # (H, W) float32, best positive evidence
    neg: np.ndarray  # (H, W) float32, best negative evidence (>= tau)


class ClickSegmenter:
    """Interactive segmentation of one image.

    Args:
        image: (H, W, 3) uint8 RGB.
        features: its :class:`PatchFeatures`.
        config: settings.
        base: optional (H, W) bool mask to correct (from a rectangle); clicks then all act as
            corrections of it.
    """

    def __init__(
        self,
        image: np.ndarray,
        features: PatchFeatures,
        config: InteractiveConfig | None = None,
        base: np.ndarray | None = None,
    ):
        self.image = image
        self.features = features
        self.config = config or InteractiveConfig()
        self.shape: tuple[int, int] = (int(image.shape[0]), int(image.shape[1]))
        h, w = self.shape
        self.base = base
        self._diag = float(np.hypot(h, w))
        self._yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
        self._xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
        self._steps: OrderedDict[tuple[Click, ...], _Step] = OrderedDict()
        self._band = max(1, round(self.config.band * features.patch_px))

    def __call__(self, clicks: Sequence[Click]) -> np.ndarray:
        """The (H, W) bool mask after ``clicks`` (in the order they were placed)."""
        h, w = self.shape
        clicks, _ = check_prompts(clicks, None if self.base is None else Box(0, 0, w, h),
                                  self.shape)  # fmt: skip
        if not clicks:
            return self._start().mask.copy()
        return self._step(tuple(clicks)).mask.copy()

    def _start(self) -> _Step:
        h, w = self.shape
        pos = np.full((h, w), -np.inf, np.float32)
        mask = np.zeros((h, w), bool) if self.base is None else self.base.copy()
        if self.base is not None:  # the box mask is a prior just above the background
            pos[self.base] = self.config.tau + 0.1
        return _Step(mask, pos, np.full((h, w), self.config.tau, np.float32))

    def _step(self, clicks: tuple[Click, ...]) -> _Step:
        known = self._steps.get(clicks)
        if known is not None:
            self._steps.move_to_end(clicks)
            return known
        before = self._step(clicks[:-1]) if len(clicks) > 1 else self._start()
        click = clicks[-1]
        field = self._field(click, self._reach(before, click, clicks[:-1]))
        pos = np.maximum(before.pos, field) if click.positive else before.pos
        neg = before.neg if click.positive else np.maximum(before.neg, field)
        coarse = keep_seeded(pos > neg, clicks, self.base)
        mask = snap_to_edges(self.image, coarse, self._band, clicks, self.config.click_radius)
        step = _Step(keep_seeded(mask, clicks, self.base), pos, neg)
        self._steps[clicks] = step
        while len(self._steps) > self.config.memory:
            self._steps.popitem(last=False)
        return step

    def _reach(self, before: _Step, click: Click, earlier: Sequence[Click]) -> float:
        """How far (px) the click's prototype reaches: everywhere for the first positive click
        without a base mask, else ``reach`` x its distance to the outline it corrects."""
        if self.base is None and not any(c.positive for c in earlier):
            return np.inf
        side = ~before.mask if click.positive else before.mask
        row, col = click.pixel(self.shape)
        distance = float(inner_distance(side)[row, col])
        return max(self.config.min_reach, self.config.reach * distance)

    def _field(self, click: Click, reach: float) -> np.ndarray:
        """(H, W) evidence of one click: similarity minus the distance penalty, -inf beyond
        its reach."""
        distance = np.sqrt((self._yy - click.y) ** 2 + (self._xx - click.x) ** 2)
        sim = self.features.similarity(self.features.at(click.x, click.y))
        field = sim - self.config.lam * distance / self._diag
        if np.isfinite(reach):
            field[distance > reach] = -np.inf
        return field
