"""Execution on the Celery workers, through task names only (the webapp never imports workers).

The client app is built from ``dinoseg.runtime`` (same broker and result backend as the
workers, JSON only). Results are polled so the page can show progress: ``PENDING`` (queued or
no worker yet), ``STARTED``, ``PROGRESS`` (``meta = {"fraction", "desc"}`` when the worker
reports it), then ``SUCCESS`` / ``FAILURE`` (the task's error message is shown as is).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dinoseg import runtime
from webapp.backends import BackendError, Report, no_report

#: the workers' queue (``workers.app.QUEUE``; named here because the webapp never imports workers)
QUEUE = "dinoseg"
SEGMENT = "dinoseg.segment"
AERIAL = "dinoseg.aerial"
QUEUE_FOR_REVIEW = "dinoseg.queue_for_review"
STATUS = "dinoseg.status"


def _ensure_sqlite_parent(url: str) -> None:
    """Create the folder of a ``...sqlite:///path`` URL (SQLite does not create folders)."""
    _, sep, path = url.partition("sqlite:///")
    if sep and path and "://" not in path:
        runtime.ensure(Path(path).parent)


def client_app(broker: str | None = None, backend: str | None = None) -> Any:
    """A Celery app used only to send tasks and read results."""
    from celery import Celery

    broker = broker or runtime.broker_url()
    backend = backend or runtime.result_backend()
    for url in (broker, backend):
        _ensure_sqlite_parent(url)
    app = Celery("dinoseg-webapp", broker=broker, backend=backend)
    sqlite = {"connect_args": {"timeout": 30}}  # wait on a locked SQLite file, do not fail
    app.conf.update(
        task_default_queue=QUEUE,
        broker_transport_options=sqlite if "sqlite:" in broker else {},
        database_engine_options=sqlite if "sqlite:" in backend else {},
        database_short_lived_sessions=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    return app


def _hint() -> str:
    return (
        "are the workers running (or all busy)? `dinoseg demo` starts one (log: "
        f"{runtime.logs_dir() / 'worker.log'})"
    )


class CeleryBackend:
    """Sends ``dinoseg.*`` tasks by name and waits for their results with progress.

    A result is polled every ``poll_s`` (0.05 s: a SQL query or a Redis GET, and at most that
    much added to a request); the page hears of a state only when what it shows changes.
    """

    kind = "celery"

    def __init__(
        self,
        app: Any = None,
        *,
        timeout_s: float = 600.0,
        aerial_timeout_s: float = 3600.0,
        quick_timeout_s: float = 8.0,
        poll_s: float = 0.05,
    ):
        self.app = app or client_app()
        self.timeout_s = timeout_s
        self.aerial_timeout_s = aerial_timeout_s
        self.quick_timeout_s = quick_timeout_s
        self.poll_s = poll_s

    def _send(self, name: str, *args: Any, expires: float) -> Any:
        """Send a task that workers drop if it waited longer than ``expires`` seconds."""
        try:
            return self.app.send_task(name, args=list(args), expires=expires)
        except Exception as e:  # broker unreachable: kombu raises many types
            raise BackendError(f"cannot reach the task broker ({e}); {_hint()}") from None

    def _wait(self, result: Any, timeout_s: float, report: Report, what: str) -> Any:
        start, report = time.monotonic(), _on_change(report)
        while True:
            state = result.state
            if state == "SUCCESS":
                return result.result
            if state in ("FAILURE", "REVOKED"):
                raise BackendError(str(result.result) or f"{what} failed on the worker")
            waited = time.monotonic() - start
            if waited > timeout_s:
                raise BackendError(f"no answer from the workers after {waited:.0f} s; {_hint()}")
            info = result.info if state == "PROGRESS" else None  # one more query: only then
            _report_state(report, state, info, waited)
            time.sleep(self.poll_s)

    def segment(self, request: dict[str, Any], report: Report = no_report) -> dict[str, Any]:
        report(None, "sending to the workers")
        res = self._send(SEGMENT, request, expires=self.timeout_s)
        reply = self._wait(res, self.timeout_s, report, "segmentation")
        if not isinstance(reply, dict) or "results" not in reply:
            raise BackendError(f"unexpected reply from the workers: {str(reply)[:200]}")
        return reply

    def aerial(self, request: dict[str, Any], report: Report = no_report) -> dict[str, Any]:
        report(None, "sending to the workers")
        res = self._send(AERIAL, request, expires=self.aerial_timeout_s)
        reply = self._wait(res, self.aerial_timeout_s, report, "the city map")
        if not isinstance(reply, dict) or "map" not in reply:
            raise BackendError(f"unexpected reply from the workers: {str(reply)[:200]}")
        return reply

    def queue_for_review(self, result_id: str) -> dict[str, Any]:
        timeout = 4 * self.quick_timeout_s
        res = self._send(QUEUE_FOR_REVIEW, result_id, expires=timeout)
        return dict(self._wait(res, timeout, no_report, "queueing for review"))

    def status(self) -> dict[str, Any]:
        res = self._send(STATUS, expires=self.quick_timeout_s)
        reply = dict(self._wait(res, self.quick_timeout_s, no_report, "status"))
        reply.setdefault("backend", "Celery workers")
        return reply


def _on_change(report: Report) -> Report:
    """``report`` called only when its arguments change (the page redraws its progress bar on
    every report; polls repeat the same state)."""
    last: list[Any] = []

    def changed(fraction: float | None, desc: str) -> None:
        if last != [fraction, desc]:
            last[:] = [fraction, desc]
            report(fraction, desc)

    return changed


def _report_state(report: Report, state: str, info: Any, waited: float) -> None:
    if state == "PROGRESS" and isinstance(info, dict):
        fraction = info.get("fraction")
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
            fraction = None
        report(None if fraction is None else min(1.0, max(0.0, float(fraction))),
               str(info.get("desc") or "working"))  # fmt: skip
    elif state == "STARTED":
        report(None, f"running on a worker ({waited:.0f} s)")
    else:
        report(None, f"waiting for a worker ({waited:.0f} s)")
