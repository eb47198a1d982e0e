"""Training episodes drawn from a :class:`FeatureBank` (base classes only).

Step ``s`` of a run draws its batch from ``np.random.default_rng([seed, s])`` alone, so a
resumed run sees exactly the batches an uninterrupted one would. An episode is a class drawn
uniformly, then its query and supports from that class's images. The query target is the
episode class (1), everything else (0) — novel-class pixels are therefore background and never
foreground — and ignore/padding (255). Random horizontal flips of features and labels (DINOv2
features are close to flip-equivariant) are applied independently to query and supports.

What the segmenter sees of each drawn image comes from a *view source*: the bank's cached
features by default, or fresh encoder features of an augmented image
(:class:`dinoseg.train.augment.PixelAugmenter`), drawn from their own generator so the
episodes are the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.io import InputError
from dinoseg.train.bank import IGNORE, BankItem, FeatureBank


class ViewSource(Protocol):
    """Where the features and labels of a drawn image come from (a bank, an augmenter)."""

    def view(self, index: int, class_id: int, rng: np.random.Generator) -> BankItem:
        """The view of the bank's image ``index`` for an episode of ``class_id``."""
        ...


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


def _view(item: BankItem, flip: bool, grid: tuple[int, int] | None = None
          ) -> tuple[list[Tensor], Tensor]:
    """Features L x (C, h, w) float32 and labels (4h, 4w) of an item, optionally flipped and
    resized to ``grid`` (default: the item's own grid)."""
    feats = [f.float() for f in item.feats]
    labels = item.labels.long()
    if flip:
        feats = [f.flip(-1) for f in feats]
        labels = labels.flip(-1)
    if grid is not None and grid != item.grid:
        feats = [F.interpolate(f[None], size=grid, mode="bilinear", align_corners=False)[0]
                 for f in feats]
        gh, gw = item.grid
        size = (grid[0] * labels.shape[0] // gh, grid[1] * labels.shape[1] // gw)
        labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return feats, labels


class TrainEpisodes:
    """Random base-class episodes over a feature bank.

    Args:
        bank: training features.
        classes: the episode classes (a fold's base classes).
        shots: K supports per episode.
        min_area: a class must cover this fraction of an image to be used.
        seed: run seed.
        views: the view source of the drawn images (default: ``bank``'s cached features);
            it must serve ``bank``'s images.
    """

    def __init__(self, bank: FeatureBank, classes: Sequence[int], *, shots: int = 1,
                 min_area: float = 0.005, seed: int = 0, views: ViewSource | None = None):
        self.shots, self.seed = shots, seed
        self.views: ViewSource = bank if views is None else views
        self.pools: dict[int, list[int]] = {}
        for c in sorted(classes):
            pool = bank.images_with_class(c, min_area)
            if len(pool) > shots:
                self.pools[int(c)] = pool
        if not self.pools:
            raise InputError(f"no training class has {shots + 1} images covering {min_area:.2%}")
        self.classes = sorted(self.pools)

    def sample(self, step: int, batch_size: int) -> list[TrainBatch]:
        """The batch of ``step``, split into groups of equal feature grids."""
        rng = np.random.default_rng([self.seed, step])
        view_rng = np.random.default_rng([self.seed, step, 2])  # own: episodes never depend on it
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[tuple]] = {}
        for _ in range(batch_size):
            c = self.classes[int(rng.integers(len(self.classes)))]
            pool = self.pools[c]
            picks = rng.choice(len(pool), size=self.shots + 1, replace=False)
            flips = rng.random(self.shots + 1) < 0.5
            q_item = self.views.view(pool[int(picks[0])], c, view_rng)
            s_items = [self.views.view(pool[int(j)], c, view_rng) for j in picks[1:]]
            key = (q_item.grid, s_items[0].grid)
            groups.setdefault(key, []).append((c, q_item, s_items, flips))
        return [self._collate(g) for g in groups.values()]

    def _collate(self, episodes: list[tuple]) -> TrainBatch:
        qf, sf, sm, tg, vd, cls = [], [], [], [], [], []
        for c, q_item, s_items, flips in episodes:
            feats, labels = _view(q_item, bool(flips[0]))
            qf.append(feats)
            tg.append((labels == c).float()[None])
            vd.append((labels != IGNORE).float()[None])
            grid = s_items[0].grid
            views = [_view(s, bool(f), grid) for s, f in zip(s_items, flips[1:], strict=True)]
            sf.append([torch.stack(layer) for layer in zip(*[v[0] for v in views], strict=True)])
            sm.append(torch.stack([(v[1] == c).float() for v in views]))
            cls.append(int(c))
        return TrainBatch(
            query_feats=[torch.stack(layer) for layer in zip(*qf, strict=True)],
            support_feats=[torch.stack(layer) for layer in zip(*sf, strict=True)],
            support_masks=torch.stack(sm), target=torch.stack(tg), valid=torch.stack(vd),
            class_ids=cls,
        )
