"""Fixtures of the aerial tests: tiny multi-class supports and photos."""

from __future__ import annotations

import numpy as np
import pytest
from aerial_helpers import NAMES, city_tile

from dinoseg.aerial.features import Supports


@pytest.fixture
def supports() -> Supports:
    images, labels = zip(*(city_tile(56, 70, seed=s) for s in (1, 2)), strict=True)
    return Supports(list(images), list(labels), list(NAMES))


@pytest.fixture
def photo() -> tuple[np.ndarray, np.ndarray]:
    return city_tile(84, 112, seed=7)
