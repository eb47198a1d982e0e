"""Fixtures of the support-memory tests: a tiny random DINOv2 and its memory encoder."""

from __future__ import annotations

import pytest
import torch

from dinoseg.backbone import DinoBackbone
from dinoseg.memory import MemoryEncoder
from tests.conftest import tiny_dinov2
from tests.memory.scenes import SIZE


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def backbone() -> DinoBackbone:
    return DinoBackbone(tiny_dinov2(), (1, 2), spec="tiny")


@pytest.fixture
def encoder(backbone: DinoBackbone) -> MemoryEncoder:
    return MemoryEncoder(backbone, image_size=SIZE, layer=2)
