"""Tiled inference for photos of any size: overlapping tiles, smooth blending, flat memory.

The image is cut into tiles of ``tile`` px overlapping by ``overlap`` px (the last tile of a
row or column is shifted back to end at the image border, so every tile has the same size;
an image smaller than ``tile`` along an axis is one tile along it). A method turns a batch of
tiles into per-pixel class scores; scores of overlapping tiles are averaged with weights
that ramp smoothly (raised cosine, :func:`ramp`) from ~0 at a tile's inner edge to 1 at
``overlap`` px inside it, so neighbouring tiles hand over without a seam. Image borders get
no ramp (no neighbour there). The weighted sum is divided by the sum of the weights, so the
blended score is a convex combination of the tiles' scores at every pixel.

Memory: tiles are scored ``batch`` at a time and added into a band of ``channels x tile x W``
float32 sums; a row of tiles done, its finished rows are handed to ``emit`` (e.g. turned into
uint8 labels, ``DECIDE_COLUMNS`` columns at a time) and only the rows shared with the next
row of tiles are kept. Memory is bounded by the tile batch and one band (linear in the image
width, independent of its height), not by the image area.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dinoseg.aerial.reader import ImageSource
from dinoseg.io import InputError

#: (B, th, tw, 3) uint8 tiles -> (B, C, th, tw) float32 scores (higher = more likely)
ScoreFn = Callable[[np.ndarray], np.ndarray]
#: called with (first row, (C, rows, W) blended scores) for each finished band
EmitFn = Callable[[int, np.ndarray], None]
ProgressFn = Callable[[int, int], None]
#: columns turned into labels at a time (bounds the temporaries of ``decide``)
DECIDE_COLUMNS = 2048


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px with ``overlap`` px overlap.

    The last tile ends at ``length``; a ``length <= tile`` gives ``[0]``.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return sorted({min(i * stride, length - tile) for i in range(n)})


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an ``(H, W)`` image lie.

    Attributes:
        shape: ``(H, W)`` of the image.
        size: ``(th, tw)`` of every tile (``min(tile, H)``, ``min(tile, W)``).
        ys, xs: tile start rows / columns.
        overlap: nominal overlap (px), the length of the blending ramp.
    """

    shape: tuple[int, int]
    size: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """All tiles as ``(y0, x0, y1, x1)``, row by row."""
        th, tw = self.size
        return [(y, x, y + th, x + tw) for y in self.ys for x in self.xs]


