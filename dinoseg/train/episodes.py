"""Training episodes drawn from a :class:`FeatureBank` (base classes only).

Step ``s`` of a run draws its batch from ``np.random.default_rng([seed, s])`` alone, so a
resumed run sees exactly the batches an uninterrupted one would. The query target is the
episode class (1), everything else (0) — novel-class pixels are therefore background and never
foreground — and ignore/padding (255). Random horizontal flips of features and labels (DINOv2
features are close to flip-equivariant) are applied independently to query and supports, and
optionally random crops of the feature grid resized back to it (``crop_scale``: the smallest
side fraction kept) — a scale augmentation of the frozen features, which a cached bank allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.io import InputError
from dinoseg.train.augment import PixelAugmenter
from dinoseg.train.bank import IGNORE, BankItem, FeatureBank


@dataclass
class TrainBatch:
    """Episodes sharing one query grid and one support grid.

    Attributes:
        query_feats: L x (B, C, h, w) float32.
        support_feats: L x (B, K, C, hs, ws) float32.
        support_masks: (B, K, 4hs, 4ws) float32 in {0, 1}.
        target: (B, 1, 4h, 4w) float32 in {0, 1}.
        valid: (B, 1, 4h, 4w) float32, 0 on ignore and padding.
        class_ids: B episode classes.
    """

    query_feats: list[Tensor]
    support_feats: list[Tensor]
    support_masks: Tensor
    target: Tensor
    valid: Tensor
    class_ids: list[int]


def _crop(feats: list[Tensor], labels: Tensor, grid: tuple[int, int], box: np.ndarray
          ) -> tuple[list[Tensor], Tensor, tuple[int, int]]:
    """Crop features (C, gh, gw) and labels (r*gh, r*gw) to ``box`` = (height fraction,
    width fraction, top, left) in [0, 1] (whole feature cells); returns the cropped grid."""
    gh, gw = grid
    r = labels.shape[0] // gh
    ch, cw = max(1, round(gh * box[0])), max(1, round(gw * box[1]))
    y0 = min(int(box[2] * (gh - ch + 1)), gh - ch)
    x0 = min(int(box[3] * (gw - cw + 1)), gw - cw)
    feats = [f[:, y0 : y0 + ch, x0 : x0 + cw] for f in feats]
    return feats, labels[y0 * r : (y0 + ch) * r, x0 * r : (x0 + cw) * r], (ch, cw)


def _view(item: BankItem, flip: bool, grid: tuple[int, int] | None = None,
          box: np.ndarray | None = None) -> tuple[list[Tensor], Tensor]:
    """Features (float32) and labels of an item, optionally flipped, cropped to ``box`` (see
    :func:`_crop`) and resized to ``grid`` (default: the item's own grid)."""
    feats = [f.float() for f in item.feats]
    labels = item.labels.long()
    current, grid = item.grid, grid or item.grid
    if flip:
        feats = [f.flip(-1) for f in feats]
        labels = labels.flip(-1)
    if box is not None:
        feats, labels, current = _crop(feats, labels, current, box)
    if grid != current:
        feats = [F.interpolate(f[None], size=grid, mode="bilinear", align_corners=False)[0]
                 for f in feats]
        gh, gw = item.grid
        size = (grid[0] * item.labels.shape[0] // gh, grid[1] * item.labels.shape[1] // gw)
        labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return feats, labels


# How an episode is drawn: "class" = a class uniformly, then query and supports from its
# images (rare classes' few images recur, and a frequent class that co-occurs is mostly a
# negative); "image" = a query image uniformly, then one of the classes it shows.
SAMPLING = ("class", "image")


class TrainEpisodes:
    """Random base-class episodes over one or more feature banks.

    Args:
        bank: training features.
        classes: the episode classes (a fold's base classes).
        shots: K supports per episode.
        min_area: a class must cover this fraction of an image to be used.
        seed: run seed.
        extra: more ``(bank, classes)`` sources (mixed-data training); episode classes are drawn
            uniformly over the classes of all sources, query and supports from one source.
        sampling: ``"class"`` or ``"image"`` (see ``SAMPLING``).
        augmenter: re-encode every drawn image from an augmented view instead of using the
            bank's cached features (:mod:`dinoseg.train.augment`).
        drop_classes: classes of ``bank`` whose images are not used at all (an image with any
            pixel of one is dropped) — the alternative to training with those pixels as
            background (``TrainConfig.novel_images``).
    """

    def __init__(self, bank: FeatureBank, classes: Sequence[int], *, shots: int = 1,
                 min_area: float = 0.005, seed: int = 0, flip: bool = True,
                 crop_scale: float = 1.0,
                 extra: Sequence[tuple[FeatureBank, Sequence[int]]] = (),
                 drop_classes: Sequence[int] = (), sampling: str = "class",
                 augmenter: PixelAugmenter | None = None):
        self.banks = [bank, *[b for b, _ in extra]]
        dropped = {n for c in drop_classes for n in bank.images_with_class(int(c), 0.0)}
        self.dropped_images = len(dropped)
        self.shots, self.seed, self.flip, self.augmenter = shots, seed, flip, augmenter
        if not 0.0 < crop_scale <= 1.0:
            raise InputError(f"crop_scale must be in (0, 1], got {crop_scale}")
        self.crop_scale = crop_scale
        self.pools: dict[tuple[int, int], list[int]] = {}
        for s, (b, cls) in enumerate([(bank, classes), *extra]):
            for c in sorted(cls):
                pool = [n for n in b.images_with_class(c, min_area) if s or n not in dropped]
                if len(pool) > shots:
                    self.pools[(s, int(c))] = pool
        if not self.pools:
            raise InputError(f"no training class has {shots + 1} images covering {min_area:.2%}")
        self.classes = sorted(self.pools)
        if sampling not in SAMPLING:
            raise InputError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
        self.sampling = sampling
        # image sampling: every (source, image) of a pool, with the pool classes it shows
        shows: dict[tuple[int, int], list[int]] = {}
        for (src, c), pool in self.pools.items():
            for n in pool:
                shows.setdefault((src, n), []).append(c)
        self.images = sorted(shows.items())

    def _draw_class(self, rng: np.random.Generator) -> tuple[int, int, int | None]:
        """(source, class, query image or None) of one episode, per ``sampling``."""
        if self.sampling == "class":
            source, c = self.classes[int(rng.integers(len(self.classes)))]
            return source, c, None
        (source, image), classes = self.images[int(rng.integers(len(self.images)))]
        return source, classes[int(rng.integers(len(classes)))], image

    def sample(self, step: int, batch_size: int) -> list[TrainBatch]:
        """The batch of ``step``, split into groups of equal feature grids."""
        rng = np.random.default_rng([self.seed, step])
        crop_rng = np.random.default_rng([self.seed, step, 1])
        aug_rng = np.random.default_rng([self.seed, step, 2])
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[tuple]] = {}
        for _ in range(batch_size):
            source, c, q_image = self._draw_class(rng)
            pool, bank = self.pools[(source, c)], self.banks[source]
            if q_image is None:
                picks = rng.choice(len(pool), size=self.shots + 1, replace=False)
                q, sup = pool[int(picks[0])], [pool[int(j)] for j in picks[1:]]
            else:
                others = [n for n in pool if n != q_image]
                q = q_image
                sup = [others[int(j)] for j in rng.choice(len(others), self.shots, replace=False)]
            flips = rng.random(self.shots + 1) < (0.5 if self.flip else 0.0)
            boxes = None  # from their own generator: cropping never changes the episodes
            if self.crop_scale < 1.0:
                boxes = crop_rng.random((self.shots + 1, 4))
                boxes[:, :2] = self.crop_scale + (1.0 - self.crop_scale) * boxes[:, :2]
            if self.augmenter is None:
                q_item, s_items = bank.items[q], [bank.items[j] for j in sup]
            else:  # fresh encoder views (own generator: the episodes stay the same)
                q_item = self.augmenter.view(bank, q, c, aug_rng)
                s_items = [self.augmenter.view(bank, j, c, aug_rng) for j in sup]
            key = (q_item.grid, s_items[0].grid)
            groups.setdefault(key, []).append((c, q_item, s_items, flips, boxes))
        return [self._collate(g) for g in groups.values()]

    def _collate(self, episodes: list[tuple]) -> TrainBatch:
        qf, sf, sm, tg, vd, cls = [], [], [], [], [], []
        for c, q_item, s_items, flips, boxes in episodes:
            box = [None] * len(flips) if boxes is None else list(boxes)
            feats, labels = _view(q_item, bool(flips[0]), box=box[0])
            qf.append(feats)
            tg.append((labels == c).float()[None])
            vd.append((labels != IGNORE).float()[None])
            grid = s_items[0].grid
            views = [_view(s, bool(f), grid, b)
                     for s, f, b in zip(s_items, flips[1:], box[1:], strict=True)]
            sf.append([torch.stack(layer) for layer in zip(*[v[0] for v in views], strict=True)])
            sm.append(torch.stack([(v[1] == c).float() for v in views]))
            cls.append(int(c))
        return TrainBatch(
            query_feats=[torch.stack(layer) for layer in zip(*qf, strict=True)],
            support_feats=[torch.stack(layer) for layer in zip(*sf, strict=True)],
            support_masks=torch.stack(sm), target=torch.stack(tg), valid=torch.stack(vd),
            class_ids=cls,
        )
