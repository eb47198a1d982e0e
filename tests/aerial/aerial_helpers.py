"""Shared helpers of the aerial tests (synthetic city tiles)."""

from __future__ import annotations

import numpy as np

NAMES = ["land", "water", "building", "vegetation", "road"]
COLOURS = np.array(
    [(200, 180, 140), (30, 90, 200), (210, 60, 50), (50, 160, 60), (110, 110, 110)], np.uint8
)


def city_tile(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy synthetic aerial tile: land with a water band, a road, vegetation and two
    buildings; returns ``((H, W, 3) uint8 image, (H, W) uint8 labels)``."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    lab[: h // 5] = 1
    lab[:, w // 2 - 4 : w // 2 + 4] = 4
    lab[h // 2 :, : w // 4] = 3
    lab[h // 3 : h // 3 + 12, w // 8 + 4 : w // 8 + 20] = 2
    lab[2 * h // 3 : 2 * h // 3 + 14, 3 * w // 4 : 3 * w // 4 + 14] = 2
    img = COLOURS[lab].astype(np.int16) + rng.integers(-20, 20, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8), lab


def write_city_folder(root, sizes=((56, 70), (70, 84), (56, 56)), split: str = "train",
                      seed: int = 0):
    """A Dubai-layout dataset folder of synthetic city tiles (``classes.json`` + ``split``);
    returns its path."""
    import json
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    classes = {"classes": {str(i): n for i, n in enumerate(NAMES)}, "ignore_index": 255}
    (root / "classes.json").write_text(json.dumps(classes))
    for i, (h, w) in enumerate(sizes):
        img, lab = city_tile(h, w, seed=seed + i)
        Image.fromarray(img).save(root / split / "images" / f"t{i}.png")
        Image.fromarray(lab).save(root / split / "masks" / f"t{i}.png")
    return root
