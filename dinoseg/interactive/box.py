"""A rectangle to a mask: the packaged LiteMedSAM's box prompt, and DINOv2 inside vs around it.

LiteMedSAM was trained on box prompts only (point prompts give it empty masks), so a
rectangle is where the packaged decoder can help. Mean IoU of one tight box on the tuning
objects (50 CamVid train / 50 VOC-subset objects outside the benchmark's split):
LiteMedSAM 0.661 / 0.628, DINOv2 0.598 / 0.715, their union 0.737 / 0.745 (intersection
0.518 / 0.593, LiteMedSAM when it agrees with DINOv2 at IoU >= 0.7 else DINOv2 0.582 / 0.700).
The engine uses the union; bench/interactive_noc.py measures the routes on its objects.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.interactive.features import PatchFeatures
from dinoseg.interactive.prompts import Box
from dinoseg.interactive.refine import snap_to_edges
from dinoseg.teachers import SamTeacher


def box_pixels(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels whose centres lie in ``box``."""
    h, w = shape
    ys = np.arange(h)[:, None] + 0.5
    xs = np.arange(w)[None, :] + 0.5
    return (ys >= box.y0) & (ys <= box.y1) & (xs >= box.x0) & (xs <= box.x1)


def _grid_box(features: PatchFeatures, box: Box, shrink: float) -> np.ndarray:
    """(gh, gw) bool: patches whose centres lie in ``box`` shrunk about its centre by
    ``shrink`` (at least the centre patch)."""
    (h, w), (rh, rw) = features.geometry.orig, features.geometry.resized
    _, gh, gw = features.feats.shape
    p = features.patch
    cy = (np.arange(gh)[:, None] + 0.5) * p * h / rh
    cx = (np.arange(gw)[None, :] + 0.5) * p * w / rw
    mx, my = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    hx, hy = shrink * (box.x1 - box.x0) / 2, shrink * (box.y1 - box.y0) / 2
    inside = (np.abs(cx - mx) <= hx) & (np.abs(cy - my) <= hy)
    if not inside.any():
        inside[min(gh - 1, int(my * rh / h / p)), min(gw - 1, int(mx * rw / w / p))] = True
    return inside


def _mean_unit(features: PatchFeatures, cells: np.ndarray) -> Tensor:
    v = features.feats[:, torch.from_numpy(cells)].mean(dim=1)
    return F.normalize(v, dim=0)


def dino_box_mask(image: np.ndarray, features: PatchFeatures, box: Box) -> np.ndarray:
    """(H, W) bool: pixels of the box closer to its inner half's mean feature than to the mean
    feature of a ring around it, outline snapped to image edges, largest part kept."""
    h, w = image.shape[:2]
    inner = _mean_unit(features, _grid_box(features, box, 0.5))
    around = _grid_box(features, _grow(box, 1.5, (h, w)), 1.0) & ~_grid_box(features, box, 1.0)
    if not around.any():  # the box covers the image: its border is the "around"
        around = ~_grid_box(features, box, 0.8)
    outer = _mean_unit(features, around) if around.any() else -inner
    score = features.similarity(inner) - features.similarity(outer)
    coarse = (score > 0) & box_pixels(box, (h, w))
    mask = snap_to_edges(image, coarse, max(1, round(features.patch_px)), [])
    return _largest(mask & box_pixels(box, (h, w)))


def _grow(box: Box, factor: float, shape: tuple[int, int]) -> Box:
    h, w = shape
    mx, my = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    hx, hy = factor * (box.x1 - box.x0) / 2, factor * (box.y1 - box.y0) / 2
    return Box(max(0.0, mx - hx), max(0.0, my - hy), min(float(w), mx + hx), min(float(h), my + hy))


def _largest(mask: np.ndarray) -> np.ndarray:
    import cv2

    n, comps, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    return comps == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


@torch.inference_mode()
def sam_embedding(sam: SamTeacher, image: np.ndarray) -> Tensor:
    """(1, C, h, w) image embedding of an (H, W, 3) uint8 image (the expensive step)."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return sam.embed(sam.preprocess(x))


@torch.inference_mode()
def sam_box_mask(
    sam: SamTeacher, embedding: Tensor, box: Box, shape: tuple[int, int]
) -> np.ndarray:
    """(H, W) bool mask of the SAM-family decoder for one box on an image of ``shape``."""
    xyxy = torch.tensor([[box.x0, box.y0, box.x1, box.y1]], dtype=torch.float32)
    logits, _ = sam.decode(embedding, boxes=sam.to_input_coords(xyxy, shape))
    mask = (sam.postprocess_masks(logits, shape)[0, 0] > 0).numpy()
    return mask & box_pixels(_pad(box, shape), shape)


def _pad(box: Box, shape: tuple[int, int], px: float = 2.0) -> Box:
    h, w = shape
    return Box(max(0.0, box.x0 - px), max(0.0, box.y0 - px), min(float(w), box.x1 + px),
               min(float(h), box.y1 + px))  # fmt: skip
