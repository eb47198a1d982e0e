"""The Celery tasks: thin wrappers over :mod:`serving` and the Label Studio adapter.

Names and payloads are the contract with the web app (JSON only):

- ``dinoseg.segment(request)`` -> ``{"model_version", "notice", "results": [...]}``
  (:class:`serving.segment.SegmentJob`); results that need review go into the outbox with
  their mask still in memory and are delivered by ``dinoseg.deliver_review``
- ``dinoseg.aerial(request)`` -> ``{"id", "out", "map", "glb", "files", "stats", "notice",
  "review", "review_queue"}`` (:func:`serving.aerial.run_aerial_job`; a head's uncertain
  tiles go to the aerial review project: :mod:`workers.labelstudio.aerial`)
- ``dinoseg.sync_aerial_annotations()`` -> ``{"labels", "changed", "skipped",
  "retrain_queued"}`` (periodic; annotated aerial tiles -> ``data/aerial_labels``, the aerial
  pipeline's labels; ``aerial_review.retrain_after`` changed labels queue an aerial retrain)
- ``dinoseg.queue_for_review(result_id)`` -> ``{"status", "task_id", "key"}``; status is
  ``queued``, ``outbox`` (Label Studio down: delivered later) or ``duplicate``
- ``dinoseg.deliver_review(key)`` -> ``{"status", "task_id"}`` (one outbox item)
- ``dinoseg.flush_outbox()`` -> ``{"delivered", "pending"}`` (periodic)
- ``dinoseg.sync_annotations()`` -> ``{"new_labels", "retrain_queued", "skipped"}`` (periodic)
- ``dinoseg.retrain(pipeline="segmenter"|"aerial")`` -> ``{"pipeline", "returncode", "seconds",
  ...}`` (``dvc repro`` / ``dvc repro aerial/dvc.yaml``, one at a time)
- ``dinoseg.status()`` -> ``{"model_version", "memory", "aerial_method", "review_queue_depth",
  "aerial_queue_depth", "outbox_depth", "refused_annotations", "refused_reasons",
  "label_studio_url"}`` (``aerial_queue_depth``: aerial review tiles awaiting an annotation;
  ``aerial_method``: the aerial tab's starting method, :func:`serving.aerial.default_method`)

Long tasks report ``PROGRESS`` with ``meta = {"fraction", "desc"}``. Bad input raises
:class:`dinoseg.io.InputError` (no retry; the caller shows the message). Transient failures
(registry down with no model loaded, a locked SQLite file) retry with exponential backoff.
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.signals import worker_init

from dinoseg import runtime
from serving.aerial_review import AerialReviewConfig
from serving.config import review_config
from serving.models import TransientError
from serving.progress import Report
from serving.segment import SegmentJob
from workers.app import app
from workers.labelstudio import client as ls
from workers.labelstudio import review as rv
from workers.labelstudio.outbox import Outbox
from workers.labelstudio.sync import sync

if TYPE_CHECKING:
    from serving.aerial import DefaultMethod

log = logging.getLogger(__name__)
WARM_IMPORTS = (
    "transformers.models.auto.modeling_auto",
    "transformers.models.dinov2.modeling_dinov2",
    "dinoseg.models.prototype",
    "dinoseg.checkpoint",
)
#: the least time between two published progress states of one task (seconds)
PROGRESS_SECONDS = 0.3
TRANSIENT = (TransientError, sqlite3.OperationalError, ConnectionError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 60,
         "retry_jitter": True, "max_retries": 5}  # fmt: skip


class ProcessTask(Task):  # type: ignore[misc]
    """Task base giving every task of this worker process the same segment job (one model
    holder) and the same outbox, both built at their first use, in the pool process."""

    _job: SegmentJob | None = None
    _outbox: Outbox | None = None
    _aerial_method: DefaultMethod | None = None

    @property
    def job(self) -> SegmentJob:
        if ProcessTask._job is None:
            ProcessTask._job = SegmentJob.from_params()
        return ProcessTask._job

    @property
    def outbox(self) -> Outbox:
        if ProcessTask._outbox is None:
            ProcessTask._outbox = Outbox()
        return ProcessTask._outbox

    @property
    def aerial_method(self) -> DefaultMethod:
        """The aerial tab's starting method (re-resolved every ``model_check_seconds``)."""
        if ProcessTask._aerial_method is None:
            from serving.aerial import DefaultMethod

            ProcessTask._aerial_method = DefaultMethod()
        return ProcessTask._aerial_method

    def review(self) -> rv.Review:
        return rv.Review(review_config(), self.outbox)

    def progress(self, every_s: float = PROGRESS_SECONDS) -> Report:
        """A progress callback that publishes ``PROGRESS`` states, at most one per ``every_s``
        (each is a write to the result backend; a quick task publishes none)."""
        last = [time.monotonic()]

        def report(fraction: float | None, desc: str) -> None:
            now = time.monotonic()
            if self.request.id and now - last[0] >= every_s:  # not when called directly (tests)
                last[0] = now
                self.update_state(state="PROGRESS", meta={"fraction": fraction, "desc": desc})

        return report


@worker_init.connect(weak=False)
def _warm_imports(**_: Any) -> None:
    """Import the model code once in the main process, before the pool forks (its children
    then start serving in a fraction of a second instead of re-importing transformers)."""
    for module in WARM_IMPORTS:
        importlib.import_module(module)


@app.task(name="dinoseg.segment", base=ProcessTask, bind=True, soft_time_limit=240,
          time_limit=300, **RETRY)  # fmt: skip
