"""Redis, broker and result backend at once, crashes (SIGKILL) and restarts during a burst of
``segment`` requests: every request completes once, every result is stored once, and every
result that needs review is queued for review once.

A private ``redis-server`` (append-only file, fsync on every write) on a free port: the
machine's shared Redis is never restarted.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.infra.conftest import RedisServer, make_project, outbox_rows
from tests.workers.conftest import Worker, celery_app, make_request, wait_for

N_REQUESTS = 16
WORKER_START_S = 120.0
FINISH_S = 240.0


def _states(app, ids: list[str]) -> dict[str, str]:
    """Task id -> state; a result backend that is still reconnecting counts as UNKNOWN."""
    out = {}
    for task_id in ids:
        try:
            out[task_id] = app.AsyncResult(task_id).state
        except Exception:  # redis reconnecting: ask again at the next poll
            out[task_id] = "UNKNOWN"
    return out


def _records(home: Path) -> list[str]:
    results = home / "results"
    return sorted(p.name for p in results.iterdir()) if results.is_dir() else []


def test_redis_restart_during_a_burst_loses_nothing(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    redis_env = {"CELERY_BROKER_URL": private_redis.url + "/0",
                 "CELERY_RESULT_BACKEND": private_redis.url + "/1",
                 "CELERY_VISIBILITY_TIMEOUT": "10"}  # fmt: skip
    # every result needs review; Label Studio is down, so each lands in the outbox
    review = {"auto_queue": True, "confidence_threshold": 2.0}
    project = make_project(tmp_path / "project", {}, review, redis_env)
    requests = [make_request(project, 1, size=(240, 320), first=i + 1) for i in range(N_REQUESTS)]
    worker = Worker(project, project.env, "redis-restart")
    try:
        wait_for(lambda: " ready." in worker.log.read_text(), WORKER_START_S, "the worker")
        app = celery_app(project.env)
        sent = [app.send_task("dinoseg.segment", args=[r]) for r in requests]
        ids = [s.id for s in sent]
        wait_for(lambda: _records(project.home), 120, "the first result of the burst", 0.05)
        private_redis.kill()
        done_at_crash = len(_records(project.home))
        time.sleep(2.0)
        private_redis.start()

        def all_done() -> bool:
            states = _states(app, ids)
            assert "FAILURE" not in states.values(), worker.log.read_text()[-3000:]
            return all(s == "SUCCESS" for s in states.values())

        wait_for(all_done, FINISH_S, "every task of the burst after the Redis restart", 1.0)
        replies = [app.AsyncResult(i).result for i in ids]
        result_ids = [r["results"][0]["id"] for r in replies]
        wait_for(lambda: len(outbox_rows(project.home)) >= N_REQUESTS, 60,
                 "every result in the review outbox")  # fmt: skip
        outbox = outbox_rows(project.home)
    finally:
        worker.stop()
    submitted, completed = len(sent), sum(1 for r in replies if r and r["results"])
    print(f"redis restart: submitted {submitted}, done before the crash {done_at_crash}, "
          f"completed {completed}, stored {len(_records(project.home))}, "
          f"queued for review {len(outbox)}")  # fmt: skip
    assert done_at_crash < N_REQUESTS  # the crash really hit the middle of the burst
    assert submitted == completed == N_REQUESTS  # nothing lost
    assert len(set(result_ids)) == N_REQUESTS  # distinct queries, distinct results
    assert _records(project.home) == sorted(result_ids)  # stored once each, no temp folders
    assert sorted(r for _, r, _ in outbox) == sorted(result_ids)  # queued once each
    assert {state for _, _, state in outbox} == {"pending"}  # Label Studio is down


def test_a_result_stored_while_redis_is_down_lands_when_it_is_back(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    """The race the burst test can hit: a task finishes while the result backend is down.
    The worker's backend retries the store with backoff instead of failing the task."""
    import threading

    from workers.app import make_app

    app = make_app({"DINOSEG_HOME": str(tmp_path / "home"),
                    "CELERY_BROKER_URL": private_redis.url + "/0",
                    "CELERY_RESULT_BACKEND": private_redis.url + "/1"})  # fmt: skip
    backend = app.backend
    private_redis.kill()
    outcome: dict[str, object] = {}

    def store() -> None:
        try:
            backend.store_result("task-during-outage", {"ok": 1}, "SUCCESS")
            outcome["stored"] = True
        except Exception as e:  # what a task would turn into FAILURE
            outcome["error"] = repr(e)

    thread = threading.Thread(target=store)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive() and not outcome  # still retrying, not failed
    private_redis.start()
    thread.join(60)
    assert outcome == {"stored": True}
    meta = backend.get_task_meta("task-during-outage")
    assert (meta["status"], meta["result"]) == ("SUCCESS", {"ok": 1})
