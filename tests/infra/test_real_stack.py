"""The whole stack on real services by configuration alone, its faults and its security.

One ``dinoseg demo --mlflow --project DIR`` runs for this module with only environment
variables changed from the embedded defaults: RabbitMQ as broker, PostgreSQL as Celery result
backend and as MLflow's backend store (the stack starts ``mlflow server`` on loopback), Label
Studio (own virtualenv), one worker and the app with demo auth. A champion is registered
through ``mlops`` helpers, served by the worker, and kept when MLflow is killed. Tokens and
passwords are unique strings that must never appear in a log or on a command line.

The tests run in file order and share the stack (it starts once: about a minute here). The
``dinoseg`` queue of the machine's RabbitMQ is purged before the stack starts.
"""

from __future__ import annotations

import http.cookiejar
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.infra.conftest import (
    RABBITMQ_URL,
    make_project,
    pg_url,
    throwaway_database,
    tiny_checkpoint,
)
from tests.webapp.test_serve import _status, _upload
from tests.workers.conftest import REPO, Project, free_port, make_request, wait_for

STACK_START_S = 300.0
CHAMPION = "models:/dinoseg-segmenter@champion"
CHAMPION_V1 = "models:/dinoseg-segmenter/1"
LOOPBACK = {"127.0.0.1", "::1"}


@dataclass
class Stack:
    """The running ``dinoseg demo`` and what the tests need to reach and check it."""

    project: Project
    proc: subprocess.Popen[str]
    app_url: str
    mlflow_url: str
    broker: str
    results: str
    secrets: dict[str, str]
    demo_user: tuple[str, str]
    lines: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # ids of segment tasks sent
    seen_cmdlines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def backend(self) -> Any:
        from webapp.backends.celery import CeleryBackend, client_app

        return CeleryBackend(client_app(self.broker, self.results), timeout_s=180,
                             quick_timeout_s=30)  # fmt: skip

    def processes(self) -> list[psutil.Process]:
        """The stack and its process tree (services, their children, the reaper; the Label
        Studio server is a child of its ``serve`` service)."""
        stack = psutil.Process(self.proc.pid)
        return [stack, *stack.children(recursive=True)]


def _secret_env(project_root: Path, mlflow_db: str, celery_db: str) -> tuple[dict, dict]:
    found = {
        "ls_token": "lstok" + secrets.token_hex(12),
        "ls_password": "lspw" + secrets.token_hex(8),
        "demo_password": "demopw" + secrets.token_hex(8),
        "pg_password": "pgpw" + secrets.token_hex(8),  # trust auth: accepted, never checked
        "mlflow_token": "mltok" + secrets.token_hex(12),
    }
    env = {
        "CELERY_BROKER_URL": RABBITMQ_URL,
        "CELERY_RESULT_BACKEND": "db+" + pg_url(celery_db, password=found["pg_password"]),
        "MLFLOW_TRACKING_URI": pg_url(mlflow_db, password=found["pg_password"]),
        "MLFLOW_TRACKING_TOKEN": found["mlflow_token"],
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",
        "LABEL_STUDIO_USERNAME": "admin@dinoseg.test",
        "LABEL_STUDIO_PASSWORD": found["ls_password"],
        "LABEL_STUDIO_API_KEY": found["ls_token"],
        "DINOSEG_DEMO_AUTH": f"ann:{found['demo_password']}",
    }
    return env, found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: str,
          rabbitmq: str) -> Iterator[Stack]:  # fmt: skip
    from infra.labelstudio import VENV
    from infra.labelstudio import stop as stop_labelstudio
    from webapp.backends.celery import client_app

    if not (VENV / "bin" / "label-studio").is_file():
        pytest.fail(f"{VENV} is missing: run infra/labelstudio/install.sh (make test does)")
    root = tmp_path_factory.mktemp("stack") / "project"
    with throwaway_database("dinoseg_mlflow") as mlflow_db, \
            throwaway_database("dinoseg_celery") as celery_db:  # fmt: skip
        env, found = _secret_env(root, mlflow_db, celery_db)
        project = make_project(root, {"model": CHAMPION, "model_check_seconds": 2},
                               {"auto_queue": True, "confidence_threshold": 2.0}, env)  # fmt: skip
        client_app(RABBITMQ_URL, env["CELERY_RESULT_BACKEND"]).control.purge()  # stale messages
        port, mlflow_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "dinoseg", "demo", "--port", str(port), "--mlflow",
               "--mlflow-port", str(mlflow_port), "--project", str(root)]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=REPO, env=project.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        s = Stack(project, proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mlflow_port}",
                  RABBITMQ_URL, env["CELERY_RESULT_BACKEND"], found,
                  ("ann", found["demo_password"]))  # fmt: skip
        threading.Thread(target=s.read, daemon=True).start()
        try:
            _wait_up(s)
            yield s
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    proc.kill()
            stop_labelstudio(project.env)


