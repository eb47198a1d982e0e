"""What an annotator gives: positive / negative clicks and a rectangle, in image pixels.

Coordinates are continuous image pixels: ``x`` in ``[0, W]``, ``y`` in ``[0, H]``, the pixel
``(row r, column c)`` covering ``[c, c + 1) x [r, r + 1)``. :func:`check_prompts` turns what
cannot be used into one-line :class:`~dinoseg.io.InputError` messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dinoseg.io import InputError


@dataclass(frozen=True)
class Click:
    """One click: ``(x, y)`` in image pixels; ``positive`` = "this is the object"."""

    x: float
    y: float
    positive: bool = True

    def pixel(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(row, column)`` of the clicked pixel in an image of ``shape`` (H, W), clamped."""
        h, w = shape
        return min(h - 1, max(0, int(self.y))), min(w - 1, max(0, int(self.x)))


@dataclass(frozen=True)
class Box:
    """A rectangle ``(x0, y0)`` - ``(x1, y1)`` in image pixels (x0 < x1, y0 < y1)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def check_prompts(
    clicks: Sequence[Click], box: Box | None, shape: tuple[int, int]
) -> tuple[list[Click], Box | None]:
    """Validate prompts for an image of ``shape`` (H, W); returns them with the box clipped to
    the image.

    Raises:
        InputError: no prompt at all, a click outside the image, a rectangle of (near) zero
            area or outside the image, or a negative click with nothing positive to go with it.
    """
    h, w = shape
    if not clicks and box is None:
        raise InputError("place a positive click or a rectangle on the object")
    for c in clicks:
        if not _finite(c.x, c.y) or not (0 <= c.x <= w and 0 <= c.y <= h):
            raise InputError(f"click at ({c.x:.1f}, {c.y:.1f}) is outside the {w}x{h} image")
    if box is not None:
        if not _finite(box.x0, box.y0, box.x1, box.y1):
            raise InputError("the rectangle has non-numeric corners")
        clipped = Box(max(0.0, box.x0), max(0.0, box.y0), min(float(w), box.x1),
                      min(float(h), box.y1))  # fmt: skip
        if box.area < 1.0:
            raise InputError(f"the rectangle has zero area ({box.x1 - box.x0:.1f} x "
                             f"{box.y1 - box.y0:.1f} px); drag it over the object")  # fmt: skip
        if clipped.area < 1.0:
            raise InputError(f"the rectangle lies outside the {w}x{h} image")
        box = clipped
    if box is None and not any(c.positive for c in clicks):
        raise InputError("only negative clicks: add a positive click or a rectangle on the object")
    return list(clicks), box
