"""Review items to Label Studio: idempotent, and through the outbox when Label Studio is down.

A :class:`serving.review.ReviewItem` becomes a Label Studio task once (:func:`build_task`): the
query image (served by Label Studio from the uploads folder), the class asked for, the
stakeholder's supports as one sheet with the masks outlined, a context line (confidence, model
version), and the mask as a brush-RLE prediction labelled with the class, ``score`` =
confidence and ``model_version`` = the model's registry version. Delivery grows the project's
labelling config when the class is new and keeps the project's model version on the newest
items' version (Label Studio's uncertainty sampling orders only that version's tasks).

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

from dinoseg.data.classnames import known_classes
from dinoseg.data.folder import ClassInfo, read_classes
from dinoseg.io import InputError
from serving.config import ReviewConfig
from serving.review import ReviewItem, item_from_record
from serving.uploads import png_bytes, store_bytes
from workers.labelstudio import client as ls
from workers.labelstudio.convert import mask_to_result
from workers.labelstudio.outbox import Item, Outbox


@dataclass
class Review:
    """What the review loop needs: settings, the outbox, and a way to reach Label Studio."""

    config: ReviewConfig
    outbox: Outbox
    connect: Callable[[], Any] = ls.connect

    def classes(self) -> ClassInfo:
        """The base dataset's classes (ids of the labels written to ``labels_dir``)."""
        return read_classes(Path(self.config.classes_from))

    def known(self) -> list[str]:
        """Every class known so far: the base dataset's and every class already labelled."""
        return known_classes([self.config.classes_from, self.config.labels_dir])

    def project(self, client: Any) -> int:
        return ls.ensure_project(client, self.config.project_title, self.known())


def build_task(item: ReviewItem) -> dict[str, Any]:
    """The Label Studio task (data + one prediction) of a review item; the support sheet is
    stored in the uploads folder by content (Label Studio serves it from there)."""
    data = {
        "image": ls.image_url(item.query),
        "class_name": item.class_name,
        "context": item.context,
        ls.KEY_FIELD: item.key,
        "dinoseg_result": item.result_id,
        "dinoseg_query": item.query,
        "dinoseg_query_sha256": item.query_sha256,
    }
    if item.supports:
        sheet = store_bytes(png_bytes(item.support_sheet()), ".png")
        data["support_image"] = ls.image_url(sheet)
    prediction = {
        "model_version": item.model_version,
        "score": float(item.confidence),
        "result": [mask_to_result(item.mask, item.class_name)],
    }
    return {"data": data, "predictions": [prediction]}


def _prepare_project(review: Review, client: Any, item: Item) -> int:
    """The project, with the item's class among its labels."""
    project = review.project(client)
    class_name = str(item.payload["data"].get("class_name") or "")
    if class_name:
        ls.ensure_labels(client, project, [class_name])
    return project


def _follow_version(review: Review, client: Any, project: int, item: Item) -> None:
    """Make the item's model version the project's when no newer item set another (Label
    Studio accepts a version only once a prediction of it exists: call after the import)."""
    version = str(item.payload["predictions"][0]["model_version"])
    if review.outbox.newest_version(version, item.created):
        ls.ensure_model_version(client, project, version)


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
        project = _prepare_project(review, client, item)
        task_id = ls.task_by_key(client, project, key)
        status = "duplicate"
        if task_id is None:
            task_id, status = ls.create_task(client, project, item.payload), "queued"
            warm_ml_backend(str(item.payload["data"].get("image") or ""))
        _follow_version(review, client, project, item)
    except ls.Unavailable as e:
        review.outbox.failed(key, str(e))
        return "outbox", None
    except BaseException as e:
        review.outbox.failed(key, f"{type(e).__name__}: {e}")
        raise
    review.outbox.delivered(key, task_id)
    return status, task_id


def warm_ml_backend(image_url: str, timeout: float = 0.5) -> bool:
    """Ask the ML backend (if one runs) to encode a new task's image now, so the annotator's
    first click is answered at once; a backend that is down or slow is ignored."""
    import json
    import urllib.error
    import urllib.request

    from dinoseg import runtime

    request = urllib.request.Request(
        runtime.ml_backend_url() + "/warm", data=json.dumps({"image": image_url}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return bool(200 <= r.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


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