def _wait_up(s: Stack) -> None:
    from infra.labelstudio import healthy

    deadline = time.monotonic() + STACK_START_S
    ls_url = s.project.env["LABEL_STUDIO_URL"]
    while not (s.said("Press Ctrl-C to stop.") and healthy(ls_url)):
        if s.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the stack did not come up:\n" + "\n".join(s.lines[-40:]))
        time.sleep(1.0)


def test_services_bind_loopback_only(stack: Stack) -> None:
    """App, MLflow and Label Studio listen on loopback only; the worker listens nowhere."""
    listening: dict[int, str] = {}
    for p in stack.processes():
        try:
            stack.seen_cmdlines.append(" ".join(p.cmdline()))
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    listening[c.laddr.port] = c.laddr.ip
        except psutil.NoSuchProcess:
            continue
    ports = {int(u.rsplit(":", 1)[1]) for u in (stack.app_url, stack.mlflow_url,
                                                stack.project.env["LABEL_STUDIO_URL"])}  # fmt: skip
    assert ports <= set(listening), f"expected {ports} among the listening ports {listening}"
    beyond = {port: ip for port, ip in listening.items() if ip not in LOOPBACK}
    assert not beyond, f"listening beyond loopback: {beyond}"
    for value in stack.secrets.values():  # secrets travel in the environment, never in argv
        assert not any(value in c for c in stack.seen_cmdlines), "a secret on a command line"


def test_demo_refuses_without_credentials_and_limits_uploads(stack: Stack) -> None:
    base = stack.app_url
    assert _status(base + "/config") == 401
    user, password = stack.demo_user
    wrong = urllib.parse.urlencode({"username": user, "password": "nope"}).encode()
    assert _status(base + "/login", wrong) == 400
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = urllib.parse.urlencode({"username": user, "password": password}).encode()
    assert opener.open(base + "/login", login, timeout=30).status == 200
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    port = int(base.rsplit(":", 1)[1])
    assert _upload(port, 1024, cookie) == 200
    assert _upload(port, 26 * 1024 * 1024, cookie) in (413, None)  # over the 25 MB limit


@pytest.fixture(scope="module")
def champion(stack: Stack) -> str:
    """A tiny checkpoint registered as ``dinoseg-segmenter@champion`` through mlops helpers,
    on the stack's MLflow server (backend store: PostgreSQL)."""
    from mlops import registry, tracking
    from mlops.register import new_version

    ckpt = tiny_checkpoint(stack.project.root / "champion-ckpt", stack.project.root / "tiny-dinov2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
        mp.setenv("DINOSEG_PIPELINE_RUN", "infra-test")
        mp.setenv("DINOSEG_CACHE", str(stack.project.root / "test-cache"))
        mp.chdir(stack.project.root)
        with tracking.stage_run("register", {"source": "tests/infra"}) as run:
            run.log_artifacts(ckpt, "model")
            mv = new_version(run.client, registry.MODEL_NAME, run, {"val_miou": 1.0})
            run.client.set_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION,
                                                  mv.version)  # fmt: skip
        from dinoseg.predictor import load_predictor

        assert load_predictor(CHAMPION).model_id == CHAMPION_V1
    return CHAMPION_V1


def test_champion_lives_in_postgres_and_resolves(stack: Stack, champion: str) -> None:
    import psycopg2

    url = stack.project.env["MLFLOW_TRACKING_URI"]
    db = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=db,
                            connect_timeout=5)  # fmt: skip
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name, alias, version FROM registered_model_aliases ORDER BY alias")
            assert cur.fetchall() == [("dinoseg-segmenter", "challenger", 1),
                                      ("dinoseg-segmenter", "champion", 1)]  # fmt: skip
    finally:
        conn.close()
    assert champion == CHAMPION_V1


