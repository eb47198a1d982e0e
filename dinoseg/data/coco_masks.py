"""COCO ``segmentation`` values decoded to binary masks: polygons and (compressed) RLE.

- **Polygons** ``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates are filled with PIL
  ``ImageDraw``, whose fill includes the outline, so edges run about a pixel wider than
  pycocotools'; polygons of fewer than 3 points have no area and are skipped (as detectron2 does).
- **RLE** is ``{"size": [H, W], "counts": ...}`` with ``counts`` a list (uncompressed) or a string
  (compressed, :func:`rle_from_string`); runs alternate 0 / 1 starting with 0, over the pixels in
  column-major (Fortran) order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from dinoseg.io import InputError

# --- run-length encoding -------------------------------------------------------------------------


def rle_from_string(s: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``).

    Each run is stored in 5-bit chunks, least significant first, one character ``chr(48 + c)``
    per 6-bit chunk ``c``: bit 0x20 says another chunk follows, and in the last chunk bit 0x10 is
    the sign. From the 4th run on (index ``i > 2``) the stored value is ``run[i] - run[i - 2]``.
    """
    text = s.decode("ascii", errors="replace") if isinstance(s, bytes) else s
    counts: list[int] = []
    value = shift = 0
    for p, char in enumerate(text):
        c = ord(char) - 48
        if not 0 <= c < 64:
            raise InputError(f"compressed RLE: character {char!r} at {p} is outside '0'..'o'")
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:
            value -= 1 << shift  # sign-extend the last chunk
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
        value = shift = 0
    if shift:
        raise InputError("compressed RLE: the string ends in the middle of a run length")
    return counts


def rle_decode(counts: Sequence[int] | str | bytes, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of COCO RLE ``counts`` (a list or a compressed string), ``size = (H, W)``.

    Raises:
        InputError: counts that are not non-negative integers adding up to ``H * W``.
    """
    h, w = size
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    try:
        runs = np.asarray(counts) if len(counts) else np.zeros(0, dtype=np.int64)
    except (TypeError, ValueError):  # ragged nesting
        runs = np.zeros((0, 0))
    if runs.ndim != 1 or runs.dtype.kind not in "iu":
        raise InputError("RLE counts must be a list of whole numbers (or a compressed string)")
    if (runs < 0).any():
        raise InputError("RLE counts must not be negative")
    if int(runs.sum()) != h * w:
        raise InputError(f"RLE counts add up to {int(runs.sum())} pixels, size {h}x{w} has {h * w}")
    values = np.arange(runs.size) % 2 == 1
    return np.ascontiguousarray(np.repeat(values, runs).reshape((h, w), order="F"))


# --- segmentations -------------------------------------------------------------------------------


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def polygons_to_mask(polygons: object, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool union of COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (PIL fill + outline)."""
    h, w = size
    if not isinstance(polygons, list) or not polygons:
        raise InputError("polygon segmentation must be a non-empty list of [x1, y1, x2, y2, ...]")
    image = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(image)
    for poly in polygons:
        if not isinstance(poly, list) or len(poly) % 2 or not all(map(_is_number, poly)):
            raise InputError(
                f"polygon {str(poly)[:60]} must be a flat list of x, y numbers (an even count)"
            )
        if len(poly) >= 6:  # fewer than 3 points enclose nothing
            draw.polygon(list(zip(poly[0::2], poly[1::2], strict=True)), fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def decode_segmentation(segmentation: object, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of a COCO ``segmentation``: polygons, uncompressed or compressed RLE.

    Raises:
        InputError: a malformed segmentation, or an RLE whose ``size`` is not ``(H, W)``.
    """
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, size)
    if not isinstance(segmentation, dict) or not {"counts", "size"} <= segmentation.keys():
        raise InputError('segmentation must be a polygon list or an RLE {"size", "counts"}')
    rle_size = segmentation["size"]
    if not isinstance(rle_size, list) or [*rle_size] != [*size]:
        raise InputError(f"RLE size {rle_size!r} is not the image's [height, width] {[*size]}")
    counts = segmentation["counts"]
    if not isinstance(counts, (list, str, bytes)):
        raise InputError("RLE counts must be a list of run lengths or a compressed string")
    return rle_decode(counts, size)
