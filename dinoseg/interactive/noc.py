"""The interactive-segmentation protocol: NoC@IoU with clicks placed automatically.

The standard protocol (used since Xu et al. 2016, "Deep Interactive Object Selection", and by
RITM / f-BRS): a simulated annotator places the first click at the object's interior point
farthest from its boundary; each next click goes to the centre (maximum of the distance
transform) of the largest error region of the current mask — positive when that region is a
false negative, negative when it is a false positive. ``NoC@t`` is the number of clicks after
which the mask first reaches IoU ``t`` (``max_clicks`` when it never does, and the object counts
as a failure). Ignored pixels (void, VOC's outline band) count nowhere: no error, no click.

Brushing from scratch (:func:`brush_trace`) follows the same rule with a brush instead of a
model: each dab paints (on a false negative) or erases (on a false positive) a disk centred at
the largest error region's centre, of radius ``min(radius, distance to that region's edge -
1/2)`` — the annotator shrinks the brush so that a dab never creates a new error, but never
enlarges it beyond ``radius``. One dab counts as one click (a drag stroke, which lays many
dabs, counts as many: this model favours brushing in its choice of size and place, and
disfavours it in counting strokes as dabs). Correcting a pre-annotation with the brush is the
same loop started from that mask (``brush_trace(..., start=mask)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dinoseg.interactive.prompts import Click


@dataclass(frozen=True)
class Target:
    """One object to segment: ``mask`` (H, W) bool and ``valid`` (H, W) bool (False = ignored)."""

    mask: np.ndarray
    valid: np.ndarray


def iou(pred: np.ndarray, target: Target) -> float:
    """IoU of a (H, W) bool prediction with the target over its valid pixels (1 when both empty)."""
    p, g = pred & target.valid, target.mask & target.valid
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def _inner_distance(region: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each region pixel to the nearest pixel outside it; the image
    border counts as outside (the region is padded by one background pixel)."""
    import cv2

    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def next_click(pred: np.ndarray, target: Target) -> tuple[Click, float] | None:
    """The protocol's next click for prediction ``pred`` (H, W) bool, and the error region's
    inscribed radius (px); ``None`` when there is no error left."""
    fn = target.mask & ~pred & target.valid
    fp = pred & ~target.mask & target.valid
    best: tuple[Click, float] | None = None
    for region, positive in ((fn, True), (fp, False)):
        if not region.any():
            continue
        dist = _inner_distance(region)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        radius = float(dist[y, x])
        if best is None or radius > best[1]:
            best = (Click(float(x) + 0.5, float(y) + 0.5, positive), radius)
    return best


Segmenter = Callable[[Sequence[Click]], np.ndarray]


def click_trace(segment: Segmenter, target: Target, max_clicks: int = 20) -> list[float]:
    """IoU after each simulated click (``max_clicks`` values; stops early once IoU is 1).

    Args:
        segment: clicks so far -> (H, W) bool mask (an interactive segmenter on one image).
        target: the object.
    """
    clicks: list[Click] = []
    pred = np.zeros_like(target.mask)
    ious: list[float] = []
    for _ in range(max_clicks):
        found = next_click(pred, target)
        if found is None:
            break
        clicks.append(found[0])
        pred = segment(clicks)
        ious.append(iou(pred, target))
    return ious


def _disk(shape: tuple[int, int], click: Click, radius: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    return (yy + 0.5 - click.y) ** 2 + (xx + 0.5 - click.x) ** 2 <= radius**2


def brush_dab(pred: np.ndarray, target: Target, radius: float) -> tuple[np.ndarray, int] | None:
    """One brush dab on (H, W) bool ``pred`` (see the module docstring): the (H, W) bool mask
    after it and the pixels under the brush; ``None`` when there is no error left."""
    found = next_click(pred, target)
    if found is None:
        return None
    click, inner = found
    disk = _disk(pred.shape, click, max(0.5, min(radius, inner - 0.5)))  # inside the region
    return (pred | disk if click.positive else pred & ~disk), int(np.count_nonzero(disk))


def brush_trace(target: Target, radius: float, max_dabs: int = 20,
                start: np.ndarray | None = None) -> list[float]:  # fmt: skip
    """IoU after each brush dab, brushing from ``start`` (H, W) bool (default: an empty mask)."""
    pred = np.zeros_like(target.mask) if start is None else start.copy()
    ious: list[float] = []
    for _ in range(max_dabs):
        dab = brush_dab(pred, target, radius)
        if dab is None:
            break
        pred = dab[0]
        ious.append(iou(pred, target))
    return ious


def clicks_to_reach(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """NoC: the 1-based index of the first IoU >= ``threshold``; ``max_clicks`` if none is."""
    for i, value in enumerate(ious[:max_clicks]):
        if value >= threshold:
            return i + 1
    return max_clicks


def reached(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> bool:
    """Whether the trace reaches ``threshold`` within ``max_clicks``."""
    return any(v >= threshold for v in ious[:max_clicks])
