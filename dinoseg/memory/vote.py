"""The memory as a mode of any model: per query, retrieve labelled images of the class and let
every query patch vote with its nearest labelled patches (support + retrieved), then mix the vote
with the model's own probability.

:class:`MemoryMode` holds the measured choices (README, "Support memory"); the predictor
(:meth:`dinoseg.predictor.FewShotPredictor.attach_memory`) calls :func:`memory_vote` once per
query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dinoseg.memory.encoder import global_descriptor
from dinoseg.memory.store import SupportMemory
from dinoseg.models.knn import DEFAULT_NEIGHBOURS, DEFAULT_TEMPERATURE, knn_vote, prob_to_logits
from dinoseg.preprocess import Geometry


@dataclass(frozen=True)
class MemoryMode:
    """How a predictor uses a support memory.

    Attributes:
        images: labelled images retrieved per query (``None`` = every image of the class).
        neighbours: k, labelled patches per query patch in the vote.
        temperature: softmax temperature of the vote.
        weight: the vote's share of the fused probability (1 = the vote alone, the model's own
            output ignored; 0 = the model alone).
        balance: class-balanced vote strength (:func:`dinoseg.models.knn.knn_vote`).
    """

    images: int | None = 30
    neighbours: int = DEFAULT_NEIGHBOURS
    temperature: float = DEFAULT_TEMPERATURE
    weight: float = 0.75
    balance: float = 0.5

    def __post_init__(self) -> None:
        if self.images is not None and self.images < 0:
            raise ValueError(f"images={self.images}: give 0 or more (None = all)")
        if self.neighbours < 1 or self.temperature <= 0 or not 0.0 <= self.weight <= 1.0:
            raise ValueError("neighbours >= 1, temperature > 0 and 0 <= weight <= 1 are needed")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mix_vote(logit: Tensor, vote: Tensor, weight: float) -> Tensor:
    """``weight * vote + (1 - weight) * sigmoid(logit)`` as log-odds.

    Args:
        logit: (1, h', w') the model's logits for one query.
        vote: (h, w) the vote's probabilities (resampled bilinearly to (h', w')).
    """
    vote = vote.to(logit.device)  # the vote runs where the memory is (the CPU)
    vote = F.interpolate(vote[None, None], size=logit.shape[-2:], mode="bilinear")[0]
    return prob_to_logits(weight * vote + (1 - weight) * torch.sigmoid(logit.float()))


def memory_vote(
    query: Tensor,
    geom: Geometry,
    support: tuple[Tensor, Tensor],
    memory: SupportMemory,
    class_name: str,
    mode: MemoryMode,
    exclude: Iterable[str],
) -> tuple[Tensor | None, list[str]]:
    """One query's vote over its support and the retrieved images' labelled patches.

    Args:
        query: (C, h, w) the query's features of the memory's block.
        geom: the query's geometry (the descriptor leaves the padding out).
        support: the support's keys (N_s, C) unit vectors and values (N_s,) fractions
            (:func:`dinoseg.models.knn.support_keys`).
        memory: where to retrieve from; ``class_name`` the class asked for.
        exclude: image hashes never retrieved (the query itself, the supports).

    Returns:
        ``(prob (h, w) or None, retrieved hashes)``; ``None`` when nothing was retrieved
        (the model's output then stands alone).
    """
    c, h, w = query.shape
    descriptor = global_descriptor(query, geom, memory.settings.patch)
    hashes = memory.retrieve(descriptor, class_name, mode.images, exclude=exclude)
    if not hashes:
        return None, []
    m_keys, m_values = memory.patches(hashes, class_name)
    s_keys, s_values = support
    keys = torch.cat([s_keys.to(m_keys.dtype), m_keys])
    values = torch.cat([s_values.float(), m_values])
    prob = knn_vote(
        query.reshape(c, -1).T, keys, values,
        k=mode.neighbours, temperature=mode.temperature, balance=mode.balance,
    )  # fmt: skip
    return prob.view(h, w), hashes
