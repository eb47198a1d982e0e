"""Pictures of results: mask overlays and probability heatmaps (numpy only)."""

from __future__ import annotations

import numpy as np

FG_COLOUR = (255, 64, 32)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool, the mask's inner 4-neighbour boundary."""
    m = np.asarray(mask, bool)
    pad = np.pad(m, 1, mode="edge")
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return m & ~inner


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    colour: tuple[int, int, int] = FG_COLOUR,
    alpha: float = 0.45,
) -> np.ndarray:
    """Blend ``colour`` over the masked pixels and draw the outline.

    Args:
        image: (H, W, 3) uint8.
        mask: (H, W) bool.

    Returns:
        (H, W, 3) uint8.
    """
    out = image.astype(np.float32).copy()
    m = np.asarray(mask, bool)
    col = np.asarray(colour, np.float32)
    out[m] = (1.0 - alpha) * out[m] + alpha * col
    out[mask_outline(m)] = col
    return out.clip(0, 255).astype(np.uint8)


def heatmap(prob: np.ndarray) -> np.ndarray:
    """(H, W) probabilities in [0, 1] -> (H, W, 3) uint8 (dark blue -> yellow)."""
    p = np.clip(np.asarray(prob, np.float32), 0.0, 1.0)
    r = np.clip(1.5 * p - 0.2, 0, 1)
    g = np.clip(1.6 * p - 0.5, 0, 1) * 0.9 + 0.1 * p
    b = np.clip(0.6 - 0.8 * p, 0, 1) + 0.2 * (1 - p)
    return (np.stack([r, g, np.clip(b, 0, 1)], axis=-1) * 255).astype(np.uint8)
