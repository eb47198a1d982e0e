"""Serving settings: code defaults <- ``params.yaml`` sections ``serving`` and ``review``.

The web app (in-process) and the Celery workers read the same sections, so both serve the same
model and flag the same results for review. The params file is ``./params.yaml`` in the working
directory (the project root, where ``dvc repro`` runs too); ``review`` is read per request, so
an edit applies without a restart. ``$DINOSEG_DEVICE`` (what ``dinoseg demo --device`` sets for
its services) overrides ``serving.device``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dinoseg.config import load_params, resolve

PARAMS_FILE = Path("params.yaml")
#: environment variable that overrides ``serving.device`` (set by ``dinoseg demo --device``)
DEVICE_ENV = "DINOSEG_DEVICE"


@dataclass
class ServingConfig:
    """``params.yaml: serving`` — the model a process serves.

    Attributes:
        model: model spec served by default (a request may name another).
        fallback_model: served, with a notice, when ``model`` cannot be resolved (no champion).
        backbone: backbone override ("" = the checkpoint's, else the packaged DINOv2-S).
        layers: backbone blocks override (empty = the checkpoint's / default).
        image_size: encoder long side override (0 = the checkpoint's / default).
        model_check_seconds: how often a worker re-resolves a registry spec (champion alias).
        memory: the support memory of requests that name a class: ``auto`` (built under the
            stack's home from the base dataset and the labels), a memory folder, "" = none.
        memory_images: labelled images of the class retrieved per query (0 = all).
        feature_cache_mb: frozen features kept in memory per model (a repeated image, or the
            head and the few-shot side of one request, are encoded once).
        device: where the model runs: ``auto`` (CUDA when present) | ``cpu`` | ``cuda[:N]`` |
            ``mps`` (:mod:`dinoseg.device`).
    """

    model: str = "models:/dinoseg-segmenter@champion"
    fallback_model: str = "prototype"
    backbone: str = ""
    layers: list[int] = field(default_factory=list)
    image_size: int = 0
    model_check_seconds: float = 30.0
    memory: str = "auto"
    memory_images: int = 30
    feature_cache_mb: int = 512
    device: str = "auto"


@dataclass
class ReviewConfig:
    """``params.yaml: review`` — when a mask goes to annotators and what comes back.

    Attributes:
        confidence_threshold: a result whose confidence is below this needs review.
        auto_queue: ``segment`` queues the results that need review itself.
        project_title: the Label Studio project (created once, found again by title).
        classes_from: dataset folder whose ``classes.json`` names the brush labels.
        labels_dir: where synced annotations land (dataset folder format).
        retrain_after: new labels that queue a ``retrain`` (0 = never by itself).
        sync_seconds: period of the annotation pull (Celery beat).
        outbox_seconds: period of the outbox delivery (Celery beat).
    """

    confidence_threshold: float = 0.9
    auto_queue: bool = True
    project_title: str = "dinoseg review"
    classes_from: str = "../shared/data/camvid"
    labels_dir: str = "data/labels"
    retrain_after: int = 10
    sync_seconds: float = 60.0
    outbox_seconds: float = 30.0


def _section(path: Path, name: str) -> dict[str, object]:
    return load_params(path, name) if path.is_file() else {}


def serving_config(path: Path = PARAMS_FILE, env: Mapping[str, str] | None = None
                   ) -> ServingConfig:  # fmt: skip
    """Resolved ``serving`` settings (defaults when there is no params file; ``device`` from
    ``$DINOSEG_DEVICE`` when it is set)."""
    section = _section(path, "serving")
    device = (os.environ if env is None else env).get(DEVICE_ENV, "").strip()
    return resolve(ServingConfig, {**section, "device": device} if device else section)


def review_config(path: Path = PARAMS_FILE) -> ReviewConfig:
    """Resolved ``review`` settings (defaults when there is no params file)."""
    return resolve(ReviewConfig, _section(path, "review"))


def known_classes(path: Path = PARAMS_FILE) -> list[str]:
    """The classes a request can name without creating one: the base dataset's
    (``review.classes_from``) and every class already labelled (``review.labels_dir``)."""
    from dinoseg.data.classnames import known_classes as of_folders

    review = review_config(path)
    return of_folders([review.classes_from, review.labels_dir])
