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
            _, _, _, hs, ws = s.shape
            fg = masks_to_grid(support_masks, (hs, ws))
            protos = torch.stack([masked_average(s, fg), masked_average(s, 1.0 - fg)], dim=1)
            cos = F.cosine_similarity(q[:, None], protos[:, :, :, None, None], dim=2)  # (B,2,h,w)
            probs.append(torch.softmax(self.temperature * cos, dim=1)[:, :1])
        p = torch.stack(probs).mean(0).clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)
