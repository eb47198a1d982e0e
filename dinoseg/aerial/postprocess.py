"""Post-processing shared by every method: small-segment removal and majority smoothing.

Both work in place on a ``(H, W)`` uint8 label map, block by block (``block`` px plus a halo)
so that memory stays bounded on very large maps; :data:`~dinoseg.aerial.categories.UNKNOWN`
counts as one more label.

- :func:`remove_small_segments`: 8-connected segments of one label smaller than ``min_area``
  pixels are handed to the nearest other label (Euclidean distance transform). A segment that
  reaches the edge of a block's halo (so may continue outside it) is kept.
- :func:`majority_smooth`: each pass gives every pixel the most frequent label of its 3x3
  neighbourhood (the current label wins ties).

scipy comes with the ``aerial`` extra (scikit-learn needs it); it is imported here lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

BLOCK = 1024


def _blocks(shape: tuple[int, int], block: int, halo: int) -> Iterator[tuple[slice, ...]]:
    """``(window_rows, window_cols, inner_rows, inner_cols)``: each block with its halo, and
    the block's place inside the window."""
    h, w = shape
    for y in range(0, h, block):
        for x in range(0, w, block):
            wy0, wx0 = max(0, y - halo), max(0, x - halo)
            wy1, wx1 = min(h, y + block + halo), min(w, x + block + halo)
            yield (
                slice(wy0, wy1),
                slice(wx0, wx1),
                slice(y - wy0, min(y + block, h) - wy0),
                slice(x - wx0, min(x + block, w) - wx0),
            )


def _by_blocks(
    labels: np.ndarray, fn: Callable[[np.ndarray, tuple[bool, bool, bool, bool]], np.ndarray],
    block: int, halo: int,
) -> None:
    h, w = labels.shape
    for wr, wc, ir, ic in _blocks(labels.shape, block, halo):
        window = np.array(labels[wr, wc])
        # which window sides are open (the image continues beyond them)
        open_sides = (wr.start > 0, wr.stop < h, wc.start > 0, wc.stop < w)
        labels[wr, wc][ir, ic] = fn(window, open_sides)[ir, ic]


def fill_from_nearest(labels: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """``labels`` with every ``holes`` pixel given the label of the nearest non-hole pixel."""
    from scipy import ndimage

    if not holes.any() or holes.all():
        return labels
    _, (iy, ix) = ndimage.distance_transform_edt(holes, return_indices=True)
    return labels[iy, ix]


def _remove_small(window: np.ndarray, min_area: int, open_sides: tuple[bool, ...]) -> np.ndarray:
    from scipy import ndimage

    holes = np.zeros(window.shape, bool)
    eight = np.ones((3, 3), bool)
    for value in np.unique(window):
        comps, n = ndimage.label(window == value, structure=eight)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel(), minlength=n + 1)
        small = sizes < min_area
        small[0] = False
        edges = [comps[0], comps[-1], comps[:, 0], comps[:, -1]]
        for side_open, edge in zip(open_sides, edges, strict=True):
            if side_open:
                small[np.unique(edge)] = False  # may continue outside the window
        holes |= small[comps]
    return fill_from_nearest(window, holes)


def remove_small_segments(labels: np.ndarray, min_area: int, *, block: int = BLOCK) -> None:
    """Hand segments under ``min_area`` pixels to their neighbours (in place)."""
    if min_area <= 1:
        return
    halo = max(32, 2 * int(np.ceil(np.sqrt(min_area))))
    _by_blocks(labels, lambda win, sides: _remove_small(win, min_area, sides), block, halo)


def _majority(window: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    values = np.unique(window)
    if len(values) < 2:
        return window
    for _ in range(iterations):
        best = np.full(window.shape, -1.0, np.float32)
        out = window.copy()
        for v in values:  # one label at a time: memory ~ a few window-sized arrays
            same = window == v
            votes = ndimage.uniform_filter(same.astype(np.float32), 3, mode="nearest")
            votes += 0.01 * same  # the current label wins ties
            better = votes > best
            out[better] = v
            np.maximum(best, votes, out=best)
        window = out
    return window


def majority_smooth(labels: np.ndarray, iterations: int, *, block: int = BLOCK) -> None:
    """``iterations`` passes of a 3x3 majority filter (in place)."""
    if iterations <= 0:
        return
    _by_blocks(labels, lambda win, _sides: _majority(win, iterations), block, iterations + 1)


def postprocess(
    labels: np.ndarray, *, min_area: int = 64, smooth_iterations: int = 1, block: int = BLOCK
) -> np.ndarray:
    """Small-segment removal then majority smoothing, in place; returns ``labels``."""
    remove_small_segments(labels, min_area, block=block)
    majority_smooth(labels, smooth_iterations, block=block)
    return labels
