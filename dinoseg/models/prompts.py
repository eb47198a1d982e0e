"""Meta-visual prompt generator: support/query similarity -> dense and sparse decoder prompts.

From the query features and the masked support features of the same backbone layer it
computes

* foreground / background prototypes by masked average pooling over all K shots,
* cosine-similarity maps of every query pixel to both prototypes,
* a dense prior: for every query pixel the maximum cosine similarity to any support
  foreground pixel of any shot (PFENet's "prior mask"), raw and min-max normalised,
* a query self-prototype: the query features pooled with the normalised prior as weights,

and turns the four maps into a dense prompt ``(B, E, h, w)`` and the three prototypes into
sparse prompt tokens ``(B, 3, E)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.models.adapter import LayerNorm2d

__all__ = ["MetaPromptGenerator", "masked_average", "prior_map"]

_EPS = 1e-6


def masked_average(feats: Tensor, weights: Tensor) -> Tensor:
    """Weighted average pooling over shots and pixels.

    Args:
        feats: (B, K, C, h, w) features.
        weights: (B, K, h, w) non-negative weights (soft masks).

    Returns:
        (B, C) prototype; the zero vector where all weights are 0.
    """
    num = torch.einsum("bkchw,bkhw->bc", feats, weights)
    den = weights.sum(dim=(1, 2, 3)).unsqueeze(1)
    return num / den.clamp(min=_EPS)


def prior_map(query: Tensor, support: Tensor, masks: Tensor) -> Tensor:
    """Per-query-pixel max cosine similarity to the support foreground pixels of all shots.

    Args:
        query: (B, C, h, w).
        support: (B, K, C, hs, ws).
        masks: (B, K, hs, ws) soft foreground masks.

    Returns:
        (B, 1, h, w) in [0, 1] (similarities clamped at 0 and weighted by the mask);
        all zeros for an empty mask.
    """
    b, c, h, w = query.shape
    _, k, _, hs, ws = support.shape
    q = F.normalize(query.flatten(2), dim=1, eps=_EPS)  # (B, C, h*w)
    s = F.normalize(support.permute(0, 2, 1, 3, 4).reshape(b, c, k * hs * ws), dim=1, eps=_EPS)
    sim = torch.bmm(q.transpose(1, 2), s).clamp_(min=0.0)  # (B, h*w, K*hs*ws)
    sim = sim * masks.reshape(b, 1, k * hs * ws)
    return sim.amax(dim=2).view(b, 1, h, w)


def _minmax(x: Tensor) -> Tensor:
    """Per-sample min-max normalisation of (B, 1, h, w) to [0, 1]."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return (x - lo) / (hi - lo + _EPS)


class MetaPromptGenerator(nn.Module):
    """Query + masked support features -> (dense prompt, sparse prompt tokens).

    ``forward(query (B, C, h, w), support (B, K, C, hs, ws), masks (B, K, hs, ws))`` returns
    ``dense (B, embed_dim, h, w)`` and ``sparse (B, 3, embed_dim)`` (tokens: foreground
    prototype, background prototype, query self-prototype).
    """

    num_tokens = 3
    num_maps = 4

    def __init__(self, feat_dim: int, embed_dim: int = 256, hidden_dim: int = 64) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.dense = nn.Sequential(
            nn.Conv2d(self.num_maps, hidden_dim, kernel_size=3, padding=1),
            LayerNorm2d(hidden_dim),
            nn.GELU(),
            nn.Conv2d(hidden_dim, embed_dim, kernel_size=1),
        )
        self.token_mlp = nn.Sequential(
            nn.Linear(feat_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim)
        )
        self.token_type = nn.Parameter(torch.randn(self.num_tokens, embed_dim) * 0.02)

    def similarity_maps(
        self, query: Tensor, support: Tensor, masks: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Returns ``maps`` (B, 4, h, w) and ``prototypes`` (B, 3, C).

        Maps: cos-sim to the fg prototype, cos-sim to the bg prototype, raw prior, normalised
        prior. Prototypes: fg, bg, query self-prototype.
        """
        fg = masked_average(support, masks)  # (B, C)
        bg = masked_average(support, 1.0 - masks)  # (B, C)
        q_n = F.normalize(query, dim=1, eps=_EPS)
        fg_sim = torch.einsum("bchw,bc->bhw", q_n, F.normalize(fg, dim=1, eps=_EPS)).unsqueeze(1)
        bg_sim = torch.einsum("bchw,bc->bhw", q_n, F.normalize(bg, dim=1, eps=_EPS)).unsqueeze(1)
        prior = prior_map(query, support, masks)
        prior_n = _minmax(prior)
        self_proto = masked_average(query.unsqueeze(1), prior_n)  # (B, C)
        maps = torch.cat([fg_sim, bg_sim, prior, prior_n], dim=1)
        return maps, torch.stack([fg, bg, self_proto], dim=1)

    def forward(self, query: Tensor, support: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, C, h, w), support (B, K, C, hs, ws), masks (B, K, hs, ws) ->
        (dense (B, E, h, w), sparse (B, 3, E))."""
        b, c, _, _ = query.shape
        bs, k, cs, hs, ws = support.shape
        if (bs, cs) != (b, c) or c != self.feat_dim or masks.shape != (b, k, hs, ws):
            raise ValueError(
                f"shape mismatch: query {tuple(query.shape)}, support {tuple(support.shape)}, "
                f"masks {tuple(masks.shape)}, feat_dim {self.feat_dim}"
            )
        maps, protos = self.similarity_maps(query, support, masks.to(query.dtype))
        sparse = self.token_mlp(protos) + self.token_type.unsqueeze(0)
        return self.dense(maps), sparse
