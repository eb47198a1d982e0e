"""The dense nearest-neighbour vote over labelled patches (retrieval-based in-context
segmentation, as in "Hummingbird", Balažević et al. 2023).

Each query patch finds its ``k`` most similar labelled patches (cosine similarity of block
features) and takes their softmax-weighted vote of foreground fractions::

    p(q) = sum_i softmax(cos(q, key_i) / temperature)_i * value_i      over the k nearest keys

The keys are the support's patches (value = the support mask's cover of the patch) and, with a
support memory (:mod:`dinoseg.memory`), the patches of the retrieved labelled images (value =
the patch's fraction of the class). :class:`KnnVote` is the training-free model of the registry
(``knn``) that votes over the support alone; the predictor adds the memory's patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinoseg.models.prototype import masks_to_grid

#: Measured defaults (README, "Support memory"; chosen on train-split episodes).
DEFAULT_NEIGHBOURS = 5
DEFAULT_TEMPERATURE = 0.02
#: Keys compared per matrix product (bounds the similarity matrix: P x chunk floats).
KEY_CHUNK = 32768
_EPS = 1e-4


def nearest_keys(query: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` most similar keys of every query row, computed over key chunks.

    Args:
        query: (P, C) L2-normalised float32.
        keys: (N, C) L2-normalised (any float dtype; compared in float32).
        k: neighbours (at most N are returned).

    Returns:
        ``(similarities (P, k'), indices (P, k'))`` with ``k' = min(k, N)``, best first.
    """
    k = min(k, keys.shape[0])
    best_s, best_i = [], []
    for start in range(0, keys.shape[0], KEY_CHUNK):
        chunk = keys[start : start + KEY_CHUNK].float()
        s, i = (query @ chunk.T).topk(min(k, chunk.shape[0]), dim=1)
        best_s.append(s)
        best_i.append(i + start)
    sims, idx = torch.cat(best_s, 1), torch.cat(best_i, 1)
    top, pos = sims.topk(k, dim=1)
    return top, idx.gather(1, pos)


def knn_vote(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    *,
    k: int = DEFAULT_NEIGHBOURS,
    temperature: float = DEFAULT_TEMPERATURE,
    balance: float = 0.0,
) -> Tensor:
    """Foreground probability of each query patch by the softmax vote of its nearest keys.

    Args:
        query: (P, C) features (normalised here).
        keys: (N, C) labelled patch features (normalised by the caller, any float dtype).
        values: (N,) foreground fractions in [0, 1].
        k: neighbours per query patch.
        temperature: softmax temperature on cosine similarities.
        balance: 0 = plain vote; 1 = divide each side's vote by its share of the keys (a
            class-balanced vote: a rare class is not outvoted by its surroundings); between =
            that prior raised to ``balance``.

    Returns:
        (P,) probabilities in [0, 1].
    """
    q = F.normalize(query.float(), dim=1)
    sims, idx = nearest_keys(q, keys, k)
    weights = torch.softmax(sims / temperature, dim=1)
    v = values.float()[idx]  # (P, k)
    fg = (weights * v).sum(1)
    if balance <= 0:
        return fg.clamp(0.0, 1.0)
    prior = values.float().mean().clamp(_EPS, 1 - _EPS)
    fg_w = fg / prior**balance
    bg_w = (1 - fg).clamp_min(0) / (1 - prior) ** balance
    return fg_w / (fg_w + bg_w).clamp_min(1e-12)


def prob_to_logits(prob: Tensor) -> Tensor:
    """Probabilities -> log-odds, clamped to +-log((1 - 1e-4) / 1e-4)."""
    p = prob.clamp(_EPS, 1 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def support_keys(support: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """The support's labelled patches as vote keys.

    Args:
        support: (K, C, h, w) features of one layer.
        masks: (K, H, W) foreground masks in [0, 1] (any resolution; area-pooled to the grid).

    Returns:
        keys (K*h*w, C) L2-normalised float32 and values (K*h*w,) foreground fractions.
    """
    _, c, h, w = support.shape
    grid = masks_to_grid(masks[None].float(), (h, w))[0]  # (K, h, w)
    keys = F.normalize(support.float().permute(0, 2, 3, 1).reshape(-1, c), dim=1)
    return keys, grid.reshape(-1)


class KnnVote(nn.Module):
    """Training-free model: the nearest-neighbour vote over the support's patches.

    Args:
        neighbours: k, labelled patches per query patch.
        temperature: softmax temperature of the vote.
        balance: class-balanced vote strength (see :func:`knn_vote`).
        embed_layer: index into the feature list (default the last, i.e. block 10).
    """

    def __init__(
        self,
        *,
        neighbours: int = DEFAULT_NEIGHBOURS,
        temperature: float = DEFAULT_TEMPERATURE,
        balance: float = 0.0,
        embed_layer: int = -1,
    ):
        super().__init__()
        if neighbours < 1 or temperature <= 0:
            raise ValueError("neighbours must be >= 1 and temperature > 0")
        self.neighbours, self.temperature = neighbours, temperature
        self.balance, self.embed_layer = balance, embed_layer

    def forward(
        self, query_feats: list[Tensor], support_feats: list[Tensor], support_masks: Tensor
    ) -> Tensor:
        """
        Args:
            query_feats: L tensors (B, C, h, w).
            support_feats: L tensors (B, K, C, hs, ws).
            support_masks: (B, K, Hs, Ws) foreground masks in [0, 1].

        Returns:
            (B, 1, h, w) foreground logits.
        """
        q, s = query_feats[self.embed_layer], support_feats[self.embed_layer]
        b, c, h, w = q.shape
        out = []
        for j in range(b):
            keys, values = support_keys(s[j], support_masks[j])
            prob = knn_vote(
                q[j].reshape(c, -1).T, keys, values,
                k=self.neighbours, temperature=self.temperature, balance=self.balance,
            )  # fmt: skip
            out.append(prob_to_logits(prob).view(1, h, w))
        return torch.stack(out)
