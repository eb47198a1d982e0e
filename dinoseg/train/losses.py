"""Segmentation losses with an ignore mask."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bce_dice_loss(logits: Tensor, target: Tensor, valid: Tensor, *, dice_weight: float = 1.0
                  ) -> Tensor:
    """Binary cross-entropy + soft Dice, both over valid pixels only.

    Args:
        logits: (B, 1, H, W) mask logits (resized to the target if needed).
        target: (B, 1, H, W) in {0, 1}.
        valid: (B, 1, H, W) 1 where the pixel counts.

    Returns:
        scalar loss (mean BCE over valid pixels + ``dice_weight`` x mean per-episode Dice loss).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                               align_corners=False)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp_min(1.0)
    prob = logits.sigmoid() * valid
    inter = (prob * target).flatten(1).sum(1)
    denom = prob.flatten(1).sum(1) + (target * valid).flatten(1).sum(1)
    dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
    return bce + dice_weight * dice.mean()
