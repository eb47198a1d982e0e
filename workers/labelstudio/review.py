"""Review items to Label Studio: idempotent, and through the outbox when Label Studio is down.

A :class:`serving.review.ReviewItem` becomes a Label Studio task once (:func:`build_task`): the
query image (served by Label Studio from the uploads folder), the mask as a brush-RLE
prediction with ``score`` = confidence and ``model_version`` = the model's registry version.

- :func:`enqueue` (the ``segment`` task, with the mask still in memory) stores the task in the
  outbox under the item's idempotency key ``<query sha256[:32]>:<model version>`` (an existing
  key is a duplicate: never two tasks);
- :func:`deliver` sends one outbox item: looks the key up in the project first (a delivery
  whose reply was lost), else imports the task with its prediction in one request. Label Studio
  unreachable -> the item stays pending and :func:`flush` delivers it later;
- :func:`queue` (the "send to annotators" button) builds the item from the results store, then
  enqueues and delivers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg.data.folder import ClassInfo, read_classes
from dinoseg.io import InputError
from serving.config import ReviewConfig
from serving.review import ReviewItem, item_from_record
from workers.labelstudio import client as ls
from workers.labelstudio.convert import mask_to_result
from workers.labelstudio.outbox import Outbox


@dataclass
class Review:
    """What the review loop needs: settings, the outbox, and a way to reach Label Studio."""

    config: ReviewConfig
    outbox: Outbox
    connect: Callable[[], Any] = ls.connect

    def classes(self) -> ClassInfo:
        return read_classes(Path(self.config.classes_from))

    def project(self, client: Any) -> int:
        names = list(self.classes().names.values())
        return ls.ensure_project(client, self.config.project_title, names)


def build_task(item: ReviewItem) -> dict[str, Any]:
    """The Label Studio task (data + one prediction) of a review item."""
    data = {
        "image": ls.image_url(item.query),
        ls.KEY_FIELD: item.key,
        "dinoseg_result": item.result_id,
        "dinoseg_query": item.query,
        "dinoseg_query_sha256": item.query_sha256,
    }
    prediction = {
        "model_version": item.model_version,
        "score": float(item.confidence),
        "result": [mask_to_result(item.mask)],
    }
    return {"data": data, "predictions": [prediction]}


def deliver(review: Review, key: str) -> tuple[str, int | None]:
    """Try to deliver one outbox item: ``("queued"|"duplicate"|"outbox"|"busy", task id)``."""
    item = review.outbox.get(key)
    if item is None:
        raise InputError(f"no outbox item {key!r}")
    if item.state == "delivered":
        return "duplicate", item.task_id
    if not review.outbox.claim(key):
        return "busy", None
    try:
        client = review.connect()
        project = review.project(client)
        task_id = ls.task_by_key(client, project, key)
        status = "duplicate"
        if task_id is None:
            task_id, status = ls.create_task(client, project, item.payload), "queued"
    except ls.Unavailable as e:
        review.outbox.failed(key, str(e))
        return "outbox", None
    except BaseException as e:
        review.outbox.failed(key, f"{type(e).__name__}: {e}")
        raise
    review.outbox.delivered(key, task_id)
    return status, task_id


def enqueue(review: Review, item: ReviewItem) -> tuple[str, bool]:
    """Put a review item into the outbox without delivering it (``deliver``, ``flush`` or
    ``queue`` will); returns (its key, whether it is new). Durable at once: nothing is lost if
    the broker is down right now."""
    if review.outbox.get(item.key) is not None:
        return item.key, False  # queued before: the task is not built again
    _, new = review.outbox.add(item.key, item.result_id, build_task(item))
    return item.key, new


def queue(review: Review, rid: str) -> dict[str, Any]:
    """Queue stored result ``rid`` for review; ``{"status", "task_id", "key"}``."""
    item = item_from_record(rid)
    stored, new = review.outbox.add(item.key, rid, build_task(item))
    key = item.key
    if not new and stored.state == "delivered":
        return {"status": "duplicate", "task_id": stored.task_id, "key": key}
    status, task_id = deliver(review, key)
    if status == "busy":  # another worker is delivering it right now
        status = "duplicate" if not new else "outbox"
    if status == "duplicate" and new:
        status = "queued"  # first queueing here; the task existed from a lost reply
    return {"status": status, "task_id": task_id, "key": key}


def flush(review: Review, limit: int = 100) -> dict[str, int]:
    """Deliver pending outbox items (stops at the first sign Label Studio is down)."""
    done = 0
    for key in review.outbox.pending(limit):
        status, _ = deliver(review, key)
        if status == "outbox":
            break
        done += status in ("queued", "duplicate")
    return {"delivered": done, "pending": review.outbox.depth()}
