"""Where a request runs: in this process, or on the Celery workers.

Both backends run the serving layer's jobs and speak its JSON contract (:mod:`serving.segment`,
:mod:`serving.aerial`): ``segment(request)`` returns ``{"model_version", "notice", "results":
[{"id", "query", "mask", "prob", "confidence", "needs_review"}]}`` with mask/prob PNGs in
``runtime.results_dir()/<id>/``, so the page does not care which one answered.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from serving.progress import Report, no_report

__all__ = ["BACKEND_ENV", "Backend", "BackendError", "Report", "make_backend", "no_report"]


class BackendError(RuntimeError):
    """The work could not be done (workers down, timed out, task failed); message for the user."""


class Backend(Protocol):
    """What the page needs from an execution backend."""

    kind: str

    def segment(self, request: dict[str, Any], report: Report) -> dict[str, Any]:
        """Run ``dinoseg.segment``; raises InputError (bad input) or BackendError."""
        ...

    def aerial(self, request: dict[str, Any], report: Report) -> dict[str, Any]:
        """Run ``dinoseg.aerial`` (a city map); raises InputError or BackendError."""
        ...

    def queue_for_review(self, result_id: str) -> dict[str, Any]:
        """Run ``dinoseg.queue_for_review``: ``{"status", "task_id"}``."""
        ...

    def status(self) -> dict[str, Any]:
        """Run ``dinoseg.status``: model version, review queue depth, Label Studio URL."""
        ...


#: environment variable choosing the backend of `python -m webapp` (``local`` | ``celery``)
BACKEND_ENV = "DINOSEG_DEMO_BACKEND"


def make_backend(kind: str | None = None) -> Backend:
    """``local`` (in-process) or ``celery`` (the workers); default from ``$DINOSEG_DEMO_BACKEND``,
    else local."""
    kind = kind or os.environ.get(BACKEND_ENV) or "local"
    if kind == "local":
        from webapp.backends.local import LocalBackend

        return LocalBackend()
    if kind == "celery":
        from webapp.backends.celery import CeleryBackend

        return CeleryBackend()
    raise ValueError(f"unknown backend {kind!r} (local | celery)")
