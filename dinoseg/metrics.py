"""Few-shot segmentation metrics, accumulated over episodes the HSNet way.

Masks use the episode coding: target 1 = class, 0 = background, 255 = ignore; ignored pixels
count nowhere. Per class, the confusion counts (TP, FP, FN, TN) are summed over all episodes of
that class before any ratio is taken:

- **IoU** of class c = sum TP / sum (TP + FP + FN); **mIoU** = mean over the classes seen.
- **FB-IoU** = mean of foreground IoU (TP, FP, FN summed over all episodes of all classes) and
  background IoU (TN / (TN + FP + FN), likewise summed).
- **Pixel accuracy** = (TP + TN) / valid pixels.
- **Boundary F1**: boundary pixels are mask pixels with an 8-neighbour outside the mask (the
  image border is not a boundary). A predicted boundary pixel is matched when a ground-truth
  boundary pixel lies within ``boundary_tolerance`` px (Chebyshev distance, i.e. a square
  dilation), and vice versa; matched / total counts are summed per class, giving precision,
  recall and F1 per class; the reported value is the mean over classes. Predicted boundary
  pixels on ignored pixels are not counted but may still match ground-truth ones. With no
  countable predicted boundary (empty prediction, or all of it on ignored pixels), precision
  is undefined and F1 = recall; with no ground-truth boundary, F1 = precision.
- **Safety rates** for designated classes: FNR = FN / (TP + FN) (share of the class's pixels
  missed), FPR = FP / (FP + TN) (share of background pixels marked as the class).

A ratio whose denominator is 0 (e.g. a class whose episodes were all ignore, or an empty
prediction on an empty target) is undefined: reported as ``None`` and left out of means.
Every rate in :meth:`SegmentationMeter.summary` is in percent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from dinoseg.io import InputError

IGNORE = 255
# Columns of the per-class count vector.
TP, FP, FN, TN, PRED_B_MATCH, PRED_B, GT_B_MATCH, GT_B = range(8)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (2r+1)x(2r+1) binary dilation of a (H, W) bool mask; outside the image is False."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for s in range(1, radius + 1):
            if axis == 0:
                out[s:] |= src[:-s]
                out[:-s] |= src[s:]
            else:
                out[:, s:] |= src[:, :-s]
                out[:, :-s] |= src[:, s:]
    return out


def boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of ``mask`` with an 8-neighbour outside it (image border excluded)."""
    return mask & dilate(~mask, 1)


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(100.0 * num / den)


def _f1(c: np.ndarray) -> float | None:
    """Boundary F1 in percent; a precision (recall) with no countable predicted (ground-truth)
    boundary pixel is undefined and F1 falls back on the other one."""
    p = c[PRED_B_MATCH] / c[PRED_B] if c[PRED_B] else None
    r = c[GT_B_MATCH] / c[GT_B] if c[GT_B] else None
    if p is None:
        return None if r is None else float(100.0 * r)
    if r is None:
        return float(100.0 * p)
    return 0.0 if p + r == 0 else float(100.0 * 2 * p * r / (p + r))


