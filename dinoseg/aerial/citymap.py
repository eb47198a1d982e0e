"""2D city map outputs: colours, a map with a legend, per-class area statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dinoseg.aerial.categories import UNKNOWN, UNKNOWN_COLOUR, Category

CHUNK_PIXELS = 4_000_000  # labels counted at a time (bounded memory on huge maps)


def colour_table(categories: list[Category]) -> np.ndarray:
    """(256, 3) uint8 lookup: label -> RGB (unknown and unused labels black)."""
    table = np.zeros((256, 3), np.uint8)
    table[UNKNOWN] = UNKNOWN_COLOUR
    for i, cat in enumerate(categories):
        table[i] = cat.colour
    return table


def preview_labels(labels: np.ndarray, max_side: int) -> np.ndarray:
    """Labels subsampled (nearest) so the long side is at most ``max_side``."""
    step = max(1, int(np.ceil(max(labels.shape) / max_side)))
    return np.ascontiguousarray(labels[step // 2 :: step, step // 2 :: step])


def area_stats(labels: np.ndarray, categories: list[Category], pixel_size: float) -> dict[str, Any]:
    """Pixels, share and area (m², with ``pixel_size`` metres per pixel) of each class.

    Returns:
        ``{"image": {...}, "classes": {name: {"label", "pixels", "fraction", "area_m2"}},
        "unknown": {...}}``.
    """
    counts = np.zeros(256, np.int64)
    rows = max(1, CHUNK_PIXELS // max(1, labels.shape[1]))
    for y in range(0, labels.shape[0], rows):
        counts += np.bincount(np.asarray(labels[y : y + rows]).ravel(), minlength=256)
    total = int(labels.size)

    def entry(label: int) -> dict[str, Any]:
        n = int(counts[label])
        return {
            "label": label,
            "pixels": n,
            "fraction": round(n / total, 6),
            "area_m2": round(n * pixel_size**2, 2),
        }

    return {
        "image": {
            "height": int(labels.shape[0]),
            "width": int(labels.shape[1]),
            "pixel_size_m": pixel_size,
            "area_m2": round(total * pixel_size**2, 2),
        },
        "classes": {cat.name: entry(i) for i, cat in enumerate(categories)},
        "unknown": entry(UNKNOWN),
    }


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without a scalable default font
        return ImageFont.load_default()


def map_with_legend(
    labels: np.ndarray, categories: list[Category], stats: dict[str, Any], *, max_side: int = 4096
) -> Image.Image:
    """The coloured class map (subsampled to ``max_side``) with a legend panel on its right:
    a swatch, the class name and its share of the image per class."""
    small = preview_labels(labels, max_side)
    rgb = colour_table(categories)[small]
    h, w = small.shape
    size = max(12, min(32, h // 24))
    font = _font(size)
    rows = [(c.name, c.colour, stats["classes"][c.name]["fraction"]) for c in categories]
    if stats["unknown"]["pixels"]:
        rows.append(("unknown", UNKNOWN_COLOUR, stats["unknown"]["fraction"]))
    panel_w = size * 12
    canvas = Image.new("RGB", (w + panel_w, max(h, (len(rows) + 1) * size * 2)), "white")
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, colour, frac) in enumerate(rows):
        y = size + i * size * 2
        x0 = w + size // 2
        draw.rectangle([x0, y, x0 + size, y + size], fill=colour, outline="black")
        draw.text((w + 2 * size, y), f"{name} {100 * frac:.1f}%", fill="black", font=font)
    return canvas
