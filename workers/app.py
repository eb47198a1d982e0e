"""The Celery application, configured from the environment through :mod:`dinoseg.runtime`.

Default: no server needed — kombu's SQLAlchemy transport over SQLite for the broker and a
SQLite result backend, both in ``runtime.home()/celery``. At scale: ``CELERY_BROKER_URL=redis://…``
(and ``CELERY_RESULT_BACKEND``). ``CELERY_VISIBILITY_TIMEOUT`` (seconds, Redis/SQS only, default
3600) is how long an unacknowledged task waits before the broker hands it to another worker
when its worker died.

Delivery: JSON only; ``acks_late`` + ``reject_on_worker_lost`` (a task whose worker process dies
goes back to the queue), prefetch 1; time limits per task (see :mod:`workers.tasks`).

Start a worker in the project root (it reads ``params.yaml`` and runs ``dvc repro`` there)::

    OMP_NUM_THREADS=1 celery -A workers.app worker --concurrency 2 --loglevel INFO
    celery -A workers.app beat          # periodic annotation sync + outbox delivery
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue

from dinoseg import runtime
from workers.broker import consumer_settings

QUEUE = "dinoseg"
RETRAIN_QUEUE = "dinoseg.retrain"


def _sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqla+sqlite:///`` / ``db+sqlite:///`` URL, else None."""
    for prefix in ("sqla+sqlite:///", "db+sqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return Path(url[len(prefix) :])
    return None


def _transport_options(broker: str, env: Mapping[str, str]) -> dict[str, Any]:
    if _sqlite_file(broker) is not None:  # connect_args: passed to sqlalchemy.create_engine
        # not "polling_interval": kombu's SQLAlchemy transport hands every other option to
        # create_engine, which refuses it (the worker did not start)
        return {"connect_args": {"timeout": 30}}
    return {"visibility_timeout": int(env.get("CELERY_VISIBILITY_TIMEOUT") or 3600)}


def celery_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Celery settings for an environment (pure: reads nothing but ``env``)."""
    env = os.environ if env is None else env
    broker, backend = runtime.broker_url(env), runtime.result_backend(env)
    return {
        **consumer_settings(broker),
        "result_backend": backend,
        "broker_transport_options": _transport_options(broker, env),
        "broker_connection_retry_on_startup": True,
        # SQLite waits on a locked file instead of failing (a sqlite-only option: PostgreSQL
        # result backends, db+postgresql+psycopg2://, would refuse it)
        "database_engine_options": (
            {"connect_args": {"timeout": 30}} if _sqlite_file(backend) is not None else {}
        ),
        "database_short_lived_sessions": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "result_extended": True,
        # a result backend outage while a finished task stores its result (Redis restarting,
        # PostgreSQL failing over) must not turn the task into FAILURE: retry the store with
        # backoff, 0.1 s doubling to 5 s, for about two minutes
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_base_sleep_between_retries_ms": 100,
        "result_backend_max_sleep_between_retries_ms": 5000,
        "result_expires": timedelta(days=7),
        "task_default_queue": QUEUE,
        "task_queues": (Queue(QUEUE), Queue(RETRAIN_QUEUE)),  # a plain worker consumes both
        "task_routes": {"dinoseg.retrain": {"queue": RETRAIN_QUEUE}},
        "task_time_limit": 600,
        "task_soft_time_limit": 540,
        "worker_hijack_root_logger": False,
        "beat_schedule_filename": str(runtime.home(env) / "celery" / "beat-schedule"),
    }


def beat_schedule(sync_seconds: float, outbox_seconds: float) -> dict[str, Any]:
    """Periodic annotation pulls (segment reviews, aerial tiles) and outbox delivery (``celery
    -A workers.app beat``)."""
    return {
        "sync-annotations": {"task": "dinoseg.sync_annotations", "schedule": sync_seconds},
        "sync-aerial-annotations": {"task": "dinoseg.sync_aerial_annotations",
                                    "schedule": sync_seconds},
        "flush-outbox": {"task": "dinoseg.flush_outbox", "schedule": outbox_seconds},
    }


def make_app(env: Mapping[str, str] | None = None) -> Celery:
    """A Celery app for ``env`` (default ``os.environ``); tasks from :mod:`workers.tasks`."""
    app = Celery("dinoseg", include=["workers.tasks"])
    app.config_from_object(celery_config(env))  # lazy: read when the config is first used

    @app.on_after_configure.connect(weak=False)
    def _prepare(sender: Celery, **_: Any) -> None:  # first use of the config, not import
        from serving.config import review_config

        for url in (sender.conf.broker_url, str(sender.conf.result_backend)):
            db = _sqlite_file(url)
            if db is not None:
                runtime.ensure(db.parent)
        review = review_config()
        sender.conf.beat_schedule = beat_schedule(review.sync_seconds, review.outbox_seconds)

    return app


app = make_app()
