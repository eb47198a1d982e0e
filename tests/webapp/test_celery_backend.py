"""The Celery path: tasks sent by name over the SQLite broker to a worker thread speaking the
workers' contract (the real workers are exercised end to end by the browser test)."""

from __future__ import annotations

import time

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from dinoseg.io import InputError
from tests.webapp.conftest import editor_value, no_slots
from webapp.backends import BackendError
from webapp.backends.celery import QUEUE, CeleryBackend, client_app
from webapp.callbacks import DemoCallbacks


def contract_app(local_backend) -> Celery:
    """A worker app with the three tasks the page uses, served by an in-process backend."""
    app = client_app()
    app.conf.update(task_default_queue=QUEUE, worker_hijack_root_logger=False,
                    task_track_started=True)  # fmt: skip

    @app.task(name="dinoseg.segment", bind=True)
    def segment(self, request):
        if request["threshold"] == 0.99:
            raise InputError("support 1: the mask is empty; mark the object")
        report = lambda f, d: self.update_state(state="PROGRESS",  # noqa: E731
                                                meta={"fraction": f, "desc": d})
        return local_backend.segment(request, report)

    @app.task(name="dinoseg.queue_for_review")
    def queue_for_review(result_id):
        return {"status": "queued", "task_id": len(result_id)}

    @app.task(name="dinoseg.status")
    def status():
        return {"model_version": "3", "review_queue_depth": 2, "outbox_depth": 0,
                "label_studio_url": "http://127.0.0.1:8080"}  # fmt: skip

    return app


def test_segment_review_and_status_through_a_worker(tiny_backend, blobs):
    app = contract_app(tiny_backend)
    with start_worker(app, perform_ping_check=False, shutdown_timeout=30):
        backend = CeleryBackend(client_app(), timeout_s=120, poll_s=0.1)
        cb = DemoCallbacks(backend)
        states = []
        shown = cb.run(
            "prototype", 0.5, blobs["queries"],
            [editor_value(blobs["image"], blobs["mask"]), *no_slots()], [None] * 4,
            report=lambda f, d: states.append(d),
        )  # fmt: skip
        assert [v["name"] for v in shown.views] == ["query1.png", "query2.png"]
        assert shown.views[0]["model_version"] == "prototype"
        assert states and states[0] == "sending to the workers"
        assert "task 24" in cb.send_to_annotators(shown.views, 0)  # 24-hex result ids
        assert "Celery workers" in cb.status() and "2 task(s)" in cb.status()
        with pytest.raises(BackendError, match="the mask is empty; mark the object"):
            request = {"support": [], "queries": [], "model": "prototype", "threshold": 0.99}
            backend.segment(request)


def test_progress_states_become_progress_reports():
    from webapp.backends.celery import _report_state

    seen = []
    report = lambda f, d: seen.append((f, d))  # noqa: E731
    _report_state(report, "PROGRESS", {"fraction": 0.5, "desc": "segmenting 1-4 of 8"}, 1.0)
    _report_state(report, "PROGRESS", {"fraction": None, "desc": "loading the model"}, 1.0)
    _report_state(report, "PROGRESS", {"fraction": 7, "desc": ""}, 1.0)
    _report_state(report, "STARTED", None, 3.2)
    _report_state(report, "PENDING", None, 4.0)
    assert seen == [(0.5, "segmenting 1-4 of 8"), (None, "loading the model"), (1.0, "working"),
                    (None, "running on a worker (3 s)"), (None, "waiting for a worker (4 s)")]


def test_no_worker_is_a_clear_message_quickly():
    backend = CeleryBackend(client_app(), timeout_s=1.0, quick_timeout_s=1.0, poll_s=0.1)
    start = time.monotonic()
    with pytest.raises(BackendError, match="no answer from the workers after 1 s; are the workers"):
        backend.segment({"support": [], "queries": [], "model": "prototype", "threshold": None})
    assert time.monotonic() - start < 10
    assert "not answering" in DemoCallbacks(backend).status()


def test_unreachable_broker_is_a_clear_message():
    backend = CeleryBackend(client_app(broker="redis://127.0.0.1:1/0"), timeout_s=1.0)
    backend.app.conf.broker_connection_retry = False
    backend.app.conf.broker_connection_max_retries = 0
    with pytest.raises(BackendError, match="cannot reach the task broker"):
        backend.queue_for_review("abc")