def _mean(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim != 2 or pred.shape != target.shape:
        raise InputError(
            f"prediction {pred.shape} and target {target.shape} must be the same (H, W) shape"
        )
    if pred.dtype != np.bool_:
        if not np.issubdtype(pred.dtype, np.integer) or ((pred != 0) & (pred != 1)).any():
            raise InputError(f"prediction must be a bool or 0/1 mask, got dtype {pred.dtype}")
        pred = pred.astype(bool)
    if ((target != 0) & (target != 1) & (target != IGNORE)).any():
        raise InputError("target must hold 0 (background), 1 (class) or 255 (ignore) only")
    return pred, target


class SegmentationMeter:
    """Accumulates episode results; see the module docstring for the definitions.

    Args:
        class_names: class id -> name, used in the summary.
        safety_classes: classes whose false-negative and false-positive rates are reported.
        boundary_tolerance: boundary F1 tolerance in pixels (>= 0).
    """

    def __init__(
        self,
        *,
        class_names: Mapping[int, str] | None = None,
        safety_classes: Iterable[int] = (),
        boundary_tolerance: int = 2,
    ):
        if boundary_tolerance < 0:
            raise InputError(f"boundary_tolerance={boundary_tolerance}: give 0 or more pixels")
        self.class_names = dict(class_names or {})
        self.safety_classes = tuple(sorted({int(c) for c in safety_classes}))
        self.boundary_tolerance = int(boundary_tolerance)
        self.counts: dict[int, np.ndarray] = {}
        self.episodes: dict[int, int] = {}

    def update(self, pred: np.ndarray, target: np.ndarray, class_id: int) -> None:
        """Add one episode.

        Args:
            pred: (H, W) bool predicted class mask (0/1 integers accepted).
            target: (H, W) uint8 ground truth, 1 = class, 0 = background, 255 = ignore.
            class_id: the episode's class.
        """
        pred, target = _check(pred, target)
        valid = target != IGNORE
        gt = target == 1
        p = pred & valid
        c = np.zeros(8, dtype=np.int64)
        c[TP] = np.count_nonzero(p & gt)
        c[FP] = np.count_nonzero(p) - c[TP]
        c[FN] = np.count_nonzero(gt) - c[TP]
        c[TN] = np.count_nonzero(valid) - c[TP] - c[FP] - c[FN]
        pb, gb = boundary(pred), boundary(gt)
        tol = self.boundary_tolerance
        pb_valid = pb & valid
        c[PRED_B] = np.count_nonzero(pb_valid)
        c[PRED_B_MATCH] = np.count_nonzero(pb_valid & dilate(gb, tol))
        c[GT_B] = np.count_nonzero(gb)
        c[GT_B_MATCH] = np.count_nonzero(gb & dilate(pb, tol))
        key = int(class_id)
        self.counts[key] = self.counts.get(key, np.zeros(8, dtype=np.int64)) + c
        self.episodes[key] = self.episodes.get(key, 0) + 1

    def merge(self, other: SegmentationMeter) -> None:
        """Add another meter's episodes (e.g. from another worker)."""
        if other.boundary_tolerance != self.boundary_tolerance:
            raise ValueError("cannot merge meters with different boundary tolerances")
        for key, c in other.counts.items():
            self.counts[key] = self.counts.get(key, np.zeros(8, dtype=np.int64)) + c
            self.episodes[key] = self.episodes.get(key, 0) + other.episodes[key]

    def class_iou(self, class_id: int) -> float | None:
        """Foreground IoU of one class in percent, ``None`` if undefined."""
        c = self.counts.get(class_id)
        return None if c is None else _ratio(c[TP], c[TP] + c[FP] + c[FN])

    def _per_class(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key in sorted(self.counts):
            c = self.counts[key]
            out[str(key)] = {
                "name": self.class_names.get(key, str(key)),
                "episodes": self.episodes[key],
                "iou": self.class_iou(key),
                "boundary_f1": _f1(c),
            }
        return out

    def _safety(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key in self.safety_classes:
            c = self.counts.get(key, np.zeros(8, dtype=np.int64))
            out[str(key)] = {
                "name": self.class_names.get(key, str(key)),
                "episodes": self.episodes.get(key, 0),
                "fnr": _ratio(c[FN], c[TP] + c[FN]),
                "fpr": _ratio(c[FP], c[FP] + c[TN]),
                "fg_pixels": int(c[TP] + c[FN]),
                "bg_pixels": int(c[FP] + c[TN]),
            }
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable results; rates in percent, ``None`` where undefined."""
        total = sum(self.counts.values(), np.zeros(8, dtype=np.int64))
        per_class = self._per_class()
        fg_iou = _ratio(total[TP], total[TP] + total[FP] + total[FN])
        bg_iou = _ratio(total[TN], total[TN] + total[FP] + total[FN])
        return {
            "miou": _mean(v["iou"] for v in per_class.values()),
            "fb_iou": _mean([fg_iou, bg_iou]),
            "fg_iou": fg_iou,
            "bg_iou": bg_iou,
            "pixel_accuracy": _ratio(total[TP] + total[TN], total[:4].sum()),
            "boundary_f1": _mean(v["boundary_f1"] for v in per_class.values()),
            "boundary_tolerance_px": self.boundary_tolerance,
            "episodes": sum(self.episodes.values()),
            "classes": len(per_class),
            "per_class": per_class,
            "safety": self._safety(),
        }
