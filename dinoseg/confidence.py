"""A scalar confidence for a predicted mask, from its foreground probability map.

:func:`mask_confidence` is ``1 - median binary entropy (bits) of p`` over the pixels the model
predicts as foreground: 1 when the mask is made of sure pixels (p near 1), 0 when at least half
of it sits at p = 0.5. The median, rather than the mean, ignores the thin fuzzy fringe every
mask has, and looking only inside the mask keeps confident far background from inflating the
score. An empty mask is scored on the pixels that are "possibly foreground" (``p > low``): an
empty prediction with nothing ambiguous scores 1 (the model is sure there is nothing).

Measured on CamVid val (330 1-shot episodes over all 11 classes, prototype baseline, packaged
DINOv2-S; ``bench/confidence_calibration.py``): Pearson 0.82 / Spearman 0.83 with the episode
IoU and AUROC 0.98 at flagging masks with IoU < 0.5, against 0.69 / 0.75 / 0.88 for the mean
margin ``|2p - 1|`` over ``p > 0.1`` (:func:`roi_margin`, this module's previous score).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Element-wise entropy (bits) of Bernoulli(p): 0 at p in {0, 1}, 1 at p = 0.5."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return -(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q))


def mask_confidence(prob: np.ndarray, *, threshold: float = 0.5, low: float = 0.1) -> float:
    """Confidence in [0, 1] of the mask ``prob > threshold``.

    Args:
        prob: (H, W) foreground probabilities.
        threshold: the binarisation threshold used for the mask.
        low: for an empty mask, probabilities above this count as "possibly foreground".

    Returns:
        ``1 - median(H(p))`` over the mask's pixels (over ``p > low`` when the mask is empty;
        1.0 when that is empty too).
    """
    p = np.asarray(prob, dtype=np.float64)
    region = p > threshold
    if not region.any():
        region = p > low
    if not region.any():
        return 1.0
    return float(np.clip(1.0 - np.median(binary_entropy(p[region])), 0.0, 1.0))


def roi_margin(prob: np.ndarray, *, threshold: float = 0.5, low: float = 0.1) -> float:
    """Mean ``|2p - 1|`` over ``(p > threshold) | (p > low)``; 1.0 when that region is empty.

    The previous confidence score, kept for comparison (see the module docstring).
    """
    p = np.asarray(prob, dtype=np.float64)
    roi = (p > threshold) | (p > low)
    if not roi.any():
        return 1.0
    return float(np.abs(2.0 * p[roi] - 1.0).mean())
