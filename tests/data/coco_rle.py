"""COCO RLE encoders for writing test annotations (the library only decodes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rle_to_string(counts: Sequence[int]) -> str:
    """Compressed COCO RLE string of ``counts`` (pycocotools' ``rleToString``)."""
    chars = []
    for i, run in enumerate(counts):
        x = int(run) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr(48 + (c | 0x20 if more else c)))
            if not more:
                break
    return "".join(chars)


def rle_encode(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a (H, W) mask: runs of 0 / 1 in column-major order,
    starting with a (possibly empty) run of 0."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    return [0, *counts] if flat.size and flat[0] else counts
