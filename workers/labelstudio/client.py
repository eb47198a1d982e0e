"""Talking to Label Studio (label_studio_sdk 2.x): connection, project bootstrap, task look-ups.

Every network failure surfaces as :class:`Unavailable` so callers can fall back to the outbox.
The project is created once with an image + BrushLabels config (labels from the dataset's
classes), "Uncertainty sampling" (annotators get the lowest prediction score first) and a
local-files storage on ``runtime.uploads_dir()``; afterwards it is found again by title.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from dinoseg import runtime
from dinoseg.io import InputError
from workers.labelstudio.convert import label_config

T = TypeVar("T")
TIMEOUT = 15.0
KEY_FIELD = "dinoseg_key"


class Unavailable(RuntimeError):
    """Label Studio cannot be reached (down, timing out or answering 5xx)."""


def connect(url: str | None = None, token: str | None = None, timeout: float = TIMEOUT) -> Any:
    """A ``LabelStudio`` client for ``runtime.label_studio_url()`` and ``LABEL_STUDIO_API_KEY``."""
    from label_studio_sdk import LabelStudio

    token = token or os.environ.get("LABEL_STUDIO_API_KEY")
    if not token:
        raise InputError("set LABEL_STUDIO_API_KEY to talk to Label Studio")
    return LabelStudio(
        base_url=url or runtime.label_studio_url(), api_key=token, timeout=timeout, max_retries=0
    )


def call(fn: Callable[[], T]) -> T:
    """Run one SDK call; connection problems and 5xx answers become :class:`Unavailable`."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return fn()
    except httpx.HTTPError as e:
        raise Unavailable(f"Label Studio unreachable ({type(e).__name__}: {e})") from e
    except ApiError as e:
        if e.status_code is None or e.status_code >= 500:
            raise Unavailable(f"Label Studio error {e.status_code}") from e
        raise


@contextmanager
def _bootstrap_lock() -> Iterator[None]:
    """One bootstrap at a time on this machine (two workers must not create two projects)."""
    path = runtime.ensure(runtime.home()) / "labelstudio-bootstrap.lock"
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def find_project(client: Any, title: str) -> int | None:
    """Id of the project called exactly ``title`` (the oldest if several)."""
    found = call(lambda: [p for p in client.projects.list(title=title) if p.title == title])
    return min(p.id for p in found) if found else None


def ensure_project(client: Any, title: str, class_names: Sequence[str]) -> int:
    """The review project's id, creating it (config + local-files storage) the first time."""
    project = find_project(client, title)
    if project is not None:
        return project
    with _bootstrap_lock():
        project = find_project(client, title)
        if project is not None:
            return project
        created = call(lambda: client.projects.create(
            title=title, label_config=label_config(class_names),
            sampling="Uncertainty sampling", show_collab_predictions=True,
            description="Low-confidence dinoseg masks to fix (lowest confidence first).",
        ))  # fmt: skip
        uploads = runtime.ensure(runtime.uploads_dir())
        call(lambda: client.import_storage.local.create(
            project=created.id, path=str(uploads), title="dinoseg uploads", use_blob_urls=True,
        ))  # fmt: skip
        return int(created.id)


def image_url(path: str | Path) -> str:
    """The Label Studio URL of an image under ``runtime.home()`` (local-files serving)."""
    home = runtime.home()
    full = Path(path).resolve()
    if not full.is_relative_to(home):
        raise InputError(f"{path}: review images must lie under {home} (the uploads folder)")
    return "/data/local-files/?d=" + quote(full.relative_to(home).as_posix())


def task_by_key(client: Any, project: int, key: str) -> int | None:
    """Id of the project's task carrying idempotency key ``key``, if any."""
    query = json.dumps({"filters": {"conjunction": "and", "items": [{
        "filter": f"filter:tasks:data.{KEY_FIELD}", "operator": "equal", "type": "String",
        "value": key}]}})  # fmt: skip
    tasks = call(lambda: list(client.tasks.list(project=project, query=query, fields="task_only")))
    return min(t.id for t in tasks) if tasks else None


def create_task(client: Any, project: int, task: dict[str, Any]) -> int:
    """Import one task with its predictions in one request; returns the task id."""
    reply = call(
        lambda: client.projects.import_tasks(project, request=[task], return_task_ids=True)
    )
    ids = list(reply.task_ids or [])
    if len(ids) != 1:
        raise Unavailable(f"Label Studio imported {len(ids)} tasks instead of 1")
    return int(ids[0])
