"""``segment`` end to end through real worker processes: SQLite broker, Redis broker, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.workers.conftest import (
    Project,
    Worker,
    celery_app,
    make_request,
    upload,
    wait_for,
)

RESULT_TIMEOUT = 120.0


def check_reply(reply: dict, request: dict) -> None:
    assert reply["model_version"] == "prototype"
    assert reply["notice"] is None
    assert [r["query"] for r in reply["results"]] == request["queries"]
    for r in reply["results"]:
        mask = np.asarray(Image.open(r["mask"]))
        prob = np.asarray(Image.open(r["prob"]))
        assert mask.shape == prob.shape == (96, 128)
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, prob > 127)  # default threshold 0.5
        meta = json.loads((Path(r["mask"]).parent / "meta.json").read_text())
        assert meta["confidence"] == r["confidence"] and 0.0 <= r["confidence"] <= 1.0
        assert meta["model_version"] == "prototype" and meta["query_sha256"]


@pytest.fixture(scope="module")
def sqlite_worker(project: Project):
    """One worker on the default embedded broker (SQLite), shared by this module's tests."""
    worker = Worker(project, project.env, "sqlite")
    yield worker
    worker.stop()


def test_segment_on_sqlite_broker(project: Project, sqlite_worker: Worker) -> None:
    app = celery_app(project.env)
    request = make_request(project, n_queries=2)
    reply = app.send_task("dinoseg.segment", args=[request]).get(timeout=RESULT_TIMEOUT)
    check_reply(reply, request)
    # the same request again: same ids (content-derived), served from the loaded model
    again = app.send_task("dinoseg.segment", args=[request]).get(timeout=30)
    assert [r["id"] for r in again["results"]] == [r["id"] for r in reply["results"]]
    # bad input: the task fails with the InputError message, no retry
    bad = dict(request, queries=["/etc/passwd"])
    result = app.send_task("dinoseg.segment", args=[bad])
    with pytest.raises(Exception, match="outside the uploads folder"):
        result.get(timeout=30)
    status = app.send_task("dinoseg.status").get(timeout=30)
    assert status["outbox_depth"] == 0 and status["label_studio_url"].startswith("http://127.")
    assert status["aerial_method"] == "fewshot"  # no aerial head registered in this home


def slow_request(project: Project, n: int) -> dict:
    """A request with ``n`` noisy 720x960 queries (about 0.2-0.5 s of work each)."""
    rng = np.random.default_rng(n)
    big = [upload(project, f"big{n}-{i}", rng.integers(0, 255, (720, 960, 3), np.uint8))["image"]
           for i in range(n)]  # fmt: skip
    return dict(make_request(project, n_queries=1), queries=big)


def test_segment_on_redis_broker_survives_a_killed_worker(
    project: Project, start_worker, redis_url: str
) -> None:
    """End to end on Redis; then the whole worker (main process and pool) is SIGKILLed
    mid-task: the unacknowledged task is handed to the next worker after the visibility
    timeout and completes."""
    redis_env = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
                 "CELERY_VISIBILITY_TIMEOUT": "10"}  # fmt: skip
    app = celery_app({**project.env, **redis_env})
    app.control.purge()
    first = start_worker("redis", **redis_env)
    request = make_request(project, n_queries=2)
    reply = app.send_task("dinoseg.segment", args=[request]).get(timeout=RESULT_TIMEOUT)
    check_reply(reply, request)
    slow = app.send_task("dinoseg.segment", args=[slow_request(project, 12)])
    wait_for(lambda: _started(app, slow.id), RESULT_TIMEOUT, "the slow task to start")
    first.kill()
    second = start_worker("redis2", **redis_env)
    assert len(slow.get(timeout=RESULT_TIMEOUT)["results"]) == 12
    done = f"{slow.id}] succeeded"
    wait_for(lambda: done in second.log.read_text(), 10, "the second worker's log line")
    assert done not in first.log.read_text()


def _started(app, task_id: str) -> bool:
    """Running on a worker: started, or already reporting its progress."""
    return app.AsyncResult(task_id).state in ("STARTED", "PROGRESS")


def test_sigkill_mid_segment_is_redelivered(project: Project, sqlite_worker: Worker) -> None:
    """The pool process dies mid-task: the task goes back to the queue and completes."""
    app = celery_app(project.env)
    worker = sqlite_worker
    slow = slow_request(project, 24)
    quick = [make_request(project, n_queries=1, first=100 + i) for i in range(2)]
    submitted = [app.send_task("dinoseg.segment", args=[slow])]
    submitted += [app.send_task("dinoseg.segment", args=[q]) for q in quick]
    wait_for(lambda: _started(app, submitted[0].id), RESULT_TIMEOUT, "the slow task to start")
    time.sleep(0.3)
    children = worker.children()
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    replies = [r.get(timeout=RESULT_TIMEOUT) for r in submitted]
    assert [len(r["results"]) for r in replies] == [24, 1, 1]  # nothing lost
    ids = [x["id"] for r in replies for x in r["results"]]
    assert len(set(ids)) == len(ids)
    assert all((project.home / "results" / i / "meta.json").is_file() for i in ids)
    assert "WorkerLostError" in worker.log.read_text()  # killed mid-task, and recovered