def plan_tiles(shape: tuple[int, int], tile: int, overlap: int) -> TileGrid:
    """Plan the tiles of an ``(H, W)`` image (see the module docstring)."""
    if tile < 28:
        raise InputError(f"tile size {tile} px is too small; use at least 28 px")
    if not 0 <= overlap < tile // 2 + 1:
        raise InputError(f"overlap {overlap} px must be between 0 and half the tile ({tile} px)")
    h, w = shape
    th, tw = min(tile, h), min(tile, w)
    ys = tuple(tile_starts(h, th, min(overlap, th // 2)))
    xs = tuple(tile_starts(w, tw, min(overlap, tw // 2)))
    return TileGrid((h, w), (th, tw), ys, xs, overlap)


def ramp(n: int, overlap: int, *, lead: bool, trail: bool) -> np.ndarray:
    """1-D blending weights of a tile of ``n`` px: raised-cosine ramps of ``overlap`` px at the
    ends that have a neighbour (``lead``: before it, ``trail``: after it), 1 elsewhere.

    Returns:
        (n,) float32 in (0, 1].
    """
    w = np.ones(n, np.float32)
    o = min(overlap, n // 2)
    if o <= 0:
        return w
    up = np.sin(0.5 * np.pi * (np.arange(o, dtype=np.float64) + 0.5) / o) ** 2
    if lead:
        w[:o] = up
    if trail:
        w[n - o :] = np.minimum(w[n - o :], up[::-1])
    return w


def tile_window(grid: TileGrid, y: int, x: int) -> np.ndarray:
    """(th, tw) float32 blending weights of the tile starting at ``(y, x)``."""
    th, tw = grid.size
    wy = ramp(th, grid.overlap, lead=y > 0, trail=y + th < grid.shape[0])
    wx = ramp(tw, grid.overlap, lead=x > 0, trail=x + tw < grid.shape[1])
    return wy[:, None] * wx[None, :]


def _accumulate_row(
    source: ImageSource,
    grid: TileGrid,
    y: int,
    score_fn: ScoreFn,
    batch: int,
    band: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add the weighted scores of one tile row (scored ``batch`` tiles at a time) to ``band``
    = ``(sums (C, th, W), weights (th, W))``, allocated on the first batch when None."""
    th, tw = grid.size
    for i in range(0, len(grid.xs), batch):
        xs = grid.xs[i : i + batch]
        tiles = np.stack([source.read(y, x, y + th, x + tw) for x in xs])
        scores = np.asarray(score_fn(tiles), np.float32)
        if scores.ndim != 4 or scores.shape[0] != len(xs) or scores.shape[2:] != (th, tw):
            raise ValueError(f"score function gave {scores.shape} for tiles {tiles.shape}")
        if band is None:
            band = (np.zeros((scores.shape[1], th, grid.shape[1]), np.float32),
                    np.zeros((th, grid.shape[1]), np.float32))
        for x, s in zip(xs, scores, strict=True):
            win = tile_window(grid, y, x)
            band[0][:, :, x : x + tw] += s * win
            band[1][:, x : x + tw] += win
    if band is None:
        raise RuntimeError("a tile row without tiles")
    return band


def blend_tiles(
    source: ImageSource,
    score_fn: ScoreFn,
    emit: EmitFn,
    *,
    tile: int,
    overlap: int,
    batch: int = 2,
    progress: ProgressFn | None = None,
) -> TileGrid:
    """Run ``score_fn`` over every tile and hand blended score bands to ``emit``.

    ``emit(y0, scores)`` receives ``(C, rows, W)`` float32 blended scores of image rows
    ``y0 : y0 + rows`` (a view, valid during the call); bands arrive top to bottom and cover
    the image exactly once.
    """
    grid = plan_tiles(source.shape, tile, overlap)
    th = grid.size[0]
    carry: tuple[np.ndarray, np.ndarray] | None = None  # rows shared with the next tile row
    done = 0
    for r, y in enumerate(grid.ys):
        band = None
        if carry is not None:
            rows = carry[1].shape[0]
            band = (np.zeros((carry[0].shape[0], th, grid.shape[1]), np.float32),
                    np.zeros((th, grid.shape[1]), np.float32))
            band[0][:, :rows], band[1][:rows] = carry
        acc, wsum = _accumulate_row(source, grid, y, score_fn, max(1, batch), band)
        nxt = grid.ys[r + 1] - y if r + 1 < len(grid.ys) else th
        carry = (acc[:, nxt:].copy(), wsum[nxt:].copy()) if nxt < th else None
        acc[:, :nxt] /= wsum[None, :nxt]
        emit(y, acc[:, :nxt])
        del acc, wsum  # one band alive at a time
        done += len(grid.xs)
        if progress is not None:
            progress(done, grid.count)
    return grid


def tiled_labels(
    source: ImageSource,
    score_fn: ScoreFn,
    decide: Callable[[np.ndarray], np.ndarray],
    *,
    tile: int,
    overlap: int,
    batch: int = 2,
    progress: ProgressFn | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Blend tiled scores and turn each band into labels with ``decide``.

    Args:
        decide: ``(C, rows, W)`` scores -> ``(rows, W)`` uint8 labels.
        out: optional preallocated ``(H, W)`` uint8 array (e.g. a memory map).

    Returns:
        (H, W) uint8 labels.
    """
    labels = np.zeros(source.shape, np.uint8) if out is None else out

    def emit(y0: int, scores: np.ndarray) -> None:
        rows = scores.shape[1]
        for x in range(0, scores.shape[2], DECIDE_COLUMNS):  # bounded temporaries
            sl = slice(x, x + DECIDE_COLUMNS)
            labels[y0 : y0 + rows, sl] = decide(scores[:, :, sl])

    blend_tiles(
        source, score_fn, emit, tile=tile, overlap=overlap, batch=batch, progress=progress
    )
    return labels
