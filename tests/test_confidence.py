"""dinoseg.confidence: the mask confidence score's defining properties."""

from __future__ import annotations

import numpy as np
import pytest

from dinoseg.confidence import binary_entropy, mask_confidence, roi_margin


def test_binary_entropy_endpoints() -> None:
    np.testing.assert_allclose(binary_entropy(np.array([0.0, 0.5, 1.0])), [0, 1, 0], atol=1e-5)


def test_sure_mask_scores_one_and_coin_flip_scores_zero() -> None:
    p = np.zeros((20, 30), np.float32)
    p[5:15, 5:20] = 1.0
    assert mask_confidence(p) == pytest.approx(1.0, abs=1e-5)
    p[5:15, 5:20] = 0.5001
    assert mask_confidence(p) == pytest.approx(0.0, abs=1e-5)


def test_median_ignores_a_fuzzy_fringe_but_not_a_fuzzy_mask() -> None:
    p = np.zeros((40, 40), np.float32)
    p[10:30, 10:30] = 0.98
    p[9, 10:30] = p[30, 10:30] = 0.55  # a thin fuzzy fringe: under half of the mask
    sure = mask_confidence(p)
    assert sure == pytest.approx(1 - float(binary_entropy(np.array(0.98))), abs=1e-6)
    p[10:30, 10:30] = 0.6  # most of the mask barely above the threshold
    assert mask_confidence(p) < 0.1 < sure


def test_confident_background_does_not_inflate_the_score() -> None:
    small = np.zeros((10, 10), np.float32)
    small[2:8, 2:8] = 0.6
    big = np.zeros((200, 200), np.float32)
    big[2:8, 2:8] = 0.6
    assert mask_confidence(small) == pytest.approx(mask_confidence(big))


def test_empty_mask_scores_on_the_possible_foreground() -> None:
    assert mask_confidence(np.zeros((8, 8), np.float32)) == 1.0
    p = np.zeros((8, 8), np.float32)
    p[:4] = 0.45  # nothing predicted, but a half-believed region
    assert mask_confidence(p) < 0.05
    assert mask_confidence(p, threshold=0.4) == mask_confidence(p)  # same region either way


def test_threshold_selects_the_region() -> None:
    p = np.full((10, 10), 0.7, np.float32)
    p[:5] = 0.99
    assert mask_confidence(p, threshold=0.8) > mask_confidence(p, threshold=0.5)


def test_roi_margin_is_the_previous_score() -> None:
    p = np.zeros((10, 10), np.float32)
    p[:5] = 0.9
    p[5:7] = 0.3
    assert roi_margin(p) == pytest.approx((50 * 0.8 + 20 * 0.4) / 70)
