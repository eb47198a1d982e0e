"""Seeded, reproducible few-shot episodes (HSNet's test protocol, class-balanced).

Episode ``i`` of a sampler is a pure function of ``(seed, i)`` and the dataset's contents:

1. **Class.** The eligible classes (requested classes with at least ``shots + 1`` images where
   the class is present, see :func:`~dinoseg.data.folds.min_pixels`) are sorted and shuffled
   once with ``np.random.default_rng([seed, 2**64])``; episode ``i`` takes class
   ``order[i % n_classes]``. Classes are thus cycled through evenly, not sampled.
2. **Query and supports.** With ``rng = np.random.default_rng([seed, i])``, the query is
   ``pool[rng.integers(len(pool))]`` from the class's sorted pool of images, then ``shots``
   distinct supports are drawn with ``rng.choice(..., replace=False)`` from the pool without
   the query.

Nothing depends on earlier episodes, access order, worker count or the machine, and nothing
is reshuffled between runs: the same seed gives the same episodes.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Iterator
from typing import Protocol, TypedDict

import numpy as np

from dinoseg.data.folds import DEFAULT_MIN_AREA
from dinoseg.io import InputError

log = logging.getLogger(__name__)

#: Entropy word that keeps the class-order stream apart from every episode stream ``[seed, i]``.
CLASS_ORDER_STREAM = 2**64


class Episode(TypedDict):
    """One episode; masks use 1 = class, 0 = background, 255 = ignore.

    Keys:
        query_image: (H, W, 3) uint8.
        query_mask: (H, W) uint8.
        support_images: K arrays (Hk, Wk, 3) uint8.
        support_masks: K arrays (Hk, Wk) uint8.
        class_id: the episode's class.
        query_name, support_names: dataset stems of the images.
    """

    query_image: np.ndarray
    query_mask: np.ndarray
    support_images: list[np.ndarray]
    support_masks: list[np.ndarray]
    class_id: int
    query_name: str
    support_names: list[str]


class EpisodeSource(Protocol):
    """What the sampler needs from a dataset (FolderDataset, BinaryClassDataset)."""

    @property
    def class_ids(self) -> tuple[int, ...]: ...

    def images_with_class(self, class_id: int, min_area: float = ...) -> list[str]: ...

    def load_binary(self, stem: str, class_id: int) -> tuple[np.ndarray, np.ndarray]: ...


def _check_counts(shots: int, n_episodes: int, seed: int) -> None:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise InputError(f"shots={shots!r}: give a whole number of support images, at least 1")
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise InputError(f"n_episodes={n_episodes!r}: give a whole number, at least 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed={seed!r}: give a non-negative integer")


class EpisodeSampler:
    """A fixed, indexable list of ``n_episodes`` episodes.

    Args:
        dataset: an :class:`EpisodeSource`.
        classes: episode classes (e.g. a fold's novel classes); ``None`` = all of the dataset's.
        shots: K, support images per episode.
        n_episodes: length of the sampler (1000 in HSNet's test protocol).
        seed: the only source of randomness (see module docstring).
        min_area: fraction of an image a class must cover to serve as query or support.
    """

    def __init__(
        self,
        dataset: EpisodeSource,
        classes: Iterable[int] | None = None,
        shots: int = 1,
        n_episodes: int = 1000,
        seed: int = 0,
        min_area: float = DEFAULT_MIN_AREA,
    ):
        _check_counts(shots, n_episodes, seed)
        self.dataset = dataset
        self.shots, self.n_episodes, self.seed, self.min_area = shots, n_episodes, seed, min_area
        wanted = sorted({int(c) for c in (dataset.class_ids if classes is None else classes)})
        unknown = sorted(set(wanted) - set(dataset.class_ids))
        if unknown:
            raise InputError(
                f"classes {unknown} cannot be episode classes of this dataset "
                f"(they are unknown, background or ignore); use some of {list(dataset.class_ids)}"
            )
        pools = {c: dataset.images_with_class(c, min_area) for c in wanted}
        self.skipped = {c: len(p) for c, p in pools.items() if len(p) < shots + 1}
        if self.skipped:
            log.warning(
                "classes skipped, fewer than %d images cover %.2f%% of the image: %s",
                shots + 1, 100 * min_area, self.skipped,
            )  # fmt: skip
        self._pools = {c: p for c, p in pools.items() if c not in self.skipped}
        if not self._pools:
            raise InputError(
                f"no class has {shots + 1} images (1 query + {shots} supports) where it covers "
                f"at least {100 * min_area:.2f}% of the image; lower shots or min_area, or add data"
            )
        eligible = sorted(self._pools)
        order = np.random.default_rng([seed, CLASS_ORDER_STREAM]).permutation(len(eligible))
        self.class_order: tuple[int, ...] = tuple(eligible[j] for j in order)

    def __len__(self) -> int:
        return self.n_episodes

    def _index(self, i: int) -> int:
        i = operator.index(i)
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range for {self.n_episodes} episodes")
        return i % self.n_episodes

    def pool(self, class_id: int) -> list[str]:
        """Sorted stems where ``class_id`` is present (query and support candidates)."""
        return list(self._pools[class_id])

    def episode_ids(self, i: int) -> tuple[int, str, list[str]]:
        """``(class_id, query_stem, support_stems)`` of episode ``i``, without reading images."""
        i = self._index(i)
        class_id = self.class_order[i % len(self.class_order)]
        pool = self._pools[class_id]
        rng = np.random.default_rng([self.seed, i])
        q = int(rng.integers(len(pool)))
        others = pool[:q] + pool[q + 1 :]
        picks = rng.choice(len(others), size=self.shots, replace=False)
        return class_id, pool[q], [others[int(j)] for j in picks]

    def __getitem__(self, i: int) -> Episode:
        class_id, query, supports = self.episode_ids(i)
        q_image, q_mask = self.dataset.load_binary(query, class_id)
        loaded = [self.dataset.load_binary(s, class_id) for s in supports]
        return Episode(
            query_image=q_image,
            query_mask=q_mask,
            support_images=[img for img, _ in loaded],
            support_masks=[m for _, m in loaded],
            class_id=class_id,
            query_name=query,
            support_names=supports,
        )

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(self.n_episodes))