def segment(self: ProcessTask, request: dict[str, Any]) -> dict[str, Any]:
    outcome = self.job.run(request, self.progress())
    if outcome.review and review_config().auto_queue:
        review = self.review()
        for item in outcome.review:
            key, new = rv.enqueue(review, item)  # in the outbox first: durable
            if new:
                _send_or_leave_in_outbox(key)
    return outcome.reply


def _send_or_leave_in_outbox(key: str) -> None:
    """Ask a worker to deliver the review item now; with the broker unreachable the item
    simply waits in the outbox for the periodic ``flush_outbox`` (the result is not failed)."""
    from kombu.exceptions import OperationalError

    try:
        deliver_review.delay(key)
    except (OperationalError, ConnectionError) as e:
        log.warning("broker unreachable (%s): review item %s waits in the outbox", e, key)


@app.task(name="dinoseg.aerial", base=ProcessTask, bind=True, soft_time_limit=3540,
          time_limit=3600)  # fmt: skip
def aerial(self: ProcessTask, request: dict[str, Any]) -> dict[str, Any]:
    from serving.aerial import run_aerial_job

    reply = run_aerial_job(request, self.progress())
    if reply.get("review") and review_config().auto_queue:
        reply["review_queue"] = _queue_aerial(reply["review"], self.outbox)
    return reply


def _queue_aerial(tiles: list[dict[str, Any]], outbox: Outbox) -> list[dict[str, Any]]:
    """A head's uncertain tiles to the aerial review project, remembered in ``outbox`` for the
    status's count (a map never fails for it)."""
    from dinoseg.io import InputError
    from workers.labelstudio.aerial import queue_tiles

    try:
        sent = queue_tiles(tiles, AerialReviewConfig.load())
    except (ls.Unavailable, InputError) as e:
        log.warning("aerial review tiles not sent: %s", e)
        return [{"status": "not sent", "error": str(e)}]
    try:
        outbox.tiles_sent((s["key"], s["task_id"]) for s in sent)
    except sqlite3.Error:  # the tasks exist; only the status's count misses them
        log.warning("aerial review tiles sent but not counted", exc_info=True)
    return sent


@app.task(name="dinoseg.sync_aerial_annotations", base=ProcessTask, bind=True,
          soft_time_limit=540, time_limit=600)  # fmt: skip
def sync_aerial_annotations(self: ProcessTask) -> dict[str, Any]:
    from workers.labelstudio.aerial import COUNTER, sync_tiles

    cfg = AerialReviewConfig.load()
    try:
        report = sync_tiles(cfg, self.outbox)
    except ls.Unavailable as e:
        return {"labels": 0, "changed": 0, "skipped": [], "retrain_queued": False,
                "error": str(e)}  # fmt: skip
    queued = self.outbox.take_retrain(cfg.retrain_after, COUNTER)
    if queued:
        retrain.delay("aerial")
    return {**report, "retrain_queued": queued}


@app.task(name="dinoseg.queue_for_review", base=ProcessTask, bind=True, soft_time_limit=60,
          time_limit=90, **RETRY)  # fmt: skip
def queue_for_review(self: ProcessTask, result_id: str) -> dict[str, Any]:
    return rv.queue(self.review(), result_id)


@app.task(name="dinoseg.deliver_review", base=ProcessTask, bind=True, soft_time_limit=60,
          time_limit=90, **RETRY)  # fmt: skip
def deliver_review(self: ProcessTask, key: str) -> dict[str, Any]:
    status, task_id = rv.deliver(self.review(), key)
    return {"status": status, "task_id": task_id}


@app.task(name="dinoseg.flush_outbox", base=ProcessTask, bind=True, soft_time_limit=240,
          time_limit=300, **RETRY)  # fmt: skip
def flush_outbox(self: ProcessTask) -> dict[str, int]:
    return rv.flush(self.review())


@app.task(name="dinoseg.sync_annotations", base=ProcessTask, bind=True, soft_time_limit=540,
          time_limit=600)  # fmt: skip
def sync_annotations(self: ProcessTask) -> dict[str, Any]:
    review = self.review()
    memory = self.job.memory
    try:
        report = sync(review, Path(review.config.labels_dir),
                      on_label=None if memory is None else memory.add_label).as_dict()
    except ls.Unavailable as e:
        return {"new_labels": 0, "retrain_queued": False, "skipped": [], "error": str(e)}
    queued = review.outbox.take_retrain(review.config.retrain_after)
    if queued:
        retrain.delay()
    return {**report, "retrain_queued": queued}


@app.task(name="dinoseg.retrain", acks_late=False, soft_time_limit=6 * 3600 - 60,
          time_limit=6 * 3600)  # fmt: skip
def retrain(pipeline: str = "segmenter") -> dict[str, Any]:
    from workers.retrain import repro_command, run_retrain

    command = repro_command(pipeline)  # an unknown pipeline: InputError, nothing run
    return {"pipeline": pipeline,
            **run_retrain(command=command, wait=3 * 3600, timeout=6 * 3600 - 120)}  # fmt: skip


@app.task(name="dinoseg.status", base=ProcessTask, bind=True, soft_time_limit=30, time_limit=60)
def status(self: ProcessTask) -> dict[str, Any]:
    outbox = self.outbox
    refused, reasons = outbox.rejections()
    return {
        **self.job.status(),
        "aerial_method": self.aerial_method(),
        "review_queue_depth": outbox.awaiting_annotation(),
        "aerial_queue_depth": outbox.tiles_awaiting(),
        "outbox_depth": outbox.depth(),
        "refused_annotations": refused,
        "refused_reasons": reasons,
        "label_studio_url": runtime.label_studio_url(),
    }
