"""Finished annotations -> ``data/labels/`` (the files: :mod:`workers.labelstudio.labelfiles`).

Nothing is written into ``data/labels/`` (a ``dvc repro`` input) until there is a label to
write. The latest submitted (not cancelled) annotation of a task wins; an annotation already written
in the same version is skipped, an updated one rewrites its files. Regions still carrying the
placeholder label are not labels; an annotation without any class-labelled pixel is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dinoseg import runtime
from dinoseg.data.classnames import normalize_class_name
from dinoseg.data.folder import read_classes
from dinoseg.io import InputError
from workers.labelstudio import client as ls
from workers.labelstudio.labelfiles import write_label
from workers.labelstudio.review import Review

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    """What one sync pass did."""

    new_labels: int = 0
    deleted_tasks: int = 0
    skipped: list[str] = field(default_factory=list)
    memory_errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"new_labels": self.new_labels, "deleted_tasks": self.deleted_tasks,
                "skipped": self.skipped, "memory_errors": self.memory_errors}


def hand_imported(task: dict[str, Any]) -> dict[str, Any]:
    """A task imported by hand (no ``dinoseg_query``): its image, fetched as the ML backend
    fetches it (a local file of this stack or a file Label Studio serves), is stored in the
    uploads folder by content, and the task is returned naming it; other tasks as they are."""
    data = task.get("data") or {}
    if data.get("dinoseg_query"):
        return task
    import os

    from serving.uploads import png_bytes, store_bytes
    from workers.labelstudio.interactive import BackendError, fetch_image

    try:
        image = fetch_image(data.get("image"), runtime.label_studio_url(),
                            os.environ.get("LABEL_STUDIO_API_KEY")).load()
    except (BackendError, InputError) as e:
        raise InputError(f"task {task.get('id')}: its image cannot be read ({e})") from e
    path = store_bytes(png_bytes(image), ".png")
    named = {**data, "dinoseg_query": str(path), "dinoseg_query_sha256": path.stem}
    return {**task, "data": named}


def _annotator(client: Any, user_id: int | None, cache: dict[int, str]) -> str:
    if user_id is None:
        return "unknown"
    if user_id not in cache:
        user = ls.call(lambda: client.users.get(user_id))
        cache[user_id] = str(user.email or user.username or user_id)
    return cache[user_id]


#: called with each written label: (image, label map, class id -> name, source, complete
#: classes)
OnLabel = Callable[[np.ndarray, np.ndarray, dict[int, str], str, tuple[str, ...]], object]


def _to_memory(on_label: OnLabel, labels_dir: Path, stem: str, report: SyncReport) -> None:
    """Hand a written label to the support memory; a failure is reported, never loses the
    label (it is in ``labels_dir``, and the memory's next build syncs it)."""
    try:
        from dinoseg.data.folder import FolderDataset

        ds = FolderDataset(labels_dir, "train")
        image, labels = ds.load_stem(stem)
        names = {c: normalize_class_name(n) for c, n in read_classes(labels_dir).names.items()}
        on_label(image, labels, names, f"{labels_dir}:train/{stem}", ds.complete_classes(stem))
    except Exception as e:
        log.exception("label %s not added to the support memory", stem)
        report.memory_errors.append(f"{stem}: {type(e).__name__}: {e}")


def sync(review: Review, labels_dir: Path, on_label: OnLabel | None = None) -> SyncReport:
    """One pull of the project's annotated tasks into ``labels_dir``; a refused annotation is
    reported and remembered in the outbox (``dinoseg.status`` shows it) until it is fixed, and
    delivered tasks deleted in Label Studio since stop counting as awaiting (``deleted_tasks``).
    ``on_label`` gets every label written (the support memory, updated at once)."""
    report = SyncReport()
    users: dict[int, str] = {}
    client = review.connect()
    project = review.project(client)
    config = ls.call(lambda: client.projects.get(id=project)).label_config
    allowed = {normalize_class_name(n) for n in ls.config_labels(config)}
    for task in ls.annotated_tasks(client, project):
        ann = ls.latest_annotation(task["annotations"])
        if ann is None or review.outbox.label_synced(ann["id"], str(ann.get("updated_at"))):
            continue
        try:
            annotator = _annotator(client, ann.get("completed_by"), users)
            task = hand_imported(task)
            stem = write_label(labels_dir, task, ann, allowed, annotator,
                               Path(review.config.classes_from))
        except (InputError, KeyError) as e:
            report.skipped.append(f"task {task.get('id')}: {e}")
            review.outbox.reject(ann["id"], int(task.get("id") or 0), str(ann.get("updated_at")),
                                 f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e))
            continue
        review.outbox.record_label(ann["id"], task["id"], str(ann.get("updated_at")), stem)
        report.new_labels += 1
        if on_label is not None:
            _to_memory(on_label, labels_dir, stem, report)
    report.deleted_tasks = ls.forget_deleted(client, project, review.outbox, "items")
    return report
