"""Shared fixtures: tiny random DINOv2 encoders and the real data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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
