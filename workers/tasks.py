"""The Celery tasks (names and payloads are the contract with the webapp; JSON only).

- ``dinoseg.segment(request)`` -> ``{"model_version", "notice", "results": [...]}``
- ``dinoseg.queue_for_review(result_id)`` -> ``{"status", "task_id"}``; status is ``queued``,
  ``outbox`` (Label Studio down: delivered later) or ``duplicate``
- ``dinoseg.flush_outbox()`` -> ``{"delivered", "pending"}`` (periodic)
- ``dinoseg.sync_annotations()`` -> ``{"new_labels", "retrain_queued", "skipped"}`` (periodic)
- ``dinoseg.retrain()`` -> ``{"returncode", "seconds", ...}`` (``dvc repro``, one at a time)
- ``dinoseg.status()`` -> ``{"model_version", "review_queue_depth", "outbox_depth",
  "label_studio_url"}``

Bad input raises :class:`dinoseg.io.InputError` (no retry; the caller shows the message).
Transient failures (registry down with no model loaded, a locked SQLite file) retry with
exponential backoff.
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

from celery import Task
from celery.signals import worker_init

from dinoseg import runtime
from workers.app import app
from workers.config import review_config, worker_config
from workers.labelstudio import client as ls
from workers.labelstudio import review as rv
from workers.labelstudio.outbox import Outbox
from workers.labelstudio.sync import sync
from workers.models import ModelHolder, TransientError

log = logging.getLogger(__name__)
WARM_IMPORTS = (
    "transformers.models.auto.modeling_auto",
    "transformers.models.dinov2.modeling_dinov2",
    "dinoseg.models.prototype",
    "dinoseg.checkpoint",
)
TRANSIENT = (TransientError, sqlite3.OperationalError, ConnectionError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 60,
         "retry_jitter": True, "max_retries": 5}  # fmt: skip


class ServingTask(Task):  # type: ignore[misc]
    """Task base giving access to this worker process's model holder.

    The holder lives on this base class, so every task of the process (``segment``,
    ``status``) shares it; it is built at the first request, in the pool process.
    """

    _holder: ModelHolder | None = None

    @property
    def holder(self) -> ModelHolder:
        if ServingTask._holder is None:
            ServingTask._holder = ModelHolder(worker_config())
        return ServingTask._holder


@worker_init.connect(weak=False)
def _warm_imports(**_: Any) -> None:
    """Import the model code once in the main process, before the pool forks (its children
    then start serving in a fraction of a second instead of re-importing transformers)."""
    for module in WARM_IMPORTS:
        importlib.import_module(module)


def _review() -> rv.Review:
    return rv.Review(review_config(), Outbox())


@app.task(name="dinoseg.segment", base=ServingTask, bind=True, soft_time_limit=240,
          time_limit=300, **RETRY)  # fmt: skip
def segment(self: ServingTask, request: dict[str, Any]) -> dict[str, Any]:
    from workers.segment import run_segment

    config = review_config()
    reply = run_segment(request, self.holder, config.confidence_threshold)
    if config.auto_queue:
        review = None
        for r in reply["results"]:
            if r["needs_review"]:
                review = review or _review()
                rv.enqueue(review, r["id"])  # in the outbox first: durable whatever happens next
                _send_or_leave_in_outbox(r["id"])
    return reply


def _send_or_leave_in_outbox(result_id: str) -> None:
    """Ask a worker to deliver the review item now; with the broker unreachable the item
    simply waits in the outbox for the periodic ``flush_outbox`` (the result is not failed)."""
    from kombu.exceptions import OperationalError

    try:
        queue_for_review.delay(result_id)
    except (OperationalError, ConnectionError) as e:
        log.warning("broker unreachable (%s): review item %s waits in the outbox", e, result_id)


@app.task(name="dinoseg.queue_for_review", soft_time_limit=60, time_limit=90, **RETRY)
def queue_for_review(result_id: str) -> dict[str, Any]:
    return rv.queue(_review(), result_id)


@app.task(name="dinoseg.flush_outbox", soft_time_limit=240, time_limit=300, **RETRY)
def flush_outbox() -> dict[str, int]:
    return rv.flush(_review())


@app.task(name="dinoseg.sync_annotations", soft_time_limit=540, time_limit=600)
def sync_annotations() -> dict[str, Any]:
    config = review_config()
    review = rv.Review(config, Outbox())
    try:
        report = sync(review, Path(config.labels_dir)).as_dict()
    except ls.Unavailable as e:
        return {"new_labels": 0, "retrain_queued": False, "skipped": [], "error": str(e)}
    queued = review.outbox.take_retrain(config.retrain_after)
    if queued:
        retrain.delay()
    return {**report, "retrain_queued": queued}


@app.task(name="dinoseg.retrain", acks_late=False, soft_time_limit=6 * 3600 - 60,
          time_limit=6 * 3600)  # fmt: skip
def retrain() -> dict[str, Any]:
    from workers.retrain import run_retrain

    return run_retrain(wait=3 * 3600, timeout=6 * 3600 - 120)


@app.task(name="dinoseg.status", base=ServingTask, bind=True, soft_time_limit=30, time_limit=60)
def status(self: ServingTask) -> dict[str, Any]:
    outbox = Outbox()
    holder = self.holder
    return {
        "model_version": holder.last_version,
        "review_queue_depth": outbox.awaiting_annotation(),
        "outbox_depth": outbox.depth(),
        "label_studio_url": runtime.label_studio_url(),
    }
