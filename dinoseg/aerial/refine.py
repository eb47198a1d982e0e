"""SAM boundary refinement of any class map.

The map is visited in blocks of ``block`` px (the SAM-family model embeds each block once).
In a block, every 8-connected region of a class with at least ``min_area`` pixels (the
``max_regions`` largest; regions covering most of the block are left alone) becomes one prompt:
its bounding box plus one positive point at its most interior pixel. The decoder's mask is
kept only where it agrees with the coarse region: it must overlap it with IoU >=
``min_iou``, and then it may move the region's outline by at most ``band`` px (pixels within
``band`` of the coarse outline follow SAM; the rest of the map is untouched). Pixels a region
gives up take the label of the nearest pixel outside the region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dinoseg.aerial.categories import UNKNOWN
from dinoseg.aerial.postprocess import fill_from_nearest
from dinoseg.aerial.reader import ImageSource
from dinoseg.teachers import SamTeacher


@dataclass(frozen=True)
class RefineSettings:
    block: int = 512
    band: int = 8
    min_iou: float = 0.5
    min_area: int = 64
    max_regions: int = 32
    max_fraction: float = 0.5
    labels: tuple[int, ...] = ()  # classes refined (empty: all)


@dataclass
class Region:
    """One connected region: its class, mask in block coordinates, box XYXY and inner point."""

    label: int
    mask: np.ndarray
    box: tuple[int, int, int, int]
    point: tuple[int, int]


def find_regions(labels: np.ndarray, s: RefineSettings) -> list[Region]:
    """Regions of a block worth prompting, largest first (see the module docstring)."""
    from scipy import ndimage

    found: list[tuple[int, Region]] = []
    limit = s.max_fraction * labels.size
    for value in np.unique(labels):
        if value == UNKNOWN or (s.labels and value not in s.labels):
            continue
        comps, n = ndimage.label(labels == value, structure=np.ones((3, 3), bool))
        sizes = np.bincount(comps.ravel(), minlength=n + 1)
        for i, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None or not s.min_area <= sizes[i] <= limit:
                continue
            mask = comps == i
            inner = ndimage.distance_transform_edt(np.pad(mask[sl], 1))[1:-1, 1:-1]
            py, px = np.unravel_index(int(np.argmax(inner)), inner.shape)
            box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
            point = (sl[1].start + int(px), sl[0].start + int(py))
            found.append((int(sizes[i]), Region(int(value), mask, box, point)))
    found.sort(key=lambda t: -t[0])
    return [r for _, r in found[: s.max_regions]]


@torch.inference_mode()
def sam_masks(sam: SamTeacher, image: np.ndarray, regions: list[Region]) -> np.ndarray:
    """SAM's ``(N, H, W)`` bool masks for the regions' box + point prompts on ``image``."""
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    emb = sam.embed(sam.preprocess(x))
    boxes = torch.tensor([r.box for r in regions], dtype=torch.float32)
    points = torch.tensor([[r.point] for r in regions], dtype=torch.float32)
    logits, _ = sam.decode(
        emb.expand(len(regions), -1, -1, -1),
        boxes=sam.to_input_coords(boxes, (h, w)),
        points=sam.to_input_coords(points, (h, w)),
        point_labels=torch.ones(len(regions), 1),
    )
    return (sam.postprocess_masks(logits, (h, w))[:, 0] > 0).numpy()


def _band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px of the mask's outline (inside or outside)."""
    from scipy import ndimage

    outside = ~mask & (ndimage.distance_transform_edt(~mask) <= width)
    inside = mask & (ndimage.distance_transform_edt(mask) <= width)
    return outside | inside


def _window(region: Region, margin: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    x0, y0, x1, y1 = region.box
    return (
        slice(max(0, y0 - margin), min(shape[0], y1 + margin)),
        slice(max(0, x0 - margin), min(shape[1], x1 + margin)),
    )


def refine_block(labels: np.ndarray, image: np.ndarray, sam: SamTeacher, s: RefineSettings) -> int:
    """Refine one block in place; returns how many regions SAM changed."""
    regions = find_regions(labels, s)
    if not regions:
        return 0
    refined = sam_masks(sam, image, regions)
    changed = 0
    for region, new in zip(regions, refined, strict=True):
        inter = np.logical_and(new, region.mask).sum()
        union = np.logical_or(new, region.mask).sum()
        if union == 0 or inter / union < s.min_iou:
            continue
        win = _window(region, s.band + 1, labels.shape)
        old, sam_mask = region.mask[win], new[win]
        band = _band(old, s.band)
        grow = band & sam_mask & ~old
        shrink = band & old & ~sam_mask
        view = labels[win]
        if shrink.any():  # pixels given up take the nearest label outside the region
            view[shrink] = fill_from_nearest(view, old)[shrink]
        view[grow] = region.label
        changed += int(grow.any() or shrink.any())
    return changed


def refine_labels(
    source: ImageSource,
    labels: np.ndarray,
    sam: SamTeacher,
    settings: RefineSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Refine a whole ``(H, W)`` uint8 map in place, block by block; returns regions changed."""
    s = settings or RefineSettings()
    h, w = labels.shape
    blocks = [(y, x) for y in range(0, h, s.block) for x in range(0, w, s.block)]
    changed = 0
    for i, (y, x) in enumerate(blocks):
        y1, x1 = min(h, y + s.block), min(w, x + s.block)
        if min(y1 - y, x1 - x) >= 8:
            view = labels[y:y1, x:x1]
            changed += refine_block(view, source.read(y, x, y1, x1), sam, s)
        if progress is not None:
            progress(i + 1, len(blocks))
    return changed
