"""The training-free yardstick: masked average pooling + cosine similarity.

Every trained model must beat it on the same episodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masks_to_grid(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Downsample image-resolution masks to the feature grid by area averaging.

    Args:
        masks: (B, K, H, W) in [0, 1].
        size: (h, w) of the feature grid.

    Returns:
        (B, K, h, w) soft masks in [0, 1] (fraction of each patch covered).
    """
    b, k, hm, wm = masks.shape
    grid = F.adaptive_avg_pool2d(masks.reshape(b * k, 1, hm, wm).float(), size)
    return grid.reshape(b, k, *size)


def masked_average(feats: Tensor, weights: Tensor, eps: float = 1e-6) -> Tensor:
    """Weighted mean of features over space and shots.

    Args:
        feats: (B, K, C, h, w).
        weights: (B, K, h, w) non-negative.

    Returns:
        (B, C) prototypes.
    """
    num = torch.einsum("bkchw,bkhw->bc", feats, weights)
    den = weights.sum(dim=(1, 2, 3)).clamp_min(eps)
    return num / den[:, None]


def prototype_logits(query: Tensor, support: Tensor, masks: Tensor, temperature: float) -> Tensor:
    """Foreground log-odds of the fg/bg prototype cosine softmax:
    ``t * (cos_fg - cos_bg)``, i.e. ``sigmoid`` of it is ``softmax(t * [cos_fg, cos_bg])[0]``.

    Args:
        query: (B, C, h, w).
        support: (B, K, C, hs, ws).
        masks: (B, K, hs, ws) soft foreground masks on the support grid.

    Returns:
        (B, 1, h, w) logits.
    """
    fg, bg = masked_average(support, masks), masked_average(support, 1 - masks)
    return pair_logits(query, fg, bg, temperature)


def pair_logits(query: Tensor, fg: Tensor, bg: Tensor, temperature: float) -> Tensor:
    """``t * (cos(query, fg) - cos(query, bg))`` for given prototypes.

    Args:
        query: (B, C, h, w).
        fg, bg: (B, C) foreground / background prototypes.

    Returns:
        (B, 1, h, w) logits.
    """
    protos = torch.stack([fg, bg], 1)  # (B, 2, C)
    cos = F.cosine_similarity(query[:, None], protos[:, :, :, None, None], dim=2)  # (B, 2, h, w)
    return temperature * (cos[:, :1] - cos[:, 1:])


class PrototypeBaseline(nn.Module):
    """Foreground/background prototypes and a cosine-similarity softmax (PANet-style).

    The foreground probability of a query patch is ``softmax(t * [cos_fg, cos_bg])[0]``,
    averaged over the selected feature layers, i.e. a patch is foreground when it is closer to
    the support foreground than to the support background. No trainable parameters.

    Args:
        temperature: scale ``t`` of the cosine logits.
        embed_layer: index into the feature list to use (default the last, i.e. the deepest
            requested block); ``None`` averages the cosine maps of all layers.
    """

    def __init__(self, *, temperature: float = 20.0, embed_layer: int | None = -1):
        super().__init__()
        self.temperature = temperature
        self.embed_layer = embed_layer

    def forward(
        self, query_feats: list[Tensor], support_feats: list[Tensor], support_masks: Tensor
    ) -> Tensor:
        """
        Args:
            query_feats: L tensors (B, C, h, w).
            support_feats: L tensors (B, K, C, hs, ws).
            support_masks: (B, K, Hs, Ws) foreground masks in {0, 1}.

        Returns:
            (B, 1, h, w) foreground logits (log-odds, so ``sigmoid`` gives the probability).
        """
        if self.embed_layer is not None:
            pairs = [(query_feats[self.embed_layer], support_feats[self.embed_layer])]
        else:
            pairs = list(zip(query_feats, support_feats, strict=True))
        probs = []
        for q, s in pairs:
            hs, ws = s.shape[-2:]
            fg = masks_to_grid(support_masks, (hs, ws))
            probs.append(torch.sigmoid(prototype_logits(q, s, fg, self.temperature)))
        p = torch.stack(probs).mean(0).clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)
