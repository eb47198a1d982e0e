"""Queue low-confidence results for review: idempotent, and through the outbox when LS is down.

``queue(result_id)``:

1. builds the review item from the results store: the query image (served by Label Studio
   from the uploads folder), the mask as a brush-RLE prediction with ``score`` = confidence and
   ``model_version`` = the model's registry version;
2. inserts it into the outbox under its idempotency key ``<query sha256[:32]>:<model version>``
   (an existing key is a duplicate: never two tasks);
3. delivers it: looks the key up in the project first (a delivery whose reply was lost), else
   imports the task with its prediction in one request. Label Studio unreachable -> the item
   stays pending and :func:`flush` delivers it later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg.data.folder import ClassInfo, read_classes
from dinoseg.io import InputError
from workers import store
from workers.config import ReviewConfig
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


def review_key(meta: dict[str, Any]) -> str:
    """Idempotency key of a result: query image hash + model version."""
    return f"{meta['query_sha256'][:32]}:{meta['model_version']}"


def build_task(rid: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The Label Studio task (data + one prediction) for result ``rid``."""
    mask = store.read_mask(rid)
    data = {
        "image": ls.image_url(meta["query"]),
        ls.KEY_FIELD: review_key(meta),
        "dinoseg_result": rid,
        "dinoseg_query": meta["query"],
        "dinoseg_query_sha256": meta["query_sha256"],
    }
    prediction = {
        "model_version": str(meta["model_version"]),
        "score": float(meta["confidence"]),
        "result": [mask_to_result(mask)],
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


def enqueue(review: Review, rid: str) -> str:
    """Put result ``rid`` into the outbox without delivering it (``flush`` or ``queue`` will);
    returns its key. Durable at once: nothing is lost if the broker is down right now."""
    meta = store.read_meta(rid)
    key = review_key(meta)
    review.outbox.add(key, rid, build_task(rid, meta))
    return key


def queue(review: Review, rid: str) -> dict[str, Any]:
    """Queue result ``rid`` for review; ``{"status", "task_id", "key"}``."""
    meta = store.read_meta(rid)
    key = review_key(meta)
    item, new = review.outbox.add(key, rid, build_task(rid, meta))
    if not new and item.state == "delivered":
        return {"status": "duplicate", "task_id": item.task_id, "key": key}
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
