"""Shared fixtures: tiny random DINOv2 encoders and the real data folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_dinov2(seed: int = 0, *, layers: int = 2, hidden: int = 32, registers: int = 0):
    """A randomly initialised transformers DINOv2 small enough for unit tests."""
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    torch.manual_seed(seed)
    kw = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=56,
    )
    if registers:
        return Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(num_register_tokens=registers, **kw)
        ).eval()
    return Dinov2Model(Dinov2Config(**kw)).eval()


@pytest.fixture
def tiny_backbone():
    from dinoseg.backbone import DinoBackbone

    return DinoBackbone(tiny_dinov2(), (1, 2), spec="tiny")


@pytest.fixture(scope="session")
def camvid() -> Path:
    root = SHARED_DATA / "camvid"
    if not (root / "classes.json").is_file():
        pytest.fail(f"real data missing: {root} (the repo expects ../shared/data beside it)")
    return root


@pytest.fixture(scope="session")
def packaged_backbone():
    from dinoseg.backbone import load_backbone

    return load_backbone("packaged:dinov2-s")


def blob_image(h: int, w: int, box: tuple[int, int, int, int], seed: int = 0):
    """A noisy image with a bright square object and its mask: ((H, W, 3) uint8, (H, W) bool)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    img[mask] = (230, 200, 40)
    return img, mask


COLOURS = [(220, 40, 40), (40, 220, 40), (40, 40, 220), (220, 220, 40)]


def write_synthetic_dataset(root, n_train=10, n_val=6):
    """A folder dataset of 4 coloured bar classes on noise (classes.json + train/ + val/)."""
    root.mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(
        {"classes": {str(i): f"c{i}" for i in range(4)}, "ignore_index": 255}))
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 60, (56, 70, 3), dtype=np.uint8)
            lab = np.full((56, 70), 255, np.uint8)  # unlabelled background = ignore
            for c in range(4):  # every class somewhere in every image
                y, x = 2 + 13 * c, int(rng.integers(0, 40))
                img[y : y + 12, x : x + 28] = COLOURS[c]
                lab[y : y + 12, x : x + 28] = c
            Image.fromarray(img).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(lab).save(root / split / "masks" / f"{i:03d}.png")
