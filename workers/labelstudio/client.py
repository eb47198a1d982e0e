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
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from dinoseg import runtime
from dinoseg.io import InputError
from workers.labelstudio.convert import PLACEHOLDER, label_config
from workers.labelstudio.outbox import Outbox

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


_BRUSH_LABELS = re.compile(r"<BrushLabels\b[^>]*>(.*?)</BrushLabels>", re.S)
_LABEL = re.compile(r"<Label\b[^>]*\bvalue=(\"[^\"]*\"|'[^']*')")


def config_labels(config: str) -> list[str]:
    """The brush label values of a labelling config (placeholder excluded), in order."""
    from xml.sax.saxutils import unescape

    block = _BRUSH_LABELS.search(config or "")
    if block is None:
        return []
    values = [unescape(v[1:-1], {"&quot;": '"', "&apos;": "'"})
              for v in _LABEL.findall(block.group(1))]  # fmt: skip
    return [v for v in values if v != PLACEHOLDER]


def ensure_labels(client: Any, project: int, names: Sequence[str]) -> list[str]:
    """Grow the project's labelling config so it has a brush label for every name (existing
    labels keep their order, tasks and annotations are untouched); returns all labels.

    Read-modify-write under the machine's bootstrap lock, then read back: a worker on another
    host that updated the config at the same time is seen and merged on the next call.
    """
    current = call(lambda: client.projects.get(id=project)).label_config
    have = config_labels(current)
    missing = [n for n in dict.fromkeys(names) if n not in have and n != PLACEHOLDER]
    if not missing:
        return have
    with _bootstrap_lock():
        for _ in range(3):
            have = config_labels(call(lambda: client.projects.get(id=project)).label_config)
            wanted = [*have, *(n for n in dict.fromkeys(names) if n not in have)]
            wanted = [n for n in wanted if n != PLACEHOLDER]
            if wanted == have:
                return have
            config = label_config(wanted)
            call(lambda: client.projects.update(id=project, label_config=config))  # noqa: B023
        return config_labels(call(lambda: client.projects.get(id=project)).label_config)


def ensure_model_version(client: Any, project: int, version: str) -> None:
    """Make ``version`` the project's model version, so Label Studio's uncertainty sampling
    orders the tasks of that model's predictions (it falls back to random order otherwise)."""
    current = call(lambda: client.projects.get(id=project)).model_version
    if current != version:
        call(lambda: client.projects.update(id=project, model_version=version))


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


def annotated_tasks(client: Any, project: int) -> list[dict[str, Any]]:
    """The project's annotated tasks as dicts, each one's ``annotations`` as dicts too."""
    tasks = call(lambda: list(client.tasks.list(project=project, only_annotated=True,
                                                fields="all")))  # fmt: skip
    out = []
    for t in tasks:
        task = t.dict() if hasattr(t, "dict") else dict(t)
        task["annotations"] = [a if isinstance(a, dict) else a.dict()
                               for a in task.get("annotations") or []]  # fmt: skip
        out.append(task)
    return out


def task_ids(client: Any, project: int) -> set[int]:
    """Ids of every task the project has now."""
    return call(lambda: {int(t.id) for t in client.tasks.list(
        project=project, fields="task_only", include="id", page_size=1000)})  # fmt: skip


def forget_deleted(client: Any, project: int | None, outbox: Outbox, table: str) -> int:
    """Mark the outbox's tasks of ``table`` (``items`` / ``tiles``) still awaiting an annotation
    that the project no longer has as gone (deleted in Label Studio; all of them when the
    project itself is gone, ``project`` None); returns how many. Only
    tasks recorded before the project is listed are judged (one created meanwhile is not in the
    listing but is not gone). Refusals of deleted annotations are dropped on the way
    (:func:`forget_deleted_refusals`)."""
    forget_deleted_refusals(client, outbox)
    waiting = outbox.awaiting_tasks(table)
    if not waiting:
        return 0
    gone = waiting - (set() if project is None else task_ids(client, project))
    outbox.tasks_gone(gone)
    return len(gone)


def forget_deleted_refusals(client: Any, outbox: Outbox, limit: int = 50) -> int:
    """Drop the outbox's refusals whose annotation Label Studio no longer has (deleted, or
    with its task or project); returns how many. One request per refusal, at most ``limit``."""
    from label_studio_sdk.core.api_error import ApiError

    dropped = 0
    for annotation_id in outbox.refused_ids(limit):
        try:
            call(partial(client.annotations.get, id=annotation_id))
        except ApiError as e:
            if e.status_code != 404:
                raise
            outbox.forget_refusal(annotation_id)
            dropped += 1
    return dropped


def latest_annotation(annotations: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest submitted (not cancelled) annotation that has a result (None: none)."""
    done = [a for a in annotations if not a.get("was_cancelled") and a.get("result") is not None]
    return max(done, key=lambda a: (a.get("updated_at") or "", a["id"])) if done else None
