"""Tiny scenes and dataset folders for the support-memory tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

YELLOW, CYAN = (230, 200, 40), (40, 200, 230)
SIZE = 84
#: the scenes' class names by label id; 9 = void
NAMES = {0: "background", 1: "thing", 2: "other"}


def scene(
    seed: int, box: tuple[int, int, int, int], colour: tuple[int, int, int], label: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Noise with one coloured box: ((84, 84, 3) uint8, (84, 84) int64 label map, box = label)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8)
    lab = np.zeros((SIZE, SIZE), np.int64)
    y0, x0, y1, x1 = box
    img[y0:y1, x0:x1] = colour
    lab[y0:y1, x0:x1] = label
    return img, lab


def write_folder(
    root: Path, split: str, scenes: list[tuple[np.ndarray, np.ndarray]], start: int = 0
) -> Path:
    """A dataset folder (classes.json with :data:`NAMES`, ignore 9) holding ``scenes``."""
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    if not (root / "classes.json").is_file():
        classes = {"classes": {str(k): v for k, v in NAMES.items()}, "ignore_index": 9}
        (root / "classes.json").write_text(json.dumps(classes))
    for i, (img, lab) in enumerate(scenes, start):
        Image.fromarray(img).save(root / split / "images" / f"s{i:03d}.png")
        Image.fromarray(lab.astype(np.uint8)).save(root / split / "masks" / f"s{i:03d}.png")
    return root


def thing_scenes(n: int, colour: tuple[int, int, int] = CYAN, seed: int = 100) -> list:
    """``n`` scenes, each with a ``thing`` box of ``colour`` at a varying place."""
    out = []
    for i in range(n):
        y, x = 7 + 7 * (i % 5), 7 + 9 * (i % 4)
        out.append(scene(seed + i, (y, x, y + 28, x + 35), colour))
    return out
