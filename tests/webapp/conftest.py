"""Fixtures for the web demo: a private stack home, a tiny in-process backend, editor values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import blob_image, tiny_dinov2


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every webapp test gets its own ``DINOSEG_HOME`` (uploads, results, logs)."""
    path = tmp_path / "home"
    monkeypatch.setenv("DINOSEG_HOME", str(path))
    monkeypatch.delenv("DINOSEG_DEMO_AUTH", raising=False)
    return path


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random DINOv2 saved as a backbone directory (fast; results are not meaningful)."""
    path = tmp_path_factory.mktemp("tiny-dinov2")
    tiny_dinov2().save_pretrained(path)
    return path


def tiny_job(backbone: Path, params: Path):
    """The serving layer's segment job on the tiny backbone (112 px), reading ``params``."""
    from serving.config import ServingConfig
    from serving.models import ModelHolder
    from serving.segment import SegmentJob

    holder = ModelHolder(ServingConfig(backbone=str(backbone), image_size=112))
    return SegmentJob(holder, params=params)


@pytest.fixture
def tiny_backend(tiny_backbone_dir: Path, tmp_path: Path):
    """The in-process backend over :func:`tiny_job` (no params file: code defaults)."""
    from webapp.backends.local import LocalBackend

    return LocalBackend(tiny_job(tiny_backbone_dir, tmp_path / "no-params.yaml"))


def editor_value(image: np.ndarray, *masks: np.ndarray, alpha: int = 150) -> dict:
    """What ``gr.ImageEditor(type="numpy", image_mode="RGBA")`` hands a callback: the image as
    RGBA background and one RGBA brush layer per mask (painted colour, transparent elsewhere)."""
    h, w = image.shape[:2]
    layers = []
    for m in masks:
        layer = np.zeros((*m.shape, 4), np.uint8)
        layer[m] = (255, 64, 32, alpha)
        layers.append(layer)
    background = np.dstack([image, np.full((h, w), 255, np.uint8)])
    return {"background": background, "layers": layers, "composite": background}


@pytest.fixture
def blobs(tmp_path: Path) -> dict:
    """A support (image + mask) and two query files with the same kind of object."""
    img, mask = blob_image(84, 112, (20, 30, 60, 80))
    paths = []
    for i, box in enumerate([(10, 10, 50, 60), (30, 40, 80, 100)]):
        q, _ = blob_image(84, 112, box, seed=i + 1)
        path = tmp_path / f"query{i + 1}.png"
        Image.fromarray(q).save(path)
        paths.append(str(path))
    mask_path = tmp_path / "support_mask.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    return {"image": img, "mask": mask, "mask_path": str(mask_path), "queries": paths}


def no_slots(n: int = 3) -> list:
    """Empty support slots after the first."""
    return [None] * n
