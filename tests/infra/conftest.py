"""Real services for the infra tests: PostgreSQL, RabbitMQ, a private redis-server, MLflow.

The machine's services run on loopback (Redis 6379, PostgreSQL 5432 with trust auth for user
``postgres``, RabbitMQ 5672 guest/guest); a missing one fails the test with a message. Tests
never restart a shared service: databases are throwaway ones dropped afterwards, and the Redis
that is restarted is a private ``redis-server`` on a free port. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import tiny_dinov2
from tests.workers.conftest import REPO, Project, free_port

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2.0)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def postgres() -> str:
    """The machine's PostgreSQL (fails with a message when it does not answer)."""
    import psycopg2

    if not _listening(PG_HOST, PG_PORT):
        pytest.fail(f"PostgreSQL is not listening on {PG_HOST}:{PG_PORT}; start postgresql")
    try:
        psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                         connect_timeout=5).close()  # fmt: skip
    except psycopg2.Error as e:
        pytest.fail(f"PostgreSQL on {PG_HOST}:{PG_PORT} refuses user {PG_USER} ({e})")
    return f"{PG_HOST}:{PG_PORT}"


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    """The machine's RabbitMQ broker URL (fails with a message when it does not answer)."""
    import kombu

    conn = kombu.Connection(RABBITMQ_URL, connect_timeout=5)
    try:
        conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as e:
        pytest.fail(f"RabbitMQ is not answering at {RABBITMQ_URL} ({e}); start rabbitmq-server")
    finally:
        conn.release()
    return RABBITMQ_URL


def _pg_admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                            connect_timeout=5)  # fmt: skip
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its name), dropped afterwards even with open connections."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(database: str, scheme: str = "postgresql+psycopg2", password: str = "") -> str:
    """SQLAlchemy URL of a database on the machine's PostgreSQL (trust auth ignores passwords)."""
    auth = f"{PG_USER}:{password}" if password else PG_USER
    return f"{scheme}://{auth}@{PG_HOST}:{PG_PORT}/{database}"


class RedisServer:
    """A private ``redis-server`` on a free loopback port, its data (AOF, fsync always) in
    ``folder``: killing and restarting it loses nothing it acknowledged."""

    def __init__(self, folder: Path):
        if not Path(REDIS_SERVER).is_file():
            pytest.fail("redis-server is missing (Debian package redis-server)")
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
               "--save", "", "--daemonize", "no", "--protected-mode", "yes",
               "--logfile", str(self.folder / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"private redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.1)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL (a crash, not a clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def make_project(root: Path, workers: dict[str, Any], review: dict[str, Any],
                 env: dict[str, str] | None = None) -> Project:  # fmt: skip
    """A project folder (params.yaml, a tiny DINOv2, a 2-class classes.json) and its env."""
    root.mkdir(parents=True, exist_ok=True)
    backbone = root / "tiny-dinov2"
    if not backbone.is_dir():
        tiny_dinov2().save_pretrained(backbone)
    base = root / "base"
    base.mkdir(exist_ok=True)
    (base / "classes.json").write_text(
        json.dumps({"classes": {"0": "road", "1": "car"}, "ignore_index": 255})
    )
    params = {
        "serving": {"model": "prototype", "backbone": str(backbone), "image_size": 112, **workers},
        "review": {"classes_from": str(base), "labels_dir": str(root / "data" / "labels"),
                   "auto_queue": False, "sync_seconds": 3600, "outbox_seconds": 3600, **review},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    full = {
        **os.environ,
        "DINOSEG_HOME": str(root / "var"),
        "DINOSEG_CACHE": str(root / "cache"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "LABEL_STUDIO_API_KEY": "infra-test-token-" + secrets.token_hex(8),
    }
    for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "MLFLOW_TRACKING_URI",
                "DINOSEG_DEMO_AUTH", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USERNAME"):
        full.pop(key, None)  # fmt: skip
    full.update(env or {})
    return Project(root, full)


def tiny_checkpoint(path: Path, backbone: Path) -> Path:
    """A tiny FS-DINO checkpoint directory on the tiny DINOv2 at ``backbone``."""
    from dinoseg.checkpoint import CheckpointConfig, arch_config, save_checkpoint
    from dinoseg.models import build_segmenter

    model = build_segmenter("fsdino-tiny", num_layers=2)
    config = CheckpointConfig(arch="fsdino-tiny", backbone=str(backbone), layers=[1, 2],
                              image_size=112, arch_kwargs=arch_config(model))  # fmt: skip
    return save_checkpoint(path, model, config, card="# tiny test champion\n")


def outbox_rows(home: Path) -> list[tuple[str, str, str]]:
    """(key, result id, state) of every review item in a home's outbox."""
    import sqlite3

    path = home / "outbox.sqlite"
    if not path.is_file():
        return []
    with sqlite3.connect(path, timeout=30) as db:
        rows = db.execute("SELECT key, result_id, state FROM items").fetchall()
    return [(str(k), str(r), str(s)) for k, r, s in rows]
