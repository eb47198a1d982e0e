"""Fold definitions for few-shot segmentation: which classes are novel (tested) and base (trained).

Benchmarks (class ids are 0-based, in each dataset's ``classes.json`` order):

- **PASCAL-5i** (4 folds over the 20 VOC classes, aeroplane = 0 ... tvmonitor = 19): fold ``f`` has
  novel classes ``5f .. 5f+4`` (contiguous, as in OSLSM / HSNet). Background (20 in our
  ``pascal-voc-subset``) is never an episode class.
- **COCO-20i** (4 folds over the 80 COCO categories in annotation-file order): fold ``f`` has novel
  classes ``f, f+4, f+8, ..., f+76`` (interleaved, as in HSNet's ``class_ids_val``).
- **Generic folder datasets**: :func:`folder_folds` sorts the episode-eligible class ids (ignore /
  void and background excluded) and deals them round-robin into ``n_folds`` folds, so fold ``f``
  holds ``ids[f], ids[f + n], ids[f + 2n], ...``. Same classes in -> same folds out, on any machine.
- **CamVid-3i** (3 folds over CamVid's 11 classes, void = 11 excluded) is that rule written out in
  :data:`CAMVID_FOLDS`: every fold mixes large "stuff" (sky/road, building/pavement, tree) with
  small or thin objects (sign, pedestrian / fence, bicyclist / pole, car).

:func:`dataset_fold` picks the rule from a dataset's class names (:func:`benchmark_of`): PASCAL-5i
or CamVid-3i when the names are those, else :func:`folder_folds` over its episode classes.

Minimum-area rule: a class is *present* in an image only if it covers at least
``min_pixels(min_area, H * W)`` pixels, ``min_area`` being a fraction of the image area
(default :data:`DEFAULT_MIN_AREA` = 0.5 %). The episode sampler (queries and supports) and training
use the same rule, so a 3-pixel sliver never becomes a query or a support.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from dinoseg.io import InputError

#: Default minimum area of a class in an image, as a fraction of the image (0.5 %).
DEFAULT_MIN_AREA = 0.005
#: Folds of a generic folder dataset unless told otherwise.
DEFAULT_FOLDER_FOLDS = 4

PASCAL_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
N_COCO_CLASSES = 80

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
#: CamVid novel classes per fold (= ``folder_folds(range(11), 3)``):
#: fold 0 sky, road, sign_symbol, pedestrian; fold 1 building, pavement, fence, bicyclist;
#: fold 2 pole, tree, car.
CAMVID_FOLDS: tuple[tuple[int, ...], ...] = ((0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8))


@dataclass(frozen=True)
class Fold:
    """One fold of a benchmark.

    Attributes:
        benchmark: ``"pascal-5i"``, ``"coco-20i"``, ``"camvid-3i"`` or ``"folder"``.
        index: fold number, ``0 <= index < n_folds``.
        n_folds: number of folds of the benchmark.
        classes: every class that may be an episode class, sorted.
        novel: classes held out for testing (episodes at evaluation), sorted.
    """

    benchmark: str
    index: int
    n_folds: int
    classes: tuple[int, ...]
    novel: tuple[int, ...]

    @property
    def base(self) -> tuple[int, ...]:
        """Training classes: every class that is not novel, sorted."""
        novel = set(self.novel)
        return tuple(c for c in self.classes if c not in novel)


def novel_classes(fold: Fold) -> tuple[int, ...]:
    """Classes tested in ``fold`` (never seen in training)."""
    return fold.novel


def base_classes(fold: Fold) -> tuple[int, ...]:
    """Classes trained on in ``fold``."""
    return fold.base


def _check_index(benchmark: str, index: int, n_folds: int) -> None:
    if not 0 <= index < n_folds:
        raise InputError(f"{benchmark}: fold {index} does not exist; use 0 .. {n_folds - 1}")


def pascal_fold(index: int) -> Fold:
    """PASCAL-5i fold ``index``: novel classes ``5 * index .. 5 * index + 4``."""
    _check_index("pascal-5i", index, 4)
    novel = tuple(range(5 * index, 5 * index + 5))
    return Fold("pascal-5i", index, 4, tuple(range(len(PASCAL_CLASSES))), novel)


def coco_fold(index: int) -> Fold:
    """COCO-20i fold ``index``: novel classes ``index, index + 4, ..., index + 76``."""
    _check_index("coco-20i", index, 4)
    novel = tuple(range(index, N_COCO_CLASSES, 4))
    return Fold("coco-20i", index, 4, tuple(range(N_COCO_CLASSES)), novel)


def camvid_fold(index: int) -> Fold:
    """CamVid-3i fold ``index`` (see :data:`CAMVID_FOLDS`)."""
    _check_index("camvid-3i", index, len(CAMVID_FOLDS))
    classes = tuple(range(len(CAMVID_CLASSES)))
    return Fold("camvid-3i", index, len(CAMVID_FOLDS), classes, CAMVID_FOLDS[index])


def folder_folds(class_ids: Iterable[int], n_folds: int) -> list[Fold]:
    """Deterministic round-robin split of a folder dataset's classes into ``n_folds`` folds.

    Args:
        class_ids: episode-eligible classes (exclude ignore / void and background), any order.
        n_folds: number of folds, ``2 <= n_folds <= len(class_ids)``.

    Returns:
        ``n_folds`` folds; fold ``f`` is novel on ``sorted(class_ids)[f::n_folds]``.
    """
    ids = tuple(sorted({int(c) for c in class_ids}))
    if not 2 <= n_folds <= len(ids):
        raise InputError(
            f"cannot split {len(ids)} classes into {n_folds} folds; "
            f"use between 2 and {len(ids)} folds (every fold needs a novel class and base classes)"
        )
    return [Fold("folder", f, n_folds, ids, ids[f::n_folds]) for f in range(n_folds)]


def get_fold(benchmark: str, index: int) -> Fold:
    """Look a fold up by benchmark name: ``pascal`` / ``pascal-5i``, ``coco`` / ``coco-20i``,
    ``camvid`` / ``camvid-3i``. Generic datasets use :func:`folder_folds`."""
    builders = {"pascal": pascal_fold, "coco": coco_fold, "camvid": camvid_fold}
    key = benchmark.lower().split("-")[0]
    if key not in builders:
        raise InputError(
            f"unknown benchmark {benchmark!r}; use one of {sorted(builders)} "
            "or folder_folds(class_ids, n_folds) for your own dataset"
        )
    return builders[key](index)


def benchmark_of(class_names: Mapping[int, str]) -> str | None:
    """``"pascal"``, ``"camvid"`` or ``"coco"`` when the class names are that benchmark's,
    else ``None`` (COCO: the 80 categories of a COCO instances file, person first)."""
    for name, known in (("pascal", PASCAL_CLASSES), ("camvid", CAMVID_CLASSES)):
        if all(class_names.get(i) == n for i, n in enumerate(known)):
            return name
    coco = len(class_names) == N_COCO_CLASSES and class_names.get(0) == "person"
    if coco and class_names.get(79):
        return "coco"
    return None


def dataset_fold(
    class_names: Mapping[int, str],
    episode_classes: Iterable[int],
    index: int,
    *,
    n_folds: int = DEFAULT_FOLDER_FOLDS,
) -> Fold:
    """Fold ``index`` of a dataset: PASCAL-5i or CamVid-3i when its class names are those,
    else :func:`folder_folds` over its episode classes (``n_folds`` folds)."""
    benchmark = benchmark_of(class_names)
    if benchmark is not None:
        return get_fold(benchmark, index)
    folds = folder_folds(episode_classes, n_folds)
    if not 0 <= index < len(folds):
        raise InputError(f"folder: fold {index} does not exist; use 0 .. {len(folds) - 1}")
    return folds[index]


def min_pixels(min_area: float, n_pixels: int) -> int:
    """Smallest pixel count for a class to be present in an image of ``n_pixels`` pixels.

    Args:
        min_area: fraction of the image, ``0 <= min_area <= 1``; ``0`` means "any pixel".

    Returns:
        ``max(1, ceil(min_area * n_pixels))``.
    """
    if not 0.0 <= min_area <= 1.0:
        raise InputError(
            f"min_area={min_area} is not a fraction of the image; give a value in [0, 1] "
            f"(default {DEFAULT_MIN_AREA} = 0.5 %)"
        )
    return max(1, math.ceil(min_area * n_pixels - 1e-9))


def is_present(pixel_count: int, n_pixels: int, min_area: float = DEFAULT_MIN_AREA) -> bool:
    """Whether a class covering ``pixel_count`` of ``n_pixels`` pixels counts as present."""
    return pixel_count >= min_pixels(min_area, n_pixels)


def remap_for_training(
    label_map: np.ndarray, novel: Iterable[int], ignore_index: int | None, *, background: int = -1
) -> np.ndarray:
    """Hide novel classes for training: their pixels become background (not ignore), as in HSNet.

    Args:
        label_map: (H, W) integer class indices.
        novel: the fold's novel classes.
        ignore_index: label left untouched (may be ``None``); must not be a novel class.
        background: value written over novel pixels: the dataset's background class
            (20 for ``pascal-voc-subset``) or ``-1`` ("no class") where there is none (CamVid).

    Returns:
        (H, W) int64 copy of ``label_map`` with novel pixels set to ``background``.
    """
    novel_ids = np.array(sorted({int(c) for c in novel}), dtype=np.int64)
    if ignore_index is not None and ignore_index in novel_ids:
        raise InputError(f"ignore index {ignore_index} cannot be a novel class")
    if background in novel_ids:
        raise InputError(f"background value {background} is a novel class; pick another value")
    out = np.asarray(label_map, dtype=np.int64).copy()
    out[np.isin(out, novel_ids)] = background
    return out
