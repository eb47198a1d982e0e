"""The evaluation protocol: several models on the same seeded episodes, one shared feature cache.

:func:`evaluate` is the library entry point (the ``dinoseg eval`` command, the pipeline and bench/
call it); it returns a JSON-ready report plus a few example episodes for pictures
(:mod:`dinoseg.eval.report` writes both). Models are named predictors: a variant to compare (other
weights, backbone, image size, support memory ...) is one more named entry, and every entry sees
exactly the same episodes. Per episode and model: ``set_support(supports, masks == 1,
class_name=<the episode class's name>)``, ``predict([query])``, then the meter update. A model
with a support memory attached (:meth:`~dinoseg.predictor.FewShotPredictor.attach_memory`)
retrieves labelled images of the episode's class per query; the episode's own query and its
supports are never retrieved (excluded by content hash), so the same episodes run with and
without a memory.

Timing per model: ``seconds_per_episode`` covers ``set_support`` + ``predict``; its encoder
share (``encoder_seconds_per_episode``: hashing, cache look-ups and the backbone on misses) is
measured apart from the rest (``model_seconds_per_episode``: preprocessing, the few-shot model,
upsampling, confidence). Models after the first one find the episode's features cached, so
their encoder share is close to zero; ``feature_cache.encoder_seconds_per_image`` is the cost
of one uncached image.

Report layout (rates in percent, as :meth:`SegmentationMeter.summary`)::

    settings   shots, episodes, seed, min_area, classes, class_names, skipped_classes,
               image_size, backbone {spec, layers} (a name -> value map where models differ),
               + the caller's extras (data, split, fold ...)
    models     name -> {model_id, backbone, image_size, threshold, memory (None or
                        {root, version, images, encoder, mode}),
                        metrics (SegmentationMeter.summary()), timing, episodes}
    timing     wall_seconds, data_seconds_per_episode
    feature_cache  hits / misses / encoder seconds
    calibration    {"correct_iou": 0.5}: an episode is correct when its IoU (a fraction) >= it

``models[name]["episodes"]`` lists ``{episode, class_id, query, iou, confidence}`` per episode:
``iou`` is that episode's foreground IoU as a fraction in [0, 1] (ignore pixels excluded).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dinoseg.data.episodes import Episode
from dinoseg.feature_cache import CachedPredictor, FeatureCache
from dinoseg.io import InputError
from dinoseg.metrics import IGNORE, SegmentationMeter
from dinoseg.predictor import FewShotPredictor, Prediction

#: An episode counts as correct when its IoU (fraction) is at least this.
CORRECT_IOU = 0.5


class Episodes(Protocol):
    """What :func:`evaluate` reads from its episodes: a fixed, indexable list and how it was drawn
    (:class:`~dinoseg.data.episodes.EpisodeSampler`, the pipeline's listed episodes)."""

    shots: int
    seed: int
    min_area: float
    class_order: tuple[int, ...]
    skipped: dict[int, int]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Episode: ...


def parse_classes(text: str, class_names: Mapping[int, str]) -> list[int]:
    """``"sky,3,car"`` -> class ids; names and ids may be mixed."""
    by_name = {n.lower(): c for c, n in class_names.items()}
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item.isdigit() and int(item) in class_names:
            out.append(int(item))
        elif item.lower() in by_name:
            out.append(by_name[item.lower()])
        else:
            known = ", ".join(f"{n} ({c})" for c, n in sorted(class_names.items()))
            raise InputError(f"unknown class {item!r}; this dataset has {known}")
    return sorted(set(out))


def episode_iou(pred: np.ndarray, target: np.ndarray) -> float | None:
    """Foreground IoU of one episode as a fraction; ``target`` 255 pixels are ignored.

    Args:
        pred: (H, W) bool.
        target: (H, W) uint8, 1 = class, 0 = background, 255 = ignore.
    """
    valid = target != IGNORE
    p, gt = pred & valid, target == 1
    union = np.count_nonzero(p | gt)
    return None if union == 0 else np.count_nonzero(p & gt) / union


@dataclass
class Example:
    """One episode kept for pictures: first support, query, and each model's mask.

    Arrays: images (H, W, 3) uint8; ``support_mask`` and predictions (H, W) bool;
    ``query_mask`` (H, W) uint8 in the episode coding (1 / 0 / 255).
    """

    episode: int
    class_name: str
    support_image: np.ndarray
    support_mask: np.ndarray
    query_image: np.ndarray
    query_mask: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvalResult:
    """:func:`evaluate`'s output: the JSON-ready ``report`` and pictures' material."""

    report: dict[str, Any]
    examples: list[Example]


@dataclass
class _ModelRun:
    predictor: CachedPredictor
    meter: SegmentationMeter
    episodes: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def run(self, ep: Episode, index: int) -> Prediction:
        start = time.perf_counter()
        name = self.meter.class_names.get(ep["class_id"], str(ep["class_id"]))
        masks = [m == 1 for m in ep["support_masks"]]
        self.predictor.set_support(ep["support_images"], masks, class_name=name)
        pred = self.predictor.predict([ep["query_image"]])[0]
        self.seconds += time.perf_counter() - start
        self.meter.update(pred.mask, ep["query_mask"], ep["class_id"])
        iou = episode_iou(pred.mask, ep["query_mask"])
        p = self.predictor
        self.episodes.append({
            "episode": index, "class_id": ep["class_id"], "query": ep["query_name"],
            "iou": None if iou is None else round(iou, 6),
            "confidence": round(pred.confidence, 6),
            **({"retrieved": len(pred.retrieved)} if p.memory is not None else {}),
        })  # fmt: skip
        return pred

    def report(self, n: int) -> dict[str, Any]:
        p = self.predictor
        encoder = p.encode_seconds
        return {
            "model_id": p.model_id,
            "backbone": {"spec": p.backbone.spec, "layers": list(p.backbone.layers)},
            "image_size": p.image_size,
            "threshold": p.threshold,
            "memory": _memory_info(p),
            "metrics": self.meter.summary(),
            "timing": {
                "seconds": self.seconds,
                "seconds_per_episode": self.seconds / n,
                "encoder_seconds_per_episode": encoder / n,
                "model_seconds_per_episode": (self.seconds - encoder) / n,
            },
            "episodes": self.episodes,
        }


def _memory_info(p: FewShotPredictor) -> dict[str, Any] | None:
    m = p.memory
    if m is None:
        return None
    return {
        "root": str(m.root), "version": m.version, "images": len(m),
        "encoder": m.settings.as_dict(), "mode": p.memory_mode.as_dict(),
    }  # fmt: skip


def _example(ep: Episode, index: int, class_names: Mapping[int, str]) -> Example:
    return Example(
        episode=index,
        class_name=class_names.get(ep["class_id"], str(ep["class_id"])),
        support_image=ep["support_images"][0],
        support_mask=ep["support_masks"][0] == 1,
        query_image=ep["query_image"],
        query_mask=ep["query_mask"],
    )


def _common(values: Mapping[str, Any]) -> Any:
    """The value every model shares, else the name -> value map."""
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    return next(iter(values.values())) if len(distinct) == 1 else dict(values)


def _settings(
    sampler: Episodes, names: Mapping[int, str], runs: Mapping[str, _ModelRun]
) -> dict[str, Any]:
    classes = sorted(sampler.class_order)
    backbones = {
        n: {"spec": r.predictor.backbone.spec, "layers": list(r.predictor.backbone.layers)}
        for n, r in runs.items()
    }
    return {
        "shots": sampler.shots,
        "episodes": len(sampler),
        "seed": sampler.seed,
        "min_area": sampler.min_area,
        "classes": classes,
        "class_names": {str(c): names.get(c, str(c)) for c in classes},
        "skipped_classes": {str(c): k for c, k in sampler.skipped.items()},
        "image_size": _common({n: r.predictor.image_size for n, r in runs.items()}),
        "backbone": _common(backbones),
    }


def _run_episodes(
    runs: Mapping[str, _ModelRun],
    sampler: Episodes,
    names: Mapping[int, str],
    n_examples: int,
    progress: bool,
) -> tuple[list[Example], float]:
    """Every model on every episode, in episode order; returns the examples kept and the
    seconds spent loading episodes."""
    from tqdm import tqdm

    examples: list[Example] = []
    data_seconds = 0.0
    bar = tqdm(range(len(sampler)), desc="eval", unit="ep", file=sys.stderr, disable=not progress)
    for i in bar:
        t0 = time.perf_counter()
        ep = sampler[i]
        data_seconds += time.perf_counter() - t0
        example = _example(ep, i, names) if i < n_examples else None
        for name, run in runs.items():
            pred = run.run(ep, i)
            if example is not None:
                example.predictions[name] = pred.mask
        if example is not None:
            examples.append(example)
    return examples, data_seconds


def _cached(p: FewShotPredictor, cache: FeatureCache) -> CachedPredictor:
    """``p`` through ``cache``; a :class:`CachedPredictor` (subclass) on that cache as it is,
    and a served predictor (:class:`dinoseg.served.ServedPredictor`: few-shot side and head
    already share a cache of their own) as it is."""
    from dinoseg.served import ServedPredictor

    if (isinstance(p, CachedPredictor) and p.cache is cache) or isinstance(p, ServedPredictor):
        return p  # type: ignore[return-value]
    return CachedPredictor(p, cache)


def evaluate(
    models: Mapping[str, FewShotPredictor],
    sampler: Episodes,
    *,
    class_names: Mapping[int, str] | None = None,
    cache: FeatureCache | None = None,
    settings: Mapping[str, Any] | None = None,
    n_examples: int = 3,
    progress: bool = True,
) -> EvalResult:
    """Run every model on every episode of ``sampler``.

    Args:
        models: name -> predictor (any backbone; predictors sharing one share cache entries);
            the report keeps this order. Each runs as a :class:`CachedPredictor` copy on
            ``cache``, unless it already is one on ``cache`` (a subclass keeps its behaviour).
        sampler: the episodes; all models see exactly the same ones.
        class_names: class id -> name for the report.
        cache: feature cache (default: a fresh in-memory one); pass one with a ``disk_dir``
            to reuse features across runs.
        settings: extra entries for ``report["settings"]`` (data path, split, fold ...).
        n_examples: how many leading episodes to keep as :class:`Example`.
        progress: show a tqdm bar on stderr.
    """
    if not models:
        raise InputError("give at least one model to evaluate")
    names = dict(class_names or {})
    cache = cache if cache is not None else FeatureCache()
    runs = {
        name: _ModelRun(_cached(p, cache), SegmentationMeter(class_names=names))
        for name, p in models.items()
    }
    n, start = len(sampler), time.perf_counter()
    examples, data_seconds = _run_episodes(runs, sampler, names, n_examples, progress)
    wall = time.perf_counter() - start
    report = {
        "settings": {**_settings(sampler, names, runs), **dict(settings or {})},
        "models": {name: run.report(n) for name, run in runs.items()},
        "timing": {"wall_seconds": wall, "data_seconds_per_episode": data_seconds / n},
        "feature_cache": cache.stats.as_dict(),
        "calibration": {"correct_iou": CORRECT_IOU},
    }
    return EvalResult(report=report, examples=examples)
