"""A scalar confidence for a predicted mask, from its foreground probability map.

The score is the mean certainty ``|2p - 1|`` over the *region of interest*: the pixels the
model predicts as foreground plus every pixel where it is not sure it is background
(``p > low``). Confident background far from the object does not inflate the score, so a
mask with a fuzzy outline or a half-believed second blob scores low. An empty prediction
with nothing ambiguous scores 1 (the model is sure there is nothing); 0 means every pixel of
interest sits at p = 0.5.
"""

from __future__ import annotations

import numpy as np


def mask_confidence(prob: np.ndarray, *, threshold: float = 0.5, low: float = 0.1) -> float:
    """Confidence in [0, 1] of the mask ``prob > threshold``.

    Args:
        prob: (H, W) foreground probabilities.
        threshold: the binarisation threshold used for the mask.
        low: probabilities above this count as "possibly foreground".

    Returns:
        mean of ``|2p - 1|`` over ``(p > threshold) | (p > low)``; 1.0 when that region is empty.
    """
    p = np.asarray(prob, dtype=np.float64)
    roi = (p > threshold) | (p > low)
    if not roi.any():
        return 1.0
    return float(np.abs(2.0 * p[roi] - 1.0).mean())
