"""Learners side by side on the same seeded episodes, each told the episode's class by name.

:func:`dinoseg.eval.protocol.evaluate` runs few-shot predictors, which see an episode through
its support; a supervised head ignores the support and needs the class *name*, which a
segmenter's forward never receives. :func:`compare` runs both kinds on the same
:class:`~dinoseg.data.episodes.EpisodeSampler` with the same meter
(:class:`~dinoseg.metrics.SegmentationMeter`): a learner is any ``prob(episode, class_name) ->
(H, W) probability of the query``; few-shot predictors go in through :func:`fewshot_learner`
(``set_support`` with the class name, so an attached support memory is used, then
``predict``), heads through :func:`head_learner`. Fusions mix two learners' probabilities per
episode (each learner runs once). A few-shot predictor gives exactly the masks it gives under
``evaluate`` (same episodes, same calls), so the figures are comparable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dinoseg.data.classnames import normalize_class_name
from dinoseg.data.episodes import Episode
from dinoseg.eval.protocol import Episodes
from dinoseg.heads.predict import HeadPredictor
from dinoseg.io import InputError
from dinoseg.metrics import SegmentationMeter
from dinoseg.predictor import FewShotPredictor

#: ``prob(episode, class_name) -> (H, W) float32`` foreground probability of the query.
ProbFn = Callable[[Episode, str], np.ndarray]


@dataclass(frozen=True)
class Fusion:
    """``weight * p[a] + (1 - weight) * p[b]``, two learners' probabilities averaged."""

    a: str
    b: str
    weight: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise InputError(f"fusion weight {self.weight}: give a value in [0, 1]")


def fewshot_learner(predictor: FewShotPredictor) -> ProbFn:
    """A few-shot predictor as a learner: support (with the class name) then the query."""

    def prob(ep: Episode, class_name: str) -> np.ndarray:
        masks = [m == 1 for m in ep["support_masks"]]
        predictor.set_support(ep["support_images"], masks, class_name=class_name)
        return predictor.predict([ep["query_image"]])[0].prob

    return prob


def head_learner(head: HeadPredictor) -> ProbFn:
    """A head as a learner: the class's probability on the query (the support is unused)."""
    return lambda ep, class_name: head.prob([ep["query_image"]], class_name)[0]


def compare(
    learners: Mapping[str, ProbFn],
    sampler: Episodes,
    class_names: Mapping[int, str],
    *,
    fusions: Mapping[str, Fusion] | None = None,
    thresholds: Mapping[str, float] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Every learner (and fusion) on every episode of ``sampler``.

    Args:
        learners: name -> :data:`ProbFn`.
        sampler: the episodes.
        class_names: class id -> name (names are normalised before learners see them).
        fusions: name -> :class:`Fusion` of two learners.
        thresholds: name -> foreground threshold (default 0.5).

    Returns:
        ``{"models": {name: SegmentationMeter.summary() + {"seconds"}}, "episodes": n}``.
    """
    from tqdm import tqdm

    fusions = dict(fusions or {})
    thresholds = dict(thresholds or {})
    for name, f in fusions.items():
        if f.a not in learners or f.b not in learners:
            raise InputError(f"fusion {name}: {f.a!r} and {f.b!r} must both be learners")
    names = dict(class_names)
    meters = {n: SegmentationMeter(class_names=names) for n in [*learners, *fusions]}
    seconds = dict.fromkeys(learners, 0.0)
    for i in tqdm(range(len(sampler)), desc="compare", file=sys.stderr, disable=not progress):
        ep = sampler[i]
        cls = normalize_class_name(names.get(ep["class_id"], str(ep["class_id"])))
        probs = {}
        for n, fn in learners.items():
            start = time.perf_counter()
            probs[n] = fn(ep, cls)
            seconds[n] += time.perf_counter() - start
        for n, f in fusions.items():
            probs[n] = f.weight * probs[f.a] + (1.0 - f.weight) * probs[f.b]
        for n, p in probs.items():
            meters[n].update(p > thresholds.get(n, 0.5), ep["query_mask"], ep["class_id"])
    models = {n: {**m.summary(), "seconds": seconds.get(n)} for n, m in meters.items()}
    return {"models": models, "episodes": len(sampler)}
