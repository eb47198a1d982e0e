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


def _thick(outline: np.ndarray, width: int) -> np.ndarray:
    """Dilate a (H, W) bool outline by ``width - 1`` pixels (4-neighbourhood, numpy only)."""
    out = outline.copy()
    for _ in range(max(0, width - 1)):
        pad = np.pad(out, 1)
        out = out | pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]
    return out


def support_sheet(
    images: list[np.ndarray], masks: list[np.ndarray], *, height: int = 360, gap: int = 8,
    colour: tuple[int, int, int] = FG_COLOUR,
) -> np.ndarray:
    """The support examples side by side, each resized to ``height`` with its mask outlined
    and lightly tinted: what a reviewer sees of "the thing" the stakeholder meant.

    Args:
        images: K (H_k, W_k, 3) uint8 images.
        masks: K (H_k, W_k) bool masks.

    Returns:
        (height, sum of resized widths + gaps, 3) uint8 on a white background.
    """
    from PIL import Image

    tiles = []
    for image, mask in zip(images, masks, strict=True):
        h, w = mask.shape
        new_w = max(1, round(w * height / h))
        img = np.asarray(Image.fromarray(image).resize((new_w, height), Image.Resampling.BILINEAR))
        m = np.asarray(Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(
            (new_w, height), Image.Resampling.NEAREST)) > 127  # fmt: skip
        tile = overlay(img, m, colour=colour, alpha=0.25)
        tile[_thick(mask_outline(m), 3)] = colour
        tiles.append(tile)
    sheet = np.full((height, sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1), 3), 255,
                    np.uint8)  # fmt: skip
    x = 0
    for tile in tiles:
        sheet[:, x : x + tile.shape[1]] = tile
        x += tile.shape[1] + gap
    return sheet
