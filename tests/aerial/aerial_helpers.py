"""Shared helpers of the aerial tests (synthetic city tiles, a random head method)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dinoseg.aerial.adapt import AdaptSettings
    from dinoseg.aerial.methods.head import HeadMethod

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


def random_head_method(kind: str = "linear", *, views: int = 1,
                       adapt: AdaptSettings | None = None,
                       bias: dict[str, float] | None = None) -> HeadMethod:
    """A head method on the tiny backbone (blocks 1-2, 56 px tiles) whose head (a 1x1
    ``linear`` or a 3x3 ``conv`` one) has random N(0, 0.5) weights: its scores are neither
    uniform nor symmetric."""
    import torch

    from dinoseg.aerial.features import TileEncoder
    from dinoseg.aerial.methods.base import TileSettings
    from dinoseg.aerial.methods.head import HeadMethod
    from dinoseg.backbone import DinoBackbone
    from dinoseg.heads.model import HeadSpec, build_head
    from tests.conftest import tiny_dinov2

    backbone = DinoBackbone(tiny_dinov2(), (1, 2), spec="tiny")
    dim = backbone.model.config.hidden_size
    head = build_head(HeadSpec(kind, (1, 2), dim, tuple(NAMES), 8, 0.0), seed=3)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0.0, 0.5)
    return HeadMethod(head, TileEncoder(backbone), tiles=TileSettings(56, 14), views=views,
                      adapt=adapt, bias=bias)  # fmt: skip
