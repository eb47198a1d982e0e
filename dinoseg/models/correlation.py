"""Stateless multi-layer hypercorrelation between query and masked support features (HSNet)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_correlation", "multilayer_correlation"]

_EPS = 1e-6


def cosine_correlation(
    query: Tensor, support: Tensor, support_mask: Tensor | None = None
) -> Tensor:
    """Dense 4D cosine correlation of one feature layer, clamped at 0.

    Args:
        query: (B, C, hq, wq) query features.
        support: (B, C, hs, ws) support features.
        support_mask: optional (B, hs, ws) soft foreground mask in [0, 1]; each support
            position's correlation is multiplied by its mask value (equivalent to correlating
            with masked support features for a binary mask, and well defined for soft masks).

    Returns:
        (B, 1, hq, wq, hs, ws) correlation in [0, 1]. Zero vectors give 0, never NaN.
    """
    b, c, hq, wq = query.shape
    bs, cs, hs, ws = support.shape
    if (bs, cs) != (b, c):
        raise ValueError(f"query {tuple(query.shape)} and support {tuple(support.shape)} mismatch")
    q = F.normalize(query.flatten(2), dim=1, eps=_EPS)  # (B, C, hq*wq)
    s = F.normalize(support.flatten(2), dim=1, eps=_EPS)  # (B, C, hs*ws)
    corr = torch.bmm(q.transpose(1, 2), s).clamp_(min=0.0)  # (B, hq*wq, hs*ws)
    if support_mask is not None:
        corr = corr * support_mask.reshape(b, 1, hs * ws).to(corr.dtype)
    return corr.view(b, 1, hq, wq, hs, ws)


def multilayer_correlation(
    query_feats: Sequence[Tensor],
    support_feats: Sequence[Tensor],
    support_mask: Tensor | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """Hypercorrelation: per-layer correlations stacked along the channel dimension.

    Args:
        query_feats: L tensors (B, C_l, hq, wq).
        support_feats: L tensors (B, C_l, hs, ws), same layers as ``query_feats``.
        support_mask: optional (B, hs, ws) soft support foreground mask.
        groups: optional layer groups; the correlations of the layers in one group are
            averaged into one channel. Default: every layer is its own group.

    Returns:
        (B, G, hq, wq, hs, ws) with G = number of groups (L by default), a view on memory
        ordered (B, hq, wq, hs, ws, G) (see :mod:`dinoseg.models.conv4d`).
    """
    if len(query_feats) != len(support_feats) or not query_feats:
        raise ValueError(
            f"need the same non-zero number of query ({len(query_feats)}) "
            f"and support ({len(support_feats)}) layers"
        )
    corrs = [
        cosine_correlation(q, s, support_mask)
        for q, s in zip(query_feats, support_feats, strict=True)
    ]
    if groups is not None:
        corrs = [torch.stack([corrs[i] for i in group], dim=0).mean(dim=0) for group in groups]
    # Stored (B, hq, wq, hs, ws, G): the channels-last layout the 4D convolutions read fastest.
    return torch.stack([c[:, 0] for c in corrs], dim=-1).permute(0, 5, 1, 2, 3, 4)
