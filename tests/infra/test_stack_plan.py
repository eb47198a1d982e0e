"""The stack's options without starting services: an MLflow server on loopback, several worker
processes, another project folder, passwords kept out of argv and messages, the status file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from infra.stack import StackConfig, banner, plan, stack_env
from infra.supervisor import ROOT, Service, StackError, Supervisor, health_report, redact

PG = "postgresql+psycopg2://dinoseg:s3cret-pw@db.internal:5432/mlflow"


def test_mlflow_server_binds_loopback_and_gets_its_store_from_the_environment(tmp_path):
    env = {"DINOSEG_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": PG}
    services = plan(StackConfig(mlflow=True, mlflow_port=5123, labelstudio=False), env)
    assert [s.name for s in services] == ["mlflow", "worker", "app"]
    ml = services[0]
    assert ml.argv[ml.argv.index("--host") + 1] == "127.0.0.1"
    assert ml.argv[ml.argv.index("--port") + 1] == "5123"
    assert not any("s3cret" in a for a in ml.argv)  # the password stays out of `ps`
    assert ml.env["MLFLOW_BACKEND_STORE_URI"] == PG
    assert ml.env["MLFLOW_ARTIFACTS_DESTINATION"] == str(tmp_path / "mlartifacts")
    assert ml.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert ml.health_url == "http://127.0.0.1:5123/health" and not ml.required
    default = plan(StackConfig(mlflow=True, labelstudio=False), {"DINOSEG_HOME": str(tmp_path)})
    assert default[0].env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(StackError, match="is a server already"):
        plan(StackConfig(mlflow=True), {**env, "MLFLOW_TRACKING_URI": "http://u:pw@h:5000"})


def test_several_worker_processes_share_one_beat(tmp_path):
    env = {"DINOSEG_HOME": str(tmp_path)}
    services = plan(StackConfig(nodes=3, workers=2, labelstudio=True), env)
    workers = [s for s in services if s.name.startswith("worker")]
    assert [s.name for s in workers] == ["worker-1", "worker-2", "worker-3"]
    hosts = [s.argv[s.argv.index("--hostname") + 1] for s in workers]
    assert len(set(hosts)) == 3
    assert ["-B" in s.argv for s in workers] == [True, False, False]
    assert all(s.argv[s.argv.index("--concurrency") + 1] == "2" for s in workers)


def test_another_project_folder_keeps_the_checkout_importable(tmp_path):
    env = stack_env(StackConfig(project=tmp_path), {"DINOSEG_HOME": "rel", "PYTHONPATH": "/x",
                                                     "LABEL_STUDIO_API_KEY": "k" * 20,
                                                     "LABEL_STUDIO_PASSWORD": "p"})  # fmt: skip
    assert env["PYTHONPATH"] == f"{ROOT}{os.pathsep}/x"
    assert Path(env["DINOSEG_HOME"]).is_absolute()
    same = stack_env(StackConfig(), {"DINOSEG_HOME": str(tmp_path), "LABEL_STUDIO_API_KEY": "k",
                                     "LABEL_STUDIO_PASSWORD": "p"})  # fmt: skip
    assert "PYTHONPATH" not in same


def test_passwords_are_redacted_in_the_banner(tmp_path):
    assert redact(PG) == "postgresql+psycopg2://dinoseg:***@db.internal:5432/mlflow"
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("sqla+sqlite:////a/b.sqlite") == "sqla+sqlite:////a/b.sqlite"
    env = {"DINOSEG_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": PG,
           "CELERY_BROKER_URL": "amqp://dinoseg:rabbit-pw@mq:5672//"}  # fmt: skip
    cfg = StackConfig(mlflow=True, labelstudio=False)
    text = banner(Supervisor(plan(cfg, env), env, lambda s: None), cfg, env)
    assert "s3cret" not in text and "rabbit-pw" not in text
    assert "dinoseg:***@db.internal" in text and "amqp://dinoseg:***@mq" in text


def test_status_file_and_health_report(tmp_path):
    py = sys.executable
    services = [Service("worker", [py, "-c", "import time; time.sleep(60)"]),
                Service("gone", [py, "-c", "pass"], required=False)]  # fmt: skip
    sup = Supervisor(services, {**os.environ, "DINOSEG_HOME": str(tmp_path)}, lambda s: None)
    path = tmp_path / "stack.json"
    assert not health_report(path).ok and "is `dinoseg demo` running" in health_report(path).text
    sup.start()
    try:
        sup.procs["gone"].wait(30)
        sup.poll()  # notices that "gone" exited (not required: a warning only)
        sup.write_status(path)
        data = json.loads(path.read_text())
        assert {s["name"]: s["state"] for s in data["services"]} == {"worker": "ready",
                                                                     "gone": "exited"}
        report = health_report(path)
        assert not report.ok
        assert "worker       up" in report.text and "gone         DOWN" in report.text
    finally:
        sup.stop()
    sup.write_status(path, running=False)
    assert "is not running" in health_report(path).text


def test_ready_needs_both_the_ready_line_and_the_health_url(tmp_path):
    import http.server
    import threading
    import time

    from tests.workers.conftest import free_port

    port, go = free_port(), tmp_path / "go"
    code = (f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
            "print('is up', flush=True); time.sleep(60)")  # fmt: skip
    svc = Service("ls", [sys.executable, "-c", code], health_url=f"http://127.0.0.1:{port}/",
                  ready_line="is up")  # fmt: skip
    sup = Supervisor([svc], {**os.environ, "DINOSEG_HOME": str(tmp_path)}, lambda s: None)
    server = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sup.start()
    try:
        assert not sup.is_ready(svc)  # the URL answers, the line is not there yet
        go.touch()
        deadline = time.monotonic() + 30
        while "is up" not in sup.tail("ls") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sup.is_ready(svc)
        server.shutdown()
        server.server_close()
        assert not sup.is_ready(svc)  # the line is there, the URL does not answer
    finally:
        sup.stop()


def test_the_ml_backend_comes_with_label_studio_on_loopback(tmp_path):
    env = {"DINOSEG_HOME": str(tmp_path), "DINOSEG_ML_BACKEND_URL": "http://127.0.0.1:9311"}
    services = plan(StackConfig(labelstudio=True), env)
    assert [s.name for s in services] == ["labelstudio", "mlbackend", "worker", "app"]
    backend = services[1]
    assert backend.argv[backend.argv.index("--host") + 1] == "127.0.0.1"
    assert backend.argv[backend.argv.index("--port") + 1] == "9311"
    assert backend.health_url == "http://127.0.0.1:9311/health" and not backend.required
    assert backend.env["DINOSEG_ML_BACKEND_URL"] == "http://127.0.0.1:9311"
    default = plan(StackConfig(labelstudio=True), {"DINOSEG_HOME": str(tmp_path)})
    assert default[1].url == "http://127.0.0.1:9090"
    assert "mlbackend" not in [s.name for s in plan(StackConfig(labelstudio=False), env)]
    off = plan(StackConfig(labelstudio=True, ml_backend=False), env)
    assert [s.name for s in off] == ["labelstudio", "worker", "app"]
    text = banner(Supervisor(services, env, lambda s: None), StackConfig(labelstudio=True), env)
    (line,) = [x for x in text.splitlines() if x.strip().startswith("ML backend")]
    assert "http://127.0.0.1:9311" in line


def test_a_process_is_described_by_its_program_and_script_names_however_deep_its_path(tmp_path):
    """The message that names a port's holder shows ``python3 label-studio start``, not a
    virtualenv path cut off before the program's name (a CI checkout lives deeper)."""
    import subprocess

    from infra.procs import describe

    script = tmp_path.joinpath(*["deep-folder"] * 12, "label-studio")
    script.parent.mkdir(parents=True)
    script.write_text("import sys, time\nprint('up', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, str(script), "start", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        line = describe(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)
    name = Path(sys.executable).name
    assert line.startswith(f"pid {proc.pid} ({name} label-studio start --data-dir "), line
    assert len(line) <= len(f"pid {proc.pid} ()") + 100 and describe(None).startswith("a process")


def test_every_service_gets_sleeping_openmp_threads_unless_told_otherwise(tmp_path):
    """``OMP_WAIT_POLICY=PASSIVE`` reaches a real child the supervisor starts with the worker's
    own environment; a value the user set is kept."""
    import time

    base = {"DINOSEG_HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    env = stack_env(StackConfig(labelstudio=False), base)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert stack_env(StackConfig(), {**base, "OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] \
        == "ACTIVE"
    worker = next(s for s in plan(StackConfig(labelstudio=False), env) if s.name == "worker")
    probe = ("import os, time; print('omp', os.environ['OMP_WAIT_POLICY'], "
             "os.environ['OMP_NUM_THREADS'], flush=True); time.sleep(60)")  # fmt: skip
    svc = Service("worker", [sys.executable, "-c", probe], env=worker.env, ready_line="omp")
    sup = Supervisor([svc], env, lambda s: None)
    sup.start()
    try:
        deadline = time.monotonic() + 30
        while "omp" not in sup.tail("worker") and time.monotonic() < deadline:
            time.sleep(0.1)
        words = sup.tail("worker").split()
    finally:
        sup.stop()
    assert words[words.index("omp") + 1] == "PASSIVE" and int(words[words.index("omp") + 2]) >= 1
