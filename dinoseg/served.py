"""The served system: a few-shot predictor (with its support memory) and, for the classes it
serves, a supervised head on the same frozen features, fused.

A request that names a class the head was trained on with enough labels (``min_labels``,
measured: README "Served classes") gets ``weight * p_head + (1 - weight) * p_fewshot``,
thresholded at ``fused_threshold``; every other request gets the few-shot predictor's answer
unchanged. Both read the image's features through one :class:`FeatureCache`, so the backbone
runs once per image. Serving, the pipeline's evaluation and the loop simulation all use
:func:`load_served`, so what is measured is what is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dinoseg.confidence import mask_confidence
from dinoseg.feature_cache import CachedPredictor, FeatureCache
from dinoseg.heads.predict import FUSION_THRESHOLD, FUSION_WEIGHT, SWITCH_LABELS, HeadPredictor
from dinoseg.modelspec import parse_model_spec, resolve_model_spec
from dinoseg.predictor import FewShotPredictor, Prediction, load_predictor

#: the sub-directory of a checkpoint that holds its head (a head checkpoint directory)
HEAD_DIR = "head"


class ServedPredictor:
    """A few-shot predictor and an optional head behind the predictor interface.

    Args:
        fewshot: the few-shot predictor (its support memory attached or not).
        head: the supervised head, or None.
        min_labels: labelled images of a class from which the head answers for it.
        weight: the head's share of the fused probability.
        fused_threshold: the threshold of the fused probability.
    """

    def __init__(self, fewshot: FewShotPredictor, head: HeadPredictor | None = None, *,
                 min_labels: int = SWITCH_LABELS, weight: float = FUSION_WEIGHT,
                 fused_threshold: float = FUSION_THRESHOLD):  # fmt: skip
        self.fewshot, self.head = fewshot, head
        self.min_labels, self.weight, self.fused_threshold = min_labels, weight, fused_threshold

    def __getattr__(self, name: str) -> Any:  # backbone, image_size, memory, uses_memory ...
        return getattr(self.__dict__["fewshot"], name)

    @property
    def model_id(self) -> str:
        return self.fewshot.model_id

    @model_id.setter
    def model_id(self, value: str) -> None:
        self.fewshot.model_id = value

    @property
    def threshold(self) -> float:
        return self.fewshot.threshold

    def serves(self, class_name: str | None) -> bool:
        """Whether the head answers (with the few-shot side) for ``class_name``."""
        return bool(class_name and self.head is not None
                    and self.head.serves(class_name, self.min_labels))  # fmt: skip

    def set_support(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                    class_name: str | None = None) -> None:  # fmt: skip
        """As :meth:`FewShotPredictor.set_support` (the class name also picks the head)."""
        self.fewshot.set_support(images, masks, class_name)

    def predict(self, queries: Sequence[np.ndarray]) -> list[Prediction]:
        """As :meth:`FewShotPredictor.predict`, fused with the head for the classes it serves."""
        preds = self.fewshot.predict(queries)
        name = self.fewshot.class_name
        if not self.serves(name):
            return preds
        assert self.head is not None and name is not None
        out = []
        for pred, head_prob in zip(preds, self.head.prob(queries, name), strict=True):
            prob = (self.weight * head_prob + (1 - self.weight) * pred.prob).astype(np.float32)
            thr = self.fused_threshold
            out.append(Prediction(prob > thr, prob, mask_confidence(prob, threshold=thr),
                                  pred.retrieved))  # fmt: skip
        return out


def load_served(
    model_spec: str = "prototype",
    *,
    backbone: str | None = None,
    layers: Sequence[int] | None = None,
    image_size: int | None = None,
    threshold: float | None = None,
    cache_bytes: int = 512 * 1024**2,
    head_dir: str | Path | None = None,
    cache: FeatureCache | None = None,
    device: str | torch.device | None = None,
) -> ServedPredictor:
    """The served predictor of a spec: :func:`load_predictor`'s, encoding through an in-memory
    feature cache (a repeated image is not encoded again), plus the checkpoint's head
    (``CKPT/head``, or ``head_dir``) on the same backbone and cache when it has one; ``cache``
    replaces the in-memory cache (e.g. one that also keeps features on disk); ``device`` is
    where both run (:func:`dinoseg.device.resolve_device`; the cache stays on the CPU)."""
    spec, model_id = parse_model_spec(model_spec), None
    if spec.is_registry:
        model_spec, model_id = resolve_model_spec(spec.text)
    fewshot = load_predictor(model_spec, backbone=backbone, layers=layers,
                             image_size=image_size, threshold=threshold, device=device)  # fmt: skip
    if model_id:
        fewshot.model_id = model_id
    cache = cache or FeatureCache(max_bytes=cache_bytes)
    head = None
    head_dir = Path(head_dir) if head_dir is not None else Path(model_spec) / HEAD_DIR
    if head_dir.is_dir():
        head = HeadPredictor.load(head_dir, fewshot.backbone, cache=cache,
                                  image_size=fewshot.image_size)  # fmt: skip
    return ServedPredictor(CachedPredictor(fewshot, cache), head)
