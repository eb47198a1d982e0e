"""Pixel-level steps of click-to-mask: keep what the clicks touch, snap outlines to the image.

DINOv2 decides at the patch grid (a 14 px patch is ~13 px of a 480 px-wide image at the
518 px working size): even a perfect patch-level mask reaches IoU 0.85 on only 65 % of the
CamVid tuning objects. :func:`snap_to_edges` moves the outline to image edges with a
marker-based watershed in a band of about one patch around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from dinoseg.interactive.prompts import Click


def keep_seeded(
    mask: np.ndarray, clicks: Sequence[Click], seeds: np.ndarray | None = None
) -> np.ndarray:
    """The 8-connected parts of a (H, W) bool mask that hold a positive click or overlap the
    (H, W) bool ``seeds``; (H, W) bool."""
    n, comps = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    keep = {int(comps[c.pixel(mask.shape)]) for c in clicks if c.positive}
    if seeds is not None:
        keep |= {int(v) for v in np.unique(comps[seeds])}
    keep -= {0}
    if not keep:
        return np.zeros_like(mask, dtype=bool)
    return np.isin(comps, sorted(keep))


def inner_distance(mask: np.ndarray) -> np.ndarray:
    """(H, W) float32: each pixel's distance (px) to the nearest pixel outside ``mask``; the
    image border counts as outside."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


def snap_to_edges(
    image: np.ndarray, mask: np.ndarray, band: int, clicks: Sequence[Click], click_radius: int = 3
) -> np.ndarray:
    """Re-draw the outline of ``mask`` along image edges.

    Pixels deeper than ``band`` px inside the mask seed the object, pixels farther than ``band``
    px outside seed the background, and a disk of ``click_radius`` px around each click seeds
    its side; OpenCV's watershed floods the band between them over the colour gradient.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) bool coarse mask.
        band: half width (px) of the band the outline may move in.

    Returns:
        (H, W) bool mask.
    """
    if not mask.any():
        return mask
    markers = np.zeros(mask.shape, np.int32)
    markers[inner_distance(~mask) > band] = 1
    markers[inner_distance(mask) > band] = 2
    h, w = mask.shape
    for c in clicks:
        row, col = c.pixel((h, w))
        cv2.circle(markers, (col, row), click_radius, 2 if c.positive else 1, -1)
    flooded = cv2.watershed(np.ascontiguousarray(image[..., ::-1]), markers)
    return (flooded == 2) | ((flooded == -1) & mask)  # -1: watershed lines keep the coarse side