def _segment(stack: Stack, n: int, first: int) -> list[dict]:
    backend = stack.backend()
    replies = []
    for i in range(n):
        request = make_request(stack.project, 1, first=first + i)
        replies.append(backend.segment(request))
        stack.submitted.append(request["queries"][0])
    return replies


def _review_counts(stack: Stack, expected: int) -> dict:
    backend = stack.backend()
    return wait_for(lambda: (lambda s: s if s["review_queue_depth"] >= expected else None)(
        backend.status()), 120, f"{expected} review tasks in Label Studio", 2.0)  # fmt: skip


def test_worker_on_rabbitmq_serves_the_champion(stack: Stack, champion: str) -> None:
    from webapp.backends import BackendError

    replies = _segment(stack, 3, first=1)
    assert [r["model_version"] for r in replies] == [champion] * 3
    assert all(r["notice"] is None for r in replies)
    assert all(Path(r["results"][0]["mask"]).is_file() for r in replies)
    with pytest.raises(BackendError, match="outside the uploads folder"):
        stack.backend().segment(dict(make_request(stack.project, 1), queries=["/etc/passwd"]))
    status = _review_counts(stack, 3)
    assert (status["review_queue_depth"], status["outbox_depth"]) == (3, 0)


def test_mlflow_down_worker_keeps_the_last_good_model(stack: Stack, champion: str) -> None:
    import json

    from infra.supervisor import http_ok

    services = json.loads((stack.project.home / "stack.json").read_text())["services"]
    mlflow_pid = next(s["pid"] for s in services if s["name"] == "mlflow")
    os.killpg(mlflow_pid, signal.SIGKILL)
    wait_for(lambda: not http_ok(stack.mlflow_url + "/health"), 30, "MLflow to be down")
    wait_for(lambda: stack.said("warning: mlflow exited"), 30, "the stack to notice")
    time.sleep(2.5)  # past workers.model_check_seconds: the next request re-resolves
    replies = _segment(stack, 3, first=11)
    assert [r["model_version"] for r in replies] == [champion] * 3
    assert "serving the last good model" in (replies[0]["notice"] or "")
    assert http_ok(stack.app_url + "/")  # the stack is still up
    status = subprocess.run([sys.executable, "-m", "infra.stack", "status"], cwd=REPO,
                            env=stack.project.env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "mlflow" in status.stdout and "DOWN" in status.stdout
    assert "app" in status.stdout and status.stdout.count(" up ") >= 2
    # the count: submitted == completed == queued for review, nothing twice
    counts = _review_counts(stack, 6)
    stored = sorted(p.name for p in (stack.project.home / "results").iterdir())
    print(f"mlflow down: submitted {len(stack.submitted)}, stored {len(stored)}, "
          f"queued for review {counts['review_queue_depth']}, outbox {counts['outbox_depth']}")
    assert len(stack.submitted) == len(set(stack.submitted)) == len(stored) == 6
    assert (counts["review_queue_depth"], counts["outbox_depth"]) == (6, 0)


def test_stopping_leaves_no_process_and_no_secret_in_logs(stack: Stack) -> None:
    from infra.labelstudio import healthy

    procs = stack.processes()
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(90) == 0
    _, alive = psutil.wait_procs(procs[1:], timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    assert not healthy(stack.project.env["LABEL_STUDIO_URL"])
    assert not (stack.project.home / "labelstudio-credentials.json").exists()  # env was used
    texts = {"stack output": "\n".join(stack.lines)}
    for path in [*(stack.project.home / "logs").rglob("*"), stack.project.home / "stack.json"]:
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    assert len(texts) >= 7  # app, worker, mlflow, labelstudio, reaper, stack.json, output
    for name, value in stack.secrets.items():
        leaks = [where for where, text in texts.items() if value in text]
        assert not leaks, f"{name} appears in {leaks}"
    assert stack.said("MLflow ") and "***" in "\n".join(stack.lines)  # store shown redacted
