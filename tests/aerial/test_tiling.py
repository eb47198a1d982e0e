"""Tiled inference: tile plans, blending weights, no seams, equality with untiled inference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dinoseg.aerial.reader import ArraySource
from dinoseg.aerial.tiling import (
    ScoreFn,
    blend_tiles,
    plan_tiles,
    ramp,
    tile_starts,
    tile_window,
    tiled_labels,
)
from dinoseg.io import InputError


def tiled_scores(
    source: ArraySource, score_fn: ScoreFn, *, tile: int, overlap: int, batch: int = 2
) -> np.ndarray:
    """The full ``(C, H, W)`` blended scores, the bands of :func:`blend_tiles` put together."""
    bands: list[np.ndarray] = []
    blend_tiles(
        source, score_fn, lambda _y, s: bands.append(s.copy()), tile=tile, overlap=overlap,
        batch=batch,
    )
    return np.concatenate(bands, axis=1)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_tile_starts_cover_the_image_with_equal_tiles():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in itertools.pairwise(starts))


def test_plan_rejects_bad_settings():
    with pytest.raises(InputError, match="too small"):
        plan_tiles((100, 100), 10, 0)
    with pytest.raises(InputError, match="overlap"):
        plan_tiles((100, 100), 64, 40)


def test_normalised_weights_sum_to_one_everywhere():
    """The blend of a constant score per tile is that constant (weights form a partition)."""
    grid = plan_tiles((300, 410), 96, 24)
    wsum = np.zeros(grid.shape)
    for y0, x0, y1, x1 in grid.boxes():
        w = tile_window(grid, y0, x0)
        assert w.min() > 0
        wsum[y0:y1, x0:x1] += w
    assert wsum.min() > 0.05
    const = tiled_scores(
        ArraySource(_image(300, 410)),
        lambda t: np.full((t.shape[0], 2, *t.shape[1:3]), 3.5, np.float32),
        tile=96, overlap=24,
    )
    np.testing.assert_allclose(const, 3.5, rtol=1e-6)


def test_raised_cosine_ramps_are_complementary():
    up = ramp(64, 16, lead=True, trail=False)[:16]
    down = ramp(64, 16, lead=False, trail=True)[-16:]
    np.testing.assert_allclose(up + down, 1.0, atol=1e-6)


def test_no_seams_for_a_smooth_global_function():
    """Tiles that score a smooth function of image position reproduce it exactly: no seam."""
    h, w = 257, 333
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.arange(w)[None, :] % 256
    image[..., 1] = np.arange(h)[:, None] % 256

    def score(tiles: np.ndarray) -> np.ndarray:
        x = tiles[..., 0].astype(np.float32)
        y = tiles[..., 1].astype(np.float32)
        return np.stack([0.5 * x + 0.25 * y, -x], axis=1)

    out = tiled_scores(ArraySource(image), score, tile=64, overlap=16, batch=3)
    x = np.arange(w, dtype=np.float32)[None, :] % 256
    y = np.arange(h, dtype=np.float32)[:, None] % 256
    np.testing.assert_allclose(out[0], 0.5 * x + 0.25 * y, atol=1e-3)
    np.testing.assert_allclose(out[1], np.broadcast_to(-x, (h, w)), atol=1e-3)


def test_blending_is_continuous_across_tile_borders():
    """Per-tile offsets (what a real model's seams look like) are blended away smoothly."""
    h, w = 200, 200
    grid = plan_tiles((h, w), 80, 32)
    offsets = {box: float(i) for i, box in enumerate(grid.boxes())}
    bands = []

    def score(tiles: np.ndarray) -> np.ndarray:
        return np.zeros((len(tiles), 1, *tiles.shape[1:3]), np.float32)

    calls = iter(grid.boxes())

    def offset_score(tiles: np.ndarray) -> np.ndarray:
        return np.stack([score(t[None])[0] + offsets[next(calls)] for t in tiles])

    blend_tiles(ArraySource(_image(h, w)), offset_score, lambda y, s: bands.append(s),
                tile=80, overlap=32, batch=1)
    out = np.concatenate(bands, axis=1)[0]
    assert out.shape == (h, w)
    jumps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert jumps < 0.5  # tiles differ by 1 to 6 units; the hand-over is gradual


def test_a_tile_covering_the_image_equals_untiled_inference():
    image = _image(90, 120, seed=3)

    def score(tiles: np.ndarray) -> np.ndarray:
        return np.moveaxis(tiles.astype(np.float32), 3, 1)

    out = tiled_scores(ArraySource(image), score, tile=128, overlap=32)
    np.testing.assert_array_equal(out, score(image[None])[0])


def test_bands_arrive_once_each_in_order_and_labels_are_filled():
    image = _image(150, 70)
    seen: list[tuple[int, int]] = []
    blend_tiles(
        ArraySource(image),
        lambda t: np.zeros((len(t), 1, *t.shape[1:3]), np.float32),
        lambda y, s: seen.append((y, s.shape[1])),
        tile=48, overlap=12,
    )
    rows = [r for y, n in seen for r in range(y, y + n)]
    assert rows == list(range(150))
    labels = tiled_labels(
        ArraySource(image),
        lambda t: np.moveaxis(t.astype(np.float32), 3, 1),
        lambda s: np.argmax(s, axis=0).astype(np.uint8),
        tile=48, overlap=12,
    )
    np.testing.assert_array_equal(labels, np.argmax(image, axis=2))
