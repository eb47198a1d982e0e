"""Which segmentation results go to the annotators in a round.

- ``uncertainty``: the ``budget`` least confident results;
- ``balanced``: the least confident results, taken in turn from each class (the least
  confident of every class, then the second least confident of every class, ...). Plain
  ``uncertainty`` spent every label of a round on the classes the model is worst at (CamVid:
  sign and pedestrian, <= 8 IoU for every method) and none on sky or road: 30 labels moved the
  4-class test mIoU from 33.8 to 34.0 (seed 0; docs/training-notes.md);
- ``random``: ``budget`` results drawn uniformly (seeded); the measured winner and the default
  of ``dinoseg loop simulate`` (README, "The loop, measured": 3 seeds, chosen on the first half
  of the test frames);
- ``diverse``: among the ``3 * budget`` least confident, a greedy k-center cover of their
  global DINOv2 descriptors (cosine distance), started at the least confident one, so the
  batch does not spend its labels on near-duplicate frames.

A result already labelled (same image and class) is never picked again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dinoseg.io import InputError


@dataclass(frozen=True)
class Candidate:
    """A segmentation result the annotators could fix.

    Attributes:
        result_id: the record in the results store.
        image: a key of the query image (its content hash).
        class_name: the class the request asked for.
        confidence: the model's confidence in [0, 1].
        query: the query image's path (its descriptor, for ``diverse``).
    """

    result_id: str
    image: str
    class_name: str
    confidence: float
    query: str = ""


#: the global descriptor (C,) of a query image path (``diverse`` only)
Describe = Callable[[str], np.ndarray]
Pick = Callable[[Sequence[Candidate], int, np.random.Generator, Describe | None],
                list[Candidate]]


def uncertainty(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                describe: Describe | None = None) -> list[Candidate]:  # fmt: skip
    return sorted(cands, key=lambda c: (c.confidence, c.result_id))[:budget]


def balanced(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
             describe: Describe | None = None) -> list[Candidate]:  # fmt: skip
    queues: dict[str, list[Candidate]] = {}
    for c in sorted(cands, key=lambda c: (c.confidence, c.result_id)):
        queues.setdefault(c.class_name, []).append(c)
    ranked = sorted(  # (rank within its class, confidence): a round-robin over the classes
        ((rank, c.confidence, c.result_id), c)
        for queue in queues.values() for rank, c in enumerate(queue)
    )  # fmt: skip
    return [c for _, c in ranked[:budget]]


def random_pick(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                describe: Describe | None = None) -> list[Candidate]:  # fmt: skip
    order = rng.permutation(len(cands))[:budget]
    return [cands[i] for i in sorted(order)]


def diverse(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
            describe: Describe | None = None) -> list[Candidate]:  # fmt: skip
    pool = uncertainty(cands, 3 * budget, rng)
    if len(pool) <= budget:
        return pool
    if describe is None:
        raise InputError("the diverse strategy needs image descriptors")
    feats = np.stack([np.asarray(describe(c.query), np.float64) for c in pool])
    feats /= np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12
    chosen = [0]
    dist = 1.0 - feats @ feats[0]
    while len(chosen) < budget:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - feats @ feats[nxt])
    return [pool[i] for i in chosen]


STRATEGIES: dict[str, Pick] = {"uncertainty": uncertainty, "balanced": balanced,
                               "random": random_pick, "diverse": diverse}  # fmt: skip


def pick(name: str, cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
         done: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
         describe: Describe | None = None) -> list[Candidate]:  # fmt: skip
    """``budget`` candidates by strategy ``name``, never an (image, class) in ``done``."""
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    if budget < 1:
        raise InputError(f"the budget must be at least 1, got {budget}")
    fresh = [c for c in cands if (c.image, c.class_name) not in done]
    return STRATEGIES[name](fresh, budget, rng, describe)
